"""Process-wide on/off settings (the fast paths, the native kernels)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

_OFF = ("0", "false", "no", "off")


class ProcessSwitch:
    """A setting for the whole process, on unless ``env_var`` says 0 / false / no / off.

    ``name`` is the public function that sets it, for error messages.
    """

    def __init__(self, name: str, env_var: str):
        self.name = name
        self.enabled = os.environ.get(env_var, "1").strip().lower() not in _OFF

    def set(self, enabled: bool) -> bool:
        """Switch on or off; returns the old setting."""
        if not isinstance(enabled, bool):
            raise TypeError(f"{self.name}: enabled must be a bool, got {enabled!r}")
        previous, self.enabled = self.enabled, enabled
        return previous

    @contextlib.contextmanager
    def scoped(self, enabled: bool) -> Iterator[None]:
        """The setting ``enabled`` for the block, the old one after it."""
        previous = self.set(enabled)
        try:
            yield
        finally:
            self.set(previous)
