"""``python -m monolith_layers``: the same CLI as ``monolith-layers``."""

from .cli import entry

entry()
