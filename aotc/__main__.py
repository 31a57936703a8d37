"""`python -m aotc ...`: the aotc command line, for environments where the `aotc` script is not on PATH
(e.g. a venv that is not activated)."""

import sys

from aotc.cli import main

sys.exit(main())
