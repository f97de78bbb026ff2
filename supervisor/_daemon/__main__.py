"""``python -m supervisor._daemon``: the ``supd`` command, from an interpreter whose scripts are not on PATH."""

import sys

from supervisor._daemon.early_signals import main

sys.exit(main())
