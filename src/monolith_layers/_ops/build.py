"""Building and loading the C++ kernels behind the operators.

``csrc/recurrences.cpp`` runs the recurrences' time loops (a step's matmuls
plus one pass over its elementwise work) without a Python round trip per
tensor op; ``csrc/din.cpp`` runs DIN's tower and pooling, and
``csrc/interactions.cpp`` AutoInt's rounds and the whole of SeNet, a batch
row (or a block of rows) at a time in cache. They are compiled once per
environment with :func:`torch.utils.cpp_extension.load` (a C++ compiler and
ninja are needed; 53 s cold on a 2-core machine: only ``module.cpp``
includes ``torch/extension.h``) into torch's extension cache, tuned for the
CPU it runs on: on first use, or ahead of time with :func:`build_native`
(``monolith-layers build-kernels``). Where they cannot be built, the layers
run the same computations as tensor ops: equal to float rounding.

``MONOLITH_LAYERS_FUSED=0`` (or :func:`~monolith_layers.set_fused`) keeps to
the tensor ops and never builds.

The cache: one folder per (sources, flags, torch installation, CPU model and
flags, Python version) under ``TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions/<python and torch tag>``); :func:`build_location`
names it. A change to any of those keys builds a new folder; an unchanged key
loads the ``.so`` already there, with no compiler needed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

from .switch import ENV_VAR, switch_on

SOURCES = Path(__file__).with_name("csrc")
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
if platform.machine().lower() in ("x86_64", "amd64"):
    # GCC's loops default to 256-bit vectors on CPUs with 512-bit ones; the
    # kernels' short rows (a vector of 16 floats per field) want whole
    # 512-bit vectors: AutoInt's forward was 1.25x faster with them.
    FLAGS.insert(2, "-mprefer-vector-width=512")
ACTIVATIONS = {"tanh": 0, "sigmoid": 1, "relu": 2, "linear": 3}
MODES = {"none": 0, "AGRU": 1, "AUGRU": 2}

_log = logging.getLogger(__name__)
_module: ModuleType | None = None
_failed = False
_LOCK = threading.Lock()


def _cpu_name() -> str:
    """The CPU's model and instruction-set flags: -march=native code built for one
    CPU must not be loaded on another that shares the cache (a virtual machine's
    model name alone can hide a missing AVX-512)."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags") and key not in found:
                    found[key] = line.strip()
    except OSError:
        pass
    return "\n".join(found.values()) or platform.processor()


def _sources() -> dict[str, str]:
    """The kernels' source files (C++ and headers) by name."""
    return {
        path.name: path.read_text()
        for path in sorted(SOURCES.iterdir())
        if path.suffix in (".cpp", ".h")
    }


def _build_name() -> str:
    key = "\n".join(
        [
            *(f"{name}\n{text}" for name, text in _sources().items()),
            torch.__version__,
            # The build commands name torch's headers: another installation (another
            # virtualenv) gets its own build rather than rebuilding this one's.
            str(Path(torch.__file__).parent),
            " ".join(FLAGS),
            _cpu_name(),
            platform.python_version(),
        ]
    )
    return "monolith_layers_native_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _source_copies(folder: Path) -> list[Path]:
    """The C++ sources, copied (with their headers) into the build folder:
    ninja's build file names the sources' paths, so compiling each checkout's
    own copy would rebuild (about a minute) whenever another checkout or
    virtualenv had used the cache last. Returns the copies of the .cpp files."""
    copies = folder / "src"
    copies.mkdir(exist_ok=True)
    for name, text in _sources().items():
        copy = copies / name
        if not copy.exists():
            partial = copies / f"{name}.{os.getpid()}"
            partial.write_text(text)
            os.replace(partial, copy)  # atomic: another process may be doing the same
    return sorted(path for path in copies.iterdir() if path.suffix == ".cpp")


def _build_folder() -> tuple[str, Path]:
    from torch.utils import cpp_extension

    name = _build_name()
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    return name, Path(root) / name


def build_pending() -> bool:
    """True when the next use of the kernels would compile them: switched on, not
    loaded yet, not failed before, and not in the extension cache."""
    if not switch_on() or _failed or _module is not None:
        return False
    name, folder = _build_folder()
    return not (folder / f"{name}.so").exists()


def kernels(announce: bool = True) -> ModuleType | None:
    """The compiled module, building it on the first call; None when off or unbuildable.

    ``announce``: log a line before a build (callers that print their own, such
    as the CLI's build step, pass False).
    """
    global _module, _failed
    if _failed:
        return None
    with _LOCK:  # one build per process, whichever thread asks first
        if _module is None and not _failed:
            _module = _load(announce)
    return _module


def _load(announce: bool) -> ModuleType | None:
    global _failed
    from torch.utils import cpp_extension

    name, folder = _build_folder()
    if announce and not (folder / f"{name}.so").exists():
        _log.warning(
            "monolith_layers: compiling the native kernels into %s (once per environment, "
            "under a minute; `monolith-layers build-kernels` does it ahead of time, %s=0 skips them)",
            folder,
            ENV_VAR,
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Other processes (torchrun's ranks) building the same folder wait on
        # cpp_extension's lock file and then load the finished module.
        return cpp_extension.load(
            name=name,
            sources=[str(path) for path in _source_copies(folder)],
            extra_cflags=FLAGS,
            extra_ldflags=["-fopenmp"],
            build_directory=str(folder),
            verbose=False,
        )
    except Exception as err:  # no compiler, no ninja, no headers: the tensor ops remain
        _failed = True
        warnings.warn(
            f"monolith_layers: the native kernels could not be built ({err}); using "
            f"plain tensor ops (same results, slower). Set {ENV_VAR}=0 to skip the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def build_native() -> tuple[ModuleType | None, float]:
    """Build (or load from the cache) the kernels now, not inside a first forward call.

    Returns ``(the module or None, seconds taken)``; no log line, callers say
    what they are doing.
    """
    began = time.perf_counter()
    module = kernels(announce=False)
    return module, time.perf_counter() - began


def build_location() -> Path:
    """The folder the kernels are (or will be) built in."""
    return _build_folder()[1]


def loaded() -> bool:
    """The kernels are loaded in this process (no build or lock needed to use them)."""
    return _module is not None
