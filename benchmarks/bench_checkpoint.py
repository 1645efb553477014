"""Checkpoint reading speed: MB/s of read_tf_checkpoint on a synthetic checkpoint.

Writes a checkpoint of ``--mb`` megabytes (float32 tensors of 1M values) into
a temporary folder with :func:`write_tf_checkpoint`, then times, median of
``--rounds`` after one warm-up read:

* reading every tensor with the compiled CRC32C (google-crc32c), and with
  the pure-Python CRC32C (on a ``--python-mb`` slice of the tensors: it runs
  at about 1 MB/s);
* reading without CRC checks (the I/O and parsing alone);
* ``load_monolith_checkpoint`` of a small layer out of the big checkpoint
  (reads only that layer's entries);
* with ``--baseline REV``, the reader as it was at git revision REV (for the
  before / after figure).

    python benchmarks/bench_checkpoint.py --mb 200 --baseline 19de618
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from monolith_layers import MLP, load_monolith_checkpoint, write_tf_checkpoint
from monolith_layers.interop import tf_checkpoint

VALUES_PER_TENSOR = 1 << 20  # 4 MB of float32


def _median_seconds(fn, rounds: int) -> float:
    fn()  # warm-up: page cache, imports
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _baseline_reader(rev: str):
    """``read_tf_checkpoint`` as it was at git revision ``rev``."""
    source = subprocess.run(
        ["git", "show", f"{rev}:src/monolith_layers/interop/tf_checkpoint.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    source = source.replace("from .monolith import", "from monolith_layers.interop.monolith import")
    path = Path(tempfile.mkdtemp()) / "baseline_tf_checkpoint.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_tf_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_tf_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="checkpoint size in MB")
    parser.add_argument("--python-mb", type=int, default=8, help="MB read with the Python CRC")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="git revision of the reader to compare with")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    count = max(1, args.mb * (1 << 20) // (4 * VALUES_PER_TENSOR))
    layer = MLP([16, 1], input_dim=32)
    tensors = {
        f"model/table_{i:03d}": rng.standard_normal(VALUES_PER_TENSOR, np.float32)
        for i in range(count)
    }
    tensors.update(
        {f"model/{k}": v.detach().numpy() for k, v in layer.monolith_variables().items()}
    )
    total_mb = sum(v.nbytes for v in tensors.values()) / 1e6
    with tempfile.TemporaryDirectory() as folder:
        prefix = write_tf_checkpoint(Path(folder) / "model.ckpt", tensors)
        rows = []

        def measure(label, fn, megabytes):
            seconds = _median_seconds(fn, args.rounds)
            rows.append((label, seconds, megabytes / seconds))

        measure(
            f"read all, CRC32C {tf_checkpoint.CRC32C_BACKEND}",
            lambda: tf_checkpoint.read_tf_checkpoint(prefix),
            total_mb,
        )
        measure(
            "read all, no CRC",
            lambda: tf_checkpoint.read_tf_checkpoint(prefix, verify=False),
            total_mb,
        )
        few = [f"model/table_{i:03d}" for i in range(max(1, args.python_mb // 4))]
        compiled = tf_checkpoint._crc32c
        tf_checkpoint._crc32c = tf_checkpoint._crc32c_python
        try:
            measure(
                f"read {len(few) * 4} MB, CRC32C python",
                lambda: tf_checkpoint.read_tf_checkpoint(prefix, names=few),
                len(few) * 4 * (1 << 20) / 1e6,
            )
        finally:
            tf_checkpoint._crc32c = compiled
        small = MLP([16, 1], input_dim=32)
        measure(
            "load_monolith_checkpoint(MLP) from it",
            lambda: load_monolith_checkpoint(small, prefix, strict=True),
            total_mb,
        )
        if args.baseline:
            old = _baseline_reader(args.baseline)
            old_mb = len(few) * 4 * (1 << 20) / 1e6
            # The old reader reads every tensor: time it on a checkpoint of just `few`.
            sub = write_tf_checkpoint(
                Path(folder) / "sub" / "model.ckpt", {k: tensors[k] for k in few}
            )
            measure(f"baseline {args.baseline}: read {old_mb:.0f} MB", lambda: old(sub), old_mb)

    print(
        f"checkpoint: {total_mb:.0f} MB in {len(tensors)} tensors; python {sys.version.split()[0]}"
    )
    print("| what | median s | MB/s |\n| --- | ---: | ---: |")
    for label, seconds, rate in rows:
        print(f"| {label} | {seconds:.3f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
