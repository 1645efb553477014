"""Peak memory of one DIEN training step (forward + backward), each case in a fresh process.

    python benchmarks/bench_memory.py [--batch 4096 --steps 200 --dim 64] [--baseline REV]

The figure is the process's resident-set high-water mark (``ru_maxrss``)
during the step minus the resident set just before it (inputs, weights and
torch itself already in memory): what the step itself needs. ``tracemalloc``
does not see torch's allocations, hence a fresh process per case. Cases:
full-length histories, and log-normal lengths (median 20 % of T, see
``lengths.py``) passed as a mask. ``--baseline REV`` runs the same cases
on the package as it was at git revision REV (exported to a temp dir).
The step's wall time (one cold step in a fresh process: a rough figure) is
printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(batch: int, steps: int, dim: int, lengths: str) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    import lengths as lengths_module

    from monolith_layers import DIEN

    torch.set_num_threads(2)
    torch.manual_seed(0)
    layer = DIEN(dim, att_type="AUGRU", input_dim=dim)
    queries = torch.randn(batch, dim, requires_grad=True)
    keys = torch.randn(batch, steps, dim, requires_grad=True)
    mask = None
    if lengths == "lognormal":
        real = lengths_module.lognormal(batch, steps)
        mask = torch.arange(steps) < real.unsqueeze(1)
    cotangent = torch.randn(batch, dim)
    before = _rss_mb()
    start = time.perf_counter()
    out = layer(queries, keys, mask)
    torch.autograd.backward(out, cotangent)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    input_mb = keys.numel() * 4 / 2**20
    return {
        "before_mb": before,
        "peak_mb": peak,
        "step_mb": peak - before,
        "keys_mb": input_mb,
        "seconds": seconds,
    }


def run(source: Path, args, lengths: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(source))
    cmd = [sys.executable, __file__, "--child", lengths, "--batch", str(args.batch)]
    cmd += ["--steps", str(args.steps), "--dim", str(args.dim)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def export(rev: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="monolith_layers_"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src/monolith_layers"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--dim", type=int, default=64, help="E = U")
    parser.add_argument("--baseline", help="git revision to compare with")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.batch, args.steps, args.dim, args.child)))
        return
    sources = {"this tree": ROOT / "src"}
    if args.baseline:
        sources[f"baseline {args.baseline}"] = export(args.baseline)
    print(f"DIEN (AUGRU) training step, B={args.batch}, T={args.steps}, E=U={args.dim}")
    print("| code | lengths | keys MB | RSS before MB | step peak MB | peak / keys | step s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, source in sources.items():
        for lengths in ("full", "lognormal"):
            r = run(source, args, lengths)
            print(
                f"| {name} | {lengths} | {r['keys_mb']:.0f} | {r['before_mb']:.0f} | "
                f"{r['step_mb']:.0f} | {r['step_mb'] / r['keys_mb']:.1f}x | {r['seconds']:.1f} |"
            )


if __name__ == "__main__":
    main()
