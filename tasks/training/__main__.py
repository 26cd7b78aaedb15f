"""``python -m ttc.tasks.training NAME OUT_DIR [minutes]``: train a built-in recipe."""

import sys

from .loop import main

sys.exit(main())
