"""``python -m wsgimirror``: the same as the ``wsgimirror`` command."""

import sys

from .cli import main

sys.exit(main())
