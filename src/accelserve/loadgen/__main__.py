"""``python -m accelserve.loadgen`` runs the same command as ``accelserve bench``."""

import sys

from accelserve.loadgen.cli import main

sys.exit(main())
