"""The layers on a GPU: ours (Triton kernels) against cuDNN and the peers, same run.

Run where a GPU is lent: python benchmarks/bench_gpu.py [--rounds 20]
Quick check that the script works, anywhere (the Triton kernels in Triton's
interpreter on the CPU; the times mean nothing there):
TRITON_INTERPRET=1 python benchmarks/bench_gpu.py --device cpu --smoke

Per case (realistic log-normal lengths, ``lengths.py``; B in {256, 1024,
4096}, T in {50, 200}, E = U = 32), fwd+bwd and forward medians after
warm-up, with ``torch.cuda.synchronize`` around each timed call:

* the candidates of ``bench_lengths.py``, each as its users run it:
  AUGRU against ``torch.nn.GRU`` on a ``PackedSequence`` (cuDNN) and
  DeepCTR-Torch's packed ``DynamicGRU``; DIEN against DeepCTR-Torch and
  torch-rechub; DIN against DeepCTR-Torch, FuxiCTR (mask) and torch-rechub
  (no mask: a different function, padding positions take part);
* ours with the fast path switched off (``fused(False)``): the reference
  tensor ops, a step loop of small kernels for the recurrences;
* the Keras GRU (``gru_sequence``) against cuDNN's ``nn.GRU``, packed.

``--precisions fp32 bf16``: bf16 runs every candidate under
``torch.autocast("cuda", torch.bfloat16)``. Under autocast our operators
compute in float32 on the float32 inputs (the peers' matmuls run in bf16):
the table says which path ours took. A peer that fails on the device is left out and
named. Results go to ``results/gpu.md`` / ``gpu.json``.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from bench_lengths import U, augru_case, dien_case, din_case
from harness import run_case, save, setup
from lengths import describe, lognormal
from torch.nn.utils.rnn import pack_padded_sequence

import monolith_layers as ml
from monolith_layers import KerasGRUCell, gru_sequence


def gru_case(batch, steps, lengths, rounds, label, device="cpu", time_case=run_case):
    x = torch.randn(batch, steps, U, requires_grad=True, device=device)
    cell = KerasGRUCell(U, input_dim=U, device=device)
    on_device = lengths.to(device)
    forwards = {
        "monolith_layers gru_sequence(lengths=)": lambda: gru_sequence(cell, x, lengths=on_device)[
            0
        ]
    }
    cudnn = torch.nn.GRU(U, U, batch_first=True, device=device)

    def packed():
        sequence = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return cudnn(sequence)[0].data

    forwards["torch.nn.GRU on a PackedSequence"] = packed
    title = f"Keras GRU, ({batch}, {steps}, {U}), {label}"
    return time_case(title, "torch.nn.GRU on a PackedSequence", forwards, rounds)


CASES = {"augru": augru_case, "gru": gru_case, "dien": dien_case, "din": din_case}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def _with_reference(forwards: dict) -> dict:
    """The candidates, plus ours with the fast path off (the reference tensor ops)."""
    ours = next(name for name in forwards if name.startswith("monolith_layers"))

    def reference():
        with ml.fused(False):
            return forwards[ours]()

    return {**forwards, f"{ours} [reference tensor ops]": reference}


def _autocast(forward, dtype):
    @functools.wraps(forward)
    def run():
        with torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext():
            return forward()

    return run


def _working(forwards: dict, dropped: list[str]) -> dict:
    """The candidates whose forward and backward run here; the others named in ``dropped``."""
    kept = {}
    for name, forward in forwards.items():
        try:
            out = forward()
            out = out[0] if isinstance(out, (tuple, list)) else out
            out.float().sum().backward()
            kept[name] = forward
        except Exception as error:  # a peer that does not run on this device
            dropped.append(f"{name}: {type(error).__name__}: {str(error)[:120]}")
    return kept


def _path_of_ours(forwards: dict) -> str:
    ours = next(name for name in forwards if name.startswith("monolith_layers"))
    with ml.which_paths() as ran:
        forwards[ours]()
    return ", ".join(sorted({f"{op}: {path}" for op, path in ran}))


def timer(device: torch.device, dtype, notes: list[str]):
    """A ``time_case`` for the case builders: adds the reference, applies the
    precision, drops what does not run, records ours' path, syncs the device."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def time_case(title, baseline, forwards, rounds):
        forwards = {k: _autocast(f, dtype) for k, f in _with_reference(forwards).items()}
        dropped: list[str] = []
        forwards = _working(forwards, dropped)
        title = f"{title}; {'bf16 autocast' if dtype else 'fp32'}; ours: {_path_of_ours(forwards)}"
        notes.extend(f"{title}: left out {d}" for d in dropped)
        return run_case(title, baseline, forwards, rounds, sync=sync)

    return time_case


def _arguments(parser) -> None:
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--batches", nargs="+", type=int, default=[256, 1024, 4096])
    parser.add_argument("--steps", nargs="+", type=int, default=[50, 200])
    parser.add_argument("--precisions", nargs="+", choices=sorted(PRECISIONS), default=["fp32"])
    parser.add_argument(
        "--smoke", action="store_true", help="B 16, T 8, 2 rounds: checks the script runs"
    )


def main() -> None:
    args = setup(__doc__, _arguments)
    device = torch.device(args.device)
    if device.type == "cpu":
        ml.set_cpu_backend("triton")  # the GPU kernels, interpreted: for --smoke
    if args.smoke:
        args.batches, args.steps, args.rounds = [16], [8], 2
    results, notes = [], []
    for precision in args.precisions:
        time_case = timer(device, PRECISIONS[precision], notes)
        for steps in args.steps:
            for batch in args.batches:
                lengths = lognormal(batch, steps)
                label = f"log-normal lengths: {describe(lengths, steps)}"
                for name in args.cases:
                    case = CASES[name]
                    results.append(
                        case(batch, steps, lengths, args.rounds, label, device, time_case)
                    )
                    print(results[-1][0], flush=True)
    markdown = [md for md, _ in results]
    if notes:
        markdown.append("Left out:\n\n" + "\n".join(f"- {n}" for n in notes))
    save("gpu", markdown, [data for _, data in results])


if __name__ == "__main__":
    main()
