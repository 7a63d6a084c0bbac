"""``python -m retnet``."""

import sys

from retnet.cli.__main__ import main

if __name__ == "__main__":  # not when a spawned worker process imports the parent's main module
    sys.exit(main())
