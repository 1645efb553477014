"""``python -m monolith_layers``: the same CLI as ``monolith-layers``."""

import sys

from .cli import main

sys.exit(main())
