"""The CLI as a user runs it: demo --quick, train / evaluate / resume, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from monolith_layers.cli import main

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


def _recbole_dir(tmp_path, users=120, events=12, seed=0):
    rng = np.random.default_rng(seed)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for user in range(users):
        for step in range(events):
            item = int(rng.integers(1, 60))
            rating = 5 if item % 3 == user % 3 else int(rng.integers(1, 4))
            lines.append(f"u{user}\ti{item}\t{rating}\t{1000 + 10 * step + user}")
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "toy.inter").write_text("\n".join(lines) + "\n")
    items = ["item_id:token\tclass:token_seq"] + [f"i{i}\tg{i % 5}" for i in range(1, 60)]
    (folder / "toy.item").write_text("\n".join(items) + "\n")
    return folder


def test_demo_quick_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| model | test AUC |" in printed and "din+irazor" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "synthetic"
    assert set(metrics["models"]) == {"mean", "din", "dien", "dmr", "din+irazor"}
    for values in metrics["models"].values():
        assert 0.5 < values["test_auc"] < 1 and values["test_logloss"] > 0
        assert values["train_seconds"] > 0 and values["params"] > 0
    for plot in ("training_curves.png", "auc_by_model.png", "din_attention.png", "irazor_dims.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
        assert f"]({plot})" in (out / "report.md").read_text()
    assert (out / "models" / "dien" / "model.safetensors").exists()


def test_train_evaluate_and_resume(tmp_path, capsys):
    data = _recbole_dir(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--model", "dien", "--epochs", "1", "--max-len", "6"]
    assert main(args + ["--embed-dim", "4", "--out", str(out), "--no-progress"]) == 0
    assert {p.name for p in out.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "last.safetensors",
        "trainer_state.pt",
        "metrics.json",
        "report.md",
    }
    capsys.readouterr()
    assert main(["evaluate", str(out), "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    trained = json.loads((out / "metrics.json").read_text())["models"]["dien"]
    assert result["model"] == "dien" and result["samples"] > 0
    assert result["auc"] == pytest.approx(trained["test_auc"], abs=1e-9)
    resume = ["train", "--data", str(data), "--model", "dien", "--epochs", "2", "--max-len", "6"]
    assert main(resume + ["--embed-dim", "4", "--out", str(out), "--resume", "--no-progress"]) == 0
    state = json.loads((out / "metrics.json").read_text())["models"]["dien"]["history"]
    assert [r["epoch"] for r in state] == [1, 2]


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "/no/such/dir"], "/no/such/dir: no such file or folder"),
        (["train", "--model", "lstm"], "encoder must be one of"),
        (["train", "--model", "din+pca"], "transform must be one of"),
        (["demo", "--data", "ml-1b"], "ml-1b: no such file or folder"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code = main(args + ["--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_bad_config_files_and_empty_data(tmp_path, capsys):
    out = tmp_path / "out"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {"embed_dimension": 8}}))
    assert main(["train", "--config", str(config), "--out", str(out)]) == 2
    assert "unknown keys ['embed_dimension']" in capsys.readouterr().err
    config.write_text(json.dumps({"optimiser": {}}))
    assert main(["train", "--config", str(config), "--out", str(out)]) == 2
    assert "unknown keys ['optimiser']" in capsys.readouterr().err
    config.write_text("{not json")
    assert main(["train", "--config", str(config), "--out", str(out)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "e.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
    assert main(["train", "--data", str(empty), "--out", str(out)]) == 2
    assert "no interactions" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "no saved model" in capsys.readouterr().err
    assert not out.exists()


def test_help_documents_every_command_and_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "monolith_layers", "train", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for option in ("--config", "--data", "--model", "--epochs", "--resume", "--out", "--max-len"):
        assert option in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "monolith_layers", "--help"], capture_output=True, text=True
    )
    assert "demo" in out.stdout and "evaluate" in out.stdout


def test_ctrl_c_leaves_the_last_complete_checkpoint_loadable(tmp_path, capsys, monkeypatch):
    from monolith_layers.train import Trainer, load_model

    real = Trainer._train_epoch

    def interrupted_in_epoch_two(self, train, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, train, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", interrupted_in_epoch_two)
    data = _recbole_dir(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--epochs", "3", "--max-len", "6", "--embed-dim", "4"]
    assert main(args + ["--out", str(out), "--no-progress"]) == 130
    assert f"interrupted; the last complete checkpoint is in {out}" in capsys.readouterr().err
    model = load_model(out)  # epoch 1's weights, complete
    assert model.config.encoder == "din"
    assert not list(out.glob(".*.tmp"))
