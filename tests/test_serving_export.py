"""`monolith-layers export`: ONNX (onnxruntime), ExportedProgram and TorchScript
artefacts of trained models against eager outputs, masks included, at several
batch sizes."""

import numpy as np
import pytest
import torch

from monolith_layers.cli import main
from monolith_layers.export import ExportError, ServingModule, example_inputs, export_model
from monolith_layers.models import CTRModel, ModelConfig
from monolith_layers.train import save_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

T = 6


def _model(name):
    torch.manual_seed(0)
    config = ModelConfig.from_name(
        name, num_users=20, num_items=30, num_categories=5, max_len=T, embed_dim=4, hidden_units=[8]
    )
    return CTRModel(config).eval()


def _run(fmt, path, inputs):
    if fmt == "onnx":
        session = ort.InferenceSession(str(path))
        names = [i.name for i in session.get_inputs()]
        assert names == ["user", "item", "category", "history", "history_category", "mask"]
        return session.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})[0]
    if fmt == "exported-program":
        return torch.export.load(str(path)).module()(*inputs).detach().numpy()
    return torch.jit.load(str(path))(*inputs).detach().numpy()


@pytest.mark.parametrize("fmt", ["onnx", "exported-program", "torchscript"])
@pytest.mark.parametrize("name", ["din", "dien"])
def test_exports_match_eager_at_several_batch_sizes(name, fmt, tmp_path):
    model = _model(name)
    path = export_model(model, fmt, tmp_path / f"{name}.{fmt}")
    serving = ServingModule(model).eval()
    for batch in (1, 5, 33):
        inputs = example_inputs(model, batch, T, seed=batch)
        assert batch == 1 or not inputs[5].all()  # padding in the batch, one row full length
        with torch.no_grad():
            want = serving(*inputs).numpy()
        np.testing.assert_allclose(_run(fmt, path, inputs), want, atol=1e-5, rtol=1e-5)


def test_exported_program_carries_frozen_kernels_and_the_model_is_untouched(tmp_path):
    # The weight norms are computed once into the artefact (no norm ops per
    # request); the model itself keeps computing them from its weights.
    model = _model("din")
    program = torch.export.load(str(export_model(model, "exported-program", tmp_path / "m.pt2")))
    ops = {str(node.target) for node in program.graph.nodes}
    assert "aten.rsqrt.default" not in ops and "monolith_layers.din_attention.default" in ops
    assert all("effective_kernel" not in vars(m) for m in model.modules())
    serving, inputs = ServingModule(model).eval(), example_inputs(model, 3, T)
    with torch.no_grad():
        before = serving(*inputs)
        model.head.dense_0.kernel.mul_(-1.0)  # the eager model still reads its weights
        assert not torch.allclose(serving(*inputs), before)


def test_cli_export_and_bad_input(tmp_path, capsys):
    model = _model("dien")
    save_model(model, tmp_path / "run")
    out = tmp_path / "dien.onnx"
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "--out", str(out)]) == 0
    assert "checked against the eager model" in capsys.readouterr().out and out.exists()
    with pytest.raises(SystemExit):  # argparse names the choices
        main(["export", str(tmp_path / "run"), "--format", "tflite"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "--format", "onnx"]) == 2
    assert "no saved model" in capsys.readouterr().err
    with pytest.raises(ExportError, match="format must be one of"):
        export_model(model, "tflite", tmp_path / "x")
    dmr = _model("dmr")
    with pytest.raises(ExportError, match="DMR's position embeddings fix T = 6"):
        export_model(dmr, "onnx", tmp_path / "dmr.onnx", max_len=4)


def test_a_wrong_artefact_raises_and_is_removed(tmp_path, monkeypatch):
    import monolith_layers.export as export_module

    model = _model("din")
    monkeypatch.setattr(export_module, "_run_artefact", lambda fmt, path, x: np.zeros(len(x[0])))
    with pytest.raises(ExportError, match="disagrees with the eager model"):
        export_model(model, "torchscript", tmp_path / "din.pt")
    assert not (tmp_path / "din.pt").exists()


def test_missing_onnx_tools_are_named_before_anything_is_written(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxscript" else real(name, *a),
    )
    with pytest.raises(
        ExportError, match=r"needs onnxscript: pip install 'monolith-layers\[export\]'"
    ):
        export_model(_model("din"), "onnx", tmp_path / "din.onnx")
    assert not (tmp_path / "din.onnx").exists()
