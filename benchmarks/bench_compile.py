"""torch.compile and torch.export against eager, with the operators kept.

1. DIEN (AUGRU, U = 32, B = 256, T = 50, random lengths) and a full CTRModel
   with DIEN: compile time of ``torch.compile(fullgraph=True)``, then fwd+bwd
   of the compiled module against eager, same inputs, and the largest
   difference of outputs and gradients.
2. The exported program (``monolith-layers export --format exported-program``,
   i.e. :func:`monolith_layers.export.export_model`) of the DIN and DIEN CTR
   models, loaded back with ``torch.export.load``, against the eager model
   under ``no_grad``, at batch 1, 64 and 1024.

Run: ``python benchmarks/bench_compile.py`` (2 threads; ``--rounds`` timed calls).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import harness
import torch

import monolith_layers as ml
from monolith_layers.export import INPUT_NAMES, ServingModule, example_inputs, export_model
from monolith_layers.models import CTRModel, ModelConfig


def _dien_case():
    torch.manual_seed(0)
    batch, steps, units = 256, 50, 32
    layer = ml.DIEN(units, att_type="AUGRU", input_dim=units)
    queries = torch.randn(batch, units)
    keys = torch.randn(batch, steps, units, requires_grad=True)
    lengths = torch.randint(1, steps + 1, (batch,))
    mask = torch.arange(steps) < lengths.unsqueeze(1)
    return layer, (queries, keys, mask), [keys, *layer.parameters()]


def _ctr_case(encoder: str):
    torch.manual_seed(0)
    config = ModelConfig.from_name(encoder, num_users=1000, num_items=2000, num_categories=20)
    model = CTRModel(config)
    batch = dict(zip(INPUT_NAMES, example_inputs(model, 256, config.max_len), strict=True))
    return model, (batch,), list(model.parameters())


def _grads(module, inputs, leaves):
    out = module(*inputs)
    grads = torch.autograd.grad(out.float().sum(), leaves, allow_unused=True)
    return out.detach(), [g for g in grads if g is not None]


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest difference relative to the largest value of ``want``."""
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def compile_case(title: str, module, inputs, leaves, rounds: int):
    began = time.perf_counter()
    compiled = torch.compile(module, fullgraph=True)
    out_c, grads_c = _grads(compiled, inputs, leaves)
    seconds = time.perf_counter() - began
    out_e, grads_e = _grads(module, inputs, leaves)
    out_diff = _relative(out_c, out_e)
    grad_diff = max(_relative(a, b) for a, b in zip(grads_c, grads_e, strict=True))
    with ml.which_paths() as ran:
        module(*inputs)
    times = harness.time_candidates(
        {
            "eager": harness.fwd_bwd(lambda: module(*inputs)),
            "compiled": harness.fwd_bwd(lambda: compiled(*inputs)),
        },
        rounds,
    )
    ratio = times["compiled"] / times["eager"]
    line = (
        f"| {title} | {seconds:.1f} | {times['eager']:.2f} | {times['compiled']:.2f} | "
        f"{ratio:.3f} | {out_diff:.1e} | {grad_diff:.1e} |"
    )
    paths = sorted({f"{op}: {path}" for op, path in ran})
    return line, {
        "case": title,
        "compile_s": seconds,
        "eager_ms": times["eager"],
        "compiled_ms": times["compiled"],
        "ratio": ratio,
        "max_out_diff": out_diff,
        "max_grad_diff": grad_diff,
        "paths": paths,
    }


def export_case(encoder: str, rounds: int, folder: Path):
    torch.manual_seed(0)
    config = ModelConfig.from_name(encoder, num_users=1000, num_items=2000, num_categories=20)
    model = CTRModel(config).eval()
    path = export_model(model, "exported-program", folder / f"{encoder}.pt2")
    program = torch.export.load(str(path)).module()
    serving = ServingModule(model).eval()
    ops = sorted(
        {
            str(node.target)
            for node in torch.export.load(str(path)).graph.nodes
            if "monolith_layers" in str(node.target)
        }
    )
    lines, data = [], []
    for batch in (1, 64, 1024):
        inputs = example_inputs(model, batch, config.max_len, seed=batch)
        times = harness.time_candidates(
            {
                "eager": harness.fwd_only(lambda inputs=inputs: serving(*inputs)),
                "exported": harness.fwd_only(lambda inputs=inputs: program(*inputs)),
            },
            rounds,
        )
        ratio = times["exported"] / times["eager"]
        lines.append(
            f"| {encoder} | {batch} | {times['eager']:.3f} | {times['exported']:.3f} | {ratio:.3f} |"
        )
        data.append({"model": encoder, "batch": batch, **times, "ratio": ratio, "ops": ops})
    return lines, data, ops


def main() -> None:
    args = harness.setup(__doc__.splitlines()[0])
    ml.build_native()
    compiled_table = [
        "### torch.compile(fullgraph=True) against eager, fwd+bwd",
        "",
        "| case | compile s | eager ms | compiled ms | compiled / eager | max rel. out diff | max rel. grad diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    data = []
    for title, case in (("DIEN layer", _dien_case()), ("CTRModel dien", _ctr_case("dien"))):
        line, row = compile_case(title, *case, args.rounds)
        compiled_table.append(line)
        data.append(row)
        torch._dynamo.reset()
    exported_table = [
        "### exported program (torch.export) against eager, no_grad forward",
        "",
        "| model | batch | eager ms | exported ms | exported / eager |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    with tempfile.TemporaryDirectory() as folder:
        for encoder in ("din", "dien"):
            lines, rows, ops = export_case(encoder, args.rounds, Path(folder))
            exported_table += lines
            data += rows
            notes.append(f"{encoder}'s program calls: {', '.join(ops)}")
    markdown = ["\n".join(compiled_table), "\n".join(exported_table), "\n".join(notes)]
    harness.save("compile", markdown, data)


if __name__ == "__main__":
    main()
