"""``python -m stream`` is the ``streamcl`` command."""

import os
import sys

if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # a torchrun worker: before the imports
    from stream import early_stop

    early_stop.install()

from stream.cli.main import main

sys.exit(main())
