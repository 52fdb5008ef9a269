"""``python -m accelserve.tools.bench`` runs the same command as ``accelserve bench``."""

import sys

from accelserve.tools.bench.cli import main

sys.exit(main())
