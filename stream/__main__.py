"""``python -m stream`` is the ``streamcl`` command."""

import sys

from stream.cli.main import main

sys.exit(main())
