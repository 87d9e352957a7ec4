"""``python -m stream`` is the ``streamcl`` command."""

import sys

from stream.cli import main

sys.exit(main())
