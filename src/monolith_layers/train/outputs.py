"""Where a command writes, checked before it does any work.

A path under a file, an existing file where a folder is wanted (or the
other way round), a folder that cannot be written, or a folder that already
holds a run: each is one :class:`OutputError` naming the path, raised before
any data is read or any model is trained, never a traceback after an epoch.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .report import REPORT_FILES
from .trainer import CONFIG_FILE, STATE_FILE, WEIGHTS_FILE

# What a train run leaves in its folder ("last.safetensors": older versions' resume point).
RUN_FILES = (WEIGHTS_FILE, CONFIG_FILE, STATE_FILE, "last.safetensors", *REPORT_FILES)
# The files whose presence means a folder holds a run.
RUN_MARKERS = (WEIGHTS_FILE, STATE_FILE, "metrics.json")


class OutputError(ValueError):
    """An output path that cannot be used as asked."""


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_folder(path: str | Path, flag: str = "--out") -> Path:
    """``path`` is a folder, or can be made one, and a file can be written in it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path}: is a file; give a folder")
    _check_can_create(path, flag, path)
    return path


def check_file(path: str | Path, overwrite: bool, flag: str = "--out") -> Path:
    """``path`` can be written as a file: not a folder, its folder usable, and
    absent unless ``overwrite``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{flag} {path}: exists; add --overwrite to replace it")
    _check_can_create(path.parent, flag, path)
    return path


def _check_can_create(folder: Path, flag: str, given: Path) -> None:
    """``folder`` exists or can be made (no file on the way) and can be written in."""
    anchor = _nearest_existing(folder.absolute())
    if not anchor.is_dir():
        raise OutputError(f"{flag} {given}: {anchor} is a file, not a folder")
    try:
        # A real write, not os.access: that says yes to root on a read-only mount.
        with tempfile.TemporaryFile(dir=anchor):
            pass
    except OSError as err:
        raise OutputError(f"{flag} {given}: cannot write in {anchor} ({err.strerror})") from None


def holds_run(folder: str | Path, markers: Iterable[str] = RUN_MARKERS) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any((folder / name).exists() for name in markers)


def clear_run(folder: str | Path, files: Iterable[str] = RUN_FILES) -> None:
    """Remove what an earlier run left (only those files and folders, nothing else)."""
    folder = Path(folder)
    for name in files:
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
