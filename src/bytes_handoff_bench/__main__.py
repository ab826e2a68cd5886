"""``python -m bytes_handoff_bench``."""

import sys

from .harness.cli import main

sys.exit(main())
