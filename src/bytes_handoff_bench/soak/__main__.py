"""``python -m bytes_handoff_bench.soak``: the fault soak (``bench/run-fault-soak.sh``)."""

import sys

from .cli import main

sys.exit(main())
