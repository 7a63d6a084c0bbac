"""``python -m retnet``."""

import sys

from retnet.cli.__main__ import main

sys.exit(main())
