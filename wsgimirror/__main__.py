"""``python -m wsgimirror``: the same as the ``wsgimirror`` command."""

import sys

from .commands.cli import main

sys.exit(main())
