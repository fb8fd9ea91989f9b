"""``python -m finexl.cli``: the same as the ``finexl`` command."""

import sys

from finexl.cli import main

sys.exit(main())
