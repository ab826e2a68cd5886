"""``python -m bytes_handoff.bench``."""

import sys

from .cli import main

sys.exit(main())
