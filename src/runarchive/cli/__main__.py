"""``python -m runarchive.cli``."""

import sys

from runarchive.cli.main import main

sys.exit(main())
