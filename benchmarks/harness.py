"""Tiny benchmark harness: medians after warm-up, candidates in alternating blocks.

Each candidate runs in blocks of consecutive calls (after a warm-up call in
each block), as a training loop would run it, so the memory allocator sees a
steady pattern; blocks of all candidates alternate, so that a slow spell of
the machine hits all of them alike. The report is the median per candidate
and its ratio to a chosen baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def time_candidates(
    candidates: dict[str, Callable[[], object]],
    rounds: int = 30,
    block: int = 6,
    warmup: int = 2,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Median milliseconds per call of each candidate over ``rounds`` timed calls.

    ``sync`` waits for queued device work (``torch.cuda.synchronize`` on a GPU),
    before the clock starts and before it stops."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    while any(len(v) < rounds for v in samples.values()):
        for name, fn in candidates.items():
            for _ in range(warmup):
                fn()
            for _ in range(min(block, rounds - len(samples[name]))):
                sync()
                start = time.perf_counter()
                fn()
                sync()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def fwd_bwd(forward: Callable[[], object]) -> Callable[[], None]:
    """A callable doing forward + backward with a fixed random cotangent per output.

    A dense cotangent, as a real loss gives; ``out.sum().backward()`` would
    hand every layer a stride-0 gradient, which sends some kernels (bmm) down
    slow paths no training run sees.
    """
    cotangents: dict[tuple, torch.Tensor] = {}

    def run() -> None:
        out = forward()
        outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if o.requires_grad]
        grads = []
        for o in outs:
            key = (tuple(o.shape), o.dtype)
            if key not in cotangents:
                cotangents[key] = torch.randn_like(o)
            grads.append(cotangents[key])
        torch.autograd.backward(outs, grads)

    return run


def fwd_only(forward: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            forward()

    return run


def report(title: str, baseline: str, rows: dict[str, dict[str, float]]) -> str:
    """Markdown table: candidate, fwd+bwd ms, forward ms, ratios to ``baseline``."""
    base = rows[baseline]
    lines = [
        f"### {title}",
        "",
        f"| candidate | fwd+bwd ms | forward ms | fwd+bwd ratio to {baseline} | forward ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['fwd_bwd']:.2f} | {r['forward']:.2f} | "
            f"{r['fwd_bwd'] / base['fwd_bwd']:.2f} | {r['forward'] / base['forward']:.2f} |"
        )
    return "\n".join(lines)


def run_case(
    title: str,
    baseline: str,
    forwards: dict[str, Callable[[], object]],
    rounds: int = 30,
    sync: Callable[[], None] = lambda: None,
) -> tuple[str, dict]:
    """Time every forward as fwd+bwd and as forward-only; return (markdown, json)."""
    grad = time_candidates({k: fwd_bwd(f) for k, f in forwards.items()}, rounds, sync=sync)
    infer = time_candidates({k: fwd_only(f) for k, f in forwards.items()}, rounds, sync=sync)
    rows = {k: {"fwd_bwd": grad[k], "forward": infer[k]} for k in forwards}
    return report(title, baseline, rows), {"title": title, "baseline": baseline, "rows": rows}


def setup(description: str, add_arguments=None) -> argparse.Namespace:
    """Parse ``--rounds`` / ``--threads`` (and what ``add_arguments(parser)``
    adds), set the threads and the seed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=30, help="timed calls per candidate")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def kernels_ready() -> str:
    """Build (or load from the cache) our native kernels now, so that no timed
    training run pays their once-per-environment compile; returns a line that
    says what our layers will run and how long getting it ready took."""
    from monolith_layers import build_native

    module, seconds = build_native()
    state = "tensor ops (kernels off or unbuildable)" if module is None else "native kernels"
    return f"monolith-layers: {state}, ready in {seconds:.1f} s (not in any timed run)"


def environment() -> dict[str, object]:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "gpu": gpu,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
    }


def save(name: str, markdown: list[str], data: list[dict]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text("\n\n".join(markdown) + "\n")
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"environment": environment(), "cases": data}, indent=2)
    )
    print("\n\n".join(markdown))
