"""`python -m lib_dumpunet …` runs the `dumpunet` command."""

from __future__ import annotations

import sys

from lib_dumpunet.cli import main

if __name__ == "__main__":
    sys.exit(main())
