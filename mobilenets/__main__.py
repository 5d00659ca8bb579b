"""``python -m mobilenets COMMAND`` (``predict``, ``list``, ``convert``, ``--version``); see ``mobilenets.cli``."""

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
