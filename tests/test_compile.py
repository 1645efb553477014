"""torch.compile and torch.export keep the operators: one opaque call per layer."""

import subprocess
import sys
import textwrap

import torch
from native_helpers import needs_kernels

import monolith_layers as ml

pytestmark = needs_kernels


def _dien_inputs(batch=16, steps=7, units=8):
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(batch, units, generator=g)
    keys = torch.randn(batch, steps, units, generator=g, requires_grad=True)
    mask = torch.arange(steps) < torch.randint(0, steps + 1, (batch,), generator=g).unsqueeze(1)
    return queries, keys, mask


def test_compiled_dien_in_one_graph_equals_eager():
    torch.manual_seed(0)
    dien = ml.DIEN(8, att_type="AUGRU", input_dim=8)
    queries, keys, mask = _dien_inputs()
    leaves = [keys, *dien.parameters()]
    compiled = torch.compile(dien, fullgraph=True)  # a graph break would raise
    got = compiled(queries, keys, mask)
    got_grads = torch.autograd.grad(got.square().sum(), leaves)
    want = dien(queries, keys, mask)
    want_grads = torch.autograd.grad(want.square().sum(), leaves)
    torch.testing.assert_close(got, want)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_compiled_din_with_prelu_tower_equals_eager():
    torch.manual_seed(1)
    din = ml.DIN([6, 1], activation="prelu", embed_dim=8)
    queries, keys, mask = _dien_inputs()
    compiled = torch.compile(din, fullgraph=True)
    torch.testing.assert_close(compiled(queries, keys, mask), din(queries, keys, mask))


def test_exported_dien_calls_the_operators_and_loads_in_a_fresh_process(tmp_path):
    torch.manual_seed(2)
    dien = ml.DIEN(8, att_type="AUGRU", input_dim=8).eval()
    queries, keys, mask = _dien_inputs()
    keys = keys.detach()
    with torch.no_grad():
        program = torch.export.export(dien, (queries, keys, mask))
        want = dien(queries, keys, mask)
    called = {str(node.target) for node in program.graph.nodes}
    assert {"monolith_layers.gru.default", "monolith_layers.agru.default"} <= called
    path = tmp_path / "dien.pt2"
    torch.export.save(program, str(path))
    torch.save({"inputs": (queries, keys, mask), "want": want}, tmp_path / "case.pt")
    script = textwrap.dedent(
        f"""
        import torch
        import monolith_layers  # registers the operators
        case = torch.load({str(tmp_path / "case.pt")!r})
        got = torch.export.load({str(path)!r}).module()(*case["inputs"])
        torch.testing.assert_close(got, case["want"])
        print("same")
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.stdout.strip() == "same", run.stderr


def test_onnx_and_torchscript_record_the_reference_ops():
    dien = ml.DIEN(4, input_dim=4).eval()
    queries, keys, mask = _dien_inputs(units=4)
    with torch.no_grad(), ml.which_paths() as ran:
        torch.jit.trace(dien, (queries, keys.detach(), mask), check_trace=False)
    assert ran and all(path.startswith("reference: TorchScript or ONNX") for _, path in ran)
