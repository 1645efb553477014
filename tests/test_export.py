"""Export with a dynamic batch: torch.export, ONNX (dynamo and TorchScript
exporters) run under onnxruntime, and torch.jit.trace, all against eager."""

import warnings

import pytest
import torch

from monolith_layers import DIEN, DIN, DMR_U2I, MLP, AutoInt, SeNet

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

B, T, E, F = 4, 5, 8, 3
MASK = torch.arange(T) < torch.tensor([[5], [3], [1], [0]])


def _cases():
    torch.manual_seed(0)
    return {
        "din": (
            DIN([8, 1], activation="relu", embed_dim=E),
            (torch.randn(B, E), torch.randn(B, T, E), MASK),
        ),
        "dien": (
            DIEN(E, att_type="AUGRU", input_dim=E),
            (torch.randn(B, E), torch.randn(B, T, E), MASK),
        ),
        "dmr": (
            DMR_U2I(4, seq_len=T, user_dim=E, item_dim=E),
            (torch.randn(B, E), torch.randn(B, T, E), MASK),
        ),
        "autoint": (AutoInt(layer_num=2), (torch.randn(B, F, E),)),
        "senet": (SeNet(F, 2), (torch.randn(B, F, E),)),
        "mlp": (MLP([8, 1], input_dim=E), (torch.randn(B, E),)),
    }


def _bigger(args, times):
    return tuple(torch.cat([a] * times) for a in args)


def _dynamic_batch(args):
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    return tuple({0: batch} for _ in args)


@pytest.mark.parametrize("name", sorted(_cases()))
def test_torch_export_with_a_dynamic_batch(name):
    layer, args = _cases()[name]
    layer.eval()
    program = torch.export.export(layer, args, dynamic_shapes=_dynamic_batch(args))
    for times in (1, 3, 600):  # 600 * 4 rows * 5 steps: past one DIN slice of 8192 positions
        big = _bigger(args, times)
        torch.testing.assert_close(program.module()(*big), layer(*big), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(_cases()))
def test_onnx_export_with_a_dynamic_batch_runs_in_onnxruntime(name, tmp_path):
    layer, args = _cases()[name]
    layer.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(layer, args, dynamo=True, dynamic_shapes=_dynamic_batch(args))
    program.save(str(tmp_path / f"{name}.onnx"))
    session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"))
    for times in (1, 7):
        big = _bigger(args, times)
        feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), big, strict=True)}
        (out,) = session.run(None, feeds)
        torch.testing.assert_close(torch.from_numpy(out), layer(*big), atol=1e-5, rtol=1e-5)


def test_torchscript_onnx_exporter_traces_the_plain_recurrence(tmp_path):
    # jit tracing takes the plain loop: the exported graph has its inputs and
    # computes DIEN, at any batch size.
    layer, args = _cases()["dien"]
    layer.eval()
    path = tmp_path / "dien.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            layer,
            args,
            str(path),
            dynamo=False,
            input_names=["queries", "keys", "mask"],
            dynamic_axes={"queries": {0: "b"}, "keys": {0: "b"}, "mask": {0: "b"}},
        )
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["queries", "keys", "mask"]
    big = _bigger(args, 3)
    (out,) = session.run(
        None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), big, strict=True)}
    )
    want = layer(*big)
    assert want.abs().sum() > 0
    torch.testing.assert_close(torch.from_numpy(out), want, atol=1e-5, rtol=1e-5)


def test_traced_din_is_not_capped_by_its_batch_slices():
    din = DIN([8, 1], embed_dim=E).eval()
    traced = torch.jit.trace(din, (torch.randn(4, E), torch.randn(4, 2000, E)))
    args = (torch.randn(40, E), torch.randn(40, 2000, E))  # 40 * 2000 positions: ten slices eagerly
    torch.testing.assert_close(traced(*args), din(*args), atol=1e-4, rtol=1e-4)
