"""Inference latency of DIN and DIEN: p50 / p99 per call, by batch size and path.

    python benchmarks/bench_serving.py [--threads 2] [--seconds 1.5] [--no-compile] [--no-onnx]
        [--layers din dien]

Paths: ``eager`` (a plain call, autograd on, as a model in train mode would
be called), ``no_grad`` (the call under ``torch.no_grad()``: our fused paths
keep no history, and the recurrences skip padding), ``torch.compile``
(``dynamic=True``, under no_grad; compile time reported separately) and
``onnxruntime`` (the layer exported with ``torch.onnx.export(dynamo=True)``
and a dynamic batch; the exported graph is the plain computation, with the
recurrence unrolled over T). Histories have log-normal lengths (median 20 %
of T, see ``lengths.py``) given as a (B, T) mask; E = U = 32, DIN
[80, 40, 1] relu, DIEN AUGRU. Each configuration runs for about
``--seconds`` after a warm-up; every candidate of a configuration is timed
in the same process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from lengths import lognormal

from monolith_layers import DIEN, DIN

E = 32
BATCHES = (1, 16, 256, 1024)


def latencies(fn, seconds: float) -> tuple[float, float, int]:
    for _ in range(3):
        fn()
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 20:
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), len(times)


def inputs(batch: int, steps: int):
    torch.manual_seed(batch)
    mask = torch.arange(steps) < lognormal(batch, steps, seed=batch).unsqueeze(1)
    return torch.randn(batch, E), torch.randn(batch, steps, E), mask


def onnx_session(layer, steps: int, folder: Path):
    import onnxruntime as ort

    args = inputs(4, steps)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            layer, args, dynamo=True, dynamic_shapes=tuple({0: batch} for _ in args)
        )
    path = folder / f"{type(layer).__name__}_{steps}.onnx"
    program.save(str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda *a: session.run(None, {n: x.numpy() for n, x in zip(names, a, strict=True)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument(
        "--traced-dien-steps",
        type=int,
        default=50,
        help="compile / export DIEN only up to this T (both unroll the recurrence: "
        "T=50 takes about 3 min to compile and 1.5 min to export on 2 cores)",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        choices=["din", "dien"],
        default=["din", "dien"],
        help="the layers to time (default both)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp())
    rows = []
    layers = {
        "DIN": lambda: DIN([80, 40, 1], activation="relu", embed_dim=E),
        "DIEN": lambda: DIEN(E, att_type="AUGRU", input_dim=E),
    }
    for name, make in layers.items():
        if name.lower() not in args.layers:
            continue
        for steps in (50, 200):
            torch.manual_seed(0)
            layer = make().eval()
            paths = {"eager": layer}
            paths["no_grad"] = lambda *a, layer=layer: _no_grad(layer, *a)
            notes = []
            traced = name != "DIEN" or steps <= args.traced_dien_steps
            if not traced:
                notes.append("not compiled / exported (see --traced-dien-steps)")
            if traced and not args.no_compile:
                compiled = torch.compile(layer, dynamic=True)
                start = time.perf_counter()
                _no_grad(compiled, *inputs(3, steps))
                notes.append(f"compile {time.perf_counter() - start:.0f} s")
                paths["torch.compile"] = lambda *a, c=compiled: _no_grad(c, *a)
            if traced and not args.no_onnx:
                start = time.perf_counter()
                paths["onnxruntime"] = onnx_session(layer, steps, folder)
                notes.append(f"ONNX export {time.perf_counter() - start:.0f} s")
            print(f"{name} T={steps}: " + ", ".join(notes), flush=True)
            for batch in BATCHES:
                feed = inputs(batch, steps)
                for path, fn in paths.items():
                    p50, p99, calls = latencies(lambda fn=fn, feed=feed: fn(*feed), args.seconds)
                    rows.append((name, steps, batch, path, p50, p99, calls))
                    print(
                        f"  B={batch:5d} {path:14s} p50 {p50:9.3f} ms  p99 {p99:9.3f} ms",
                        flush=True,
                    )
    print(f"\n| layer | T | batch | path | p50 ms | p99 ms | calls |  ({args.threads} threads)")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for name, steps, batch, path, p50, p99, calls in rows:
        print(f"| {name} | {steps} | {batch} | {path} | {p50:.3f} | {p99:.3f} | {calls} |")


def _no_grad(layer, *args):
    with torch.no_grad():
        return layer(*args)


if __name__ == "__main__":
    main()
