"""The CLI as a user runs it: demo --quick, train / evaluate / resume, bad input,
bad output paths, progress bars on and off."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monolith_layers._ops import build as _native
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
    assert main(["demo", "--quick", "--out", str(out)]) == 0  # progress bars on, as users run it
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
    # The same demo without bars: the same five models, to the last bit of their AUCs.
    plain = tmp_path / "plain"
    assert main(["demo", "--quick", "--out", str(plain), "--no-progress"]) == 0
    again = json.loads((plain / "metrics.json").read_text())
    for name, values in metrics["models"].items():
        assert again["models"][name]["test_auc"] == values["test_auc"], name
        assert again["models"][name]["test_logloss"] == values["test_logloss"], name


def test_train_evaluate_and_resume(tmp_path, capsys):
    data = _recbole_dir(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--model", "dien", "--epochs", "1", "--max-len", "6"]
    assert main(args + ["--embed-dim", "4", "--out", str(out), "--no-progress"]) == 0
    assert {p.name for p in out.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "trainer_state.pt",
        "metrics.json",
        "report.md",
    }
    # Every file gets the mode new files get (safetensors' writer alone made 0600).
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert len(set(modes.values())) == 1, modes
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
    capsys.readouterr()
    # A run folder is never overwritten silently; --overwrite starts again.
    assert main(resume + ["--embed-dim", "4", "--out", str(out), "--no-progress"]) == 2
    assert "holds an earlier run; add --resume" in capsys.readouterr().err
    assert main(args + ["--embed-dim", "4", "--out", str(out), "--overwrite", "--no-progress"]) == 0
    state = json.loads((out / "metrics.json").read_text())["models"]["dien"]["history"]
    assert [r["epoch"] for r in state] == [1]  # started again: one epoch, not the old two


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


def _saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("model", ["dien", "din+senet"])
def test_progress_bars_do_not_change_the_trained_model(tmp_path, capsys, model):
    """The same seed gives the same weights, bit for bit, whatever is displayed."""
    data = _recbole_dir(tmp_path)
    args = ["train", "--data", str(data), "--model", model, "--epochs", "2", "--max-len", "6"]
    args += ["--embed-dim", "4", "--batch-size", "64"]
    assert main(args + ["--out", str(tmp_path / "bars")]) == 0
    drawn = capsys.readouterr().err
    assert "epoch 1" in drawn  # the bars were really drawn
    assert main(args + ["--out", str(tmp_path / "plain"), "--no-progress"]) == 0
    assert "epoch 1" not in capsys.readouterr().err
    bars, plain = _saved_weights(tmp_path / "bars"), _saved_weights(tmp_path / "plain")
    assert bars.keys() == plain.keys()
    for name, value in bars.items():
        assert torch.equal(value, plain[name]), name
    metrics = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("bars", "plain")]
    name = model
    assert metrics[0]["models"][name]["test_auc"] == metrics[1]["models"][name]["test_auc"]


def _existing_run(tmp_path) -> tuple[Path, Path]:
    data = _recbole_dir(tmp_path)
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--model", "mean", "--epochs", "1", "--max-len", "6"]
    assert main(args + ["--embed-dim", "4", "--out", str(run), "--no-progress"]) == 0
    return data, run


OUTPUT_CASES = {
    "train into a file": (["train", "--out", "{file}"], "--out {file}: is a file; give a folder"),
    "train under a file": (["train", "--out", "{file}/sub"], "{file} is a file, not a folder"),
    "demo under a file": (["demo", "--out", "{file}/sub"], "{file} is a file, not a folder"),
    "demo into a file": (["demo", "--out", "{file}"], "is a file; give a folder"),
    "train into a run": (["train", "--out", "{run}"], "holds an earlier run; add --resume"),
    "resume and overwrite": (
        ["train", "--out", "{run}", "--resume", "--overwrite"],
        "--resume continues the run in --out and --overwrite replaces it: pick one",
    ),
    "resume nothing": (["train", "--out", "{empty}", "--resume"], "nothing to resume"),
    "export into a folder": (
        ["export", "{run}", "--format", "torchscript", "--out", "{empty}"],
        "is a folder; give a file name",
    ),
    "export onto a file": (
        ["export", "{run}", "--format", "torchscript", "--out", "{file}"],
        "exists; add --overwrite to replace it",
    ),
    "export under a file": (
        ["export", "{run}", "--format", "torchscript", "--out", "{file}/x.pt"],
        "{file} is a file, not a folder",
    ),
}


@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_output_problems_are_one_line_before_any_work(tmp_path, capsys, case):
    _, run = _existing_run(tmp_path)
    file = tmp_path / "a_file"
    file.write_text("keep me")
    empty = tmp_path / "empty"
    empty.mkdir()
    places = {"file": str(file), "run": str(run), "empty": str(empty)}
    args, message = OUTPUT_CASES[case]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    capsys.readouterr()
    code = main([a.format(**places) for a in args] + (["--no-progress"] * (args[0] != "export")))
    printed = capsys.readouterr()
    assert code == 2
    assert message.format(**places) in printed.err and len(printed.err.strip().splitlines()) == 1
    assert printed.out == ""  # failed before reading any data: nothing was printed
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nor written
    assert file.read_text() == "keep me"


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs /sys (Linux), read-only even to root")
def test_unwritable_output_folder(capsys):
    try:
        Path("/sys/monolith-layers-probe").touch()
    except OSError:
        pass
    else:
        pytest.skip("/sys is writable here")
    assert main(["train", "--out", "/sys/runs/x", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--out /sys/runs/x: cannot write in /sys" in err and len(err.strip().splitlines()) == 1


def test_export_overwrites_only_when_asked_and_keeps_the_old_file_on_failure(
    tmp_path, capsys, monkeypatch
):
    from monolith_layers import export

    _, run = _existing_run(tmp_path)
    target = tmp_path / "model.pt"
    target.write_text("an older artefact")
    assert main(["export", str(run), "--format", "torchscript", "--out", str(target)]) == 2
    assert target.read_text() == "an older artefact"

    def disagreeing(fmt, path, inputs):
        return np.zeros(7, dtype=np.float32) + 2.0

    monkeypatch.setattr(export, "_run_artefact", disagreeing)
    args = ["export", str(run), "--format", "torchscript", "--out", str(target), "--overwrite"]
    assert main(args) == 2
    assert "disagrees with the eager model" in capsys.readouterr().err
    assert target.read_text() == "an older artefact"  # a failed export replaced nothing
    assert [p.name for p in tmp_path.glob(".*partial*")] == []
    monkeypatch.undo()
    assert main(args) == 0
    assert torch.jit.load(str(target)) is not None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine with no GPU")
@pytest.mark.parametrize("command", ["train", "demo", "evaluate", "export"])
def test_a_gpu_asked_for_on_a_cpu_machine_is_one_line(tmp_path, capsys, command):
    out = tmp_path / "out"
    args = {
        "train": ["train", "--out", str(out), "--device", "cuda", "--no-progress"],
        "demo": ["demo", "--out", str(out), "--device", "cuda:0", "--no-progress"],
        "evaluate": ["evaluate", str(out), "--device", "cuda", "--no-progress"],
        "export": ["export", str(out), "--format", "torchscript", "--device", "cuda"],
    }[command]
    assert main(args) == 2
    printed = capsys.readouterr()
    assert "sees no CUDA device here" in printed.err and "use --device cpu" in printed.err
    assert len(printed.err.strip().splitlines()) == 1 and printed.out == ""
    assert not out.exists()


def test_a_bad_kernel_backend_variable_is_one_line(tmp_path, capsys, monkeypatch):
    from monolith_layers._ops import switch

    monkeypatch.setattr(switch, "_default_backend", None)  # the variable decides
    monkeypatch.setenv("MONOLITH_LAYERS_BACKEND", "cuda")
    out = tmp_path / "out"
    assert main(["train", "--out", str(out), "--no-progress"]) == 2
    printed = capsys.readouterr()
    assert printed.err.strip() == (
        "monolith-layers train: error: MONOLITH_LAYERS_BACKEND: the CPU backend must be one "
        "of ('cpp', 'triton'), got 'cuda'"
    )
    assert printed.out == "" and not out.exists()


def test_tiny_data_errors_name_the_file(tmp_path, capsys):
    folder = tmp_path / "shop" / "x"
    folder.mkdir(parents=True)
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    rows += ["u1\ti1\t5\t1", "u1\ti2\t1\t2", "u2\ti1\t4\t3"]
    (folder / "x.inter").write_text("\n".join(rows) + "\n")
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"error: {folder}: the valid split is empty" in err
    assert "3 or more events" in err


def test_version_and_top_level_help_list_every_option():
    from importlib.metadata import version

    done = subprocess.run(
        [sys.executable, "-m", "monolith_layers", "--version"], capture_output=True, text=True
    )
    assert (
        done.returncode == 0
        and done.stdout.strip() == f"monolith-layers {version('monolith-layers')}"
    )
    done = subprocess.run(
        [sys.executable, "-m", "monolith_layers", "--help"], capture_output=True, text=True
    )
    for option in ("--quick", "--resume", "--overwrite", "--split", "--format", "--max-len"):
        assert option in done.stdout, option


def test_native_build_is_its_own_step_before_training(tmp_path, capsys, monkeypatch):
    """A pending build runs before any bar, on its own line with its time."""
    calls = []
    monkeypatch.setattr(_native, "build_pending", lambda: not calls)

    def build():
        calls.append(1)
        return _native.kernels(announce=False), 12.4

    monkeypatch.setattr(_native, "build_native", build)
    data = _recbole_dir(tmp_path)
    args = ["train", "--data", str(data), "--model", "dien", "--epochs", "1", "--max-len", "6"]
    assert main(args + ["--embed-dim", "4", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert calls == [1]
    building = next(i for i, line in enumerate(out) if line.startswith("building the native"))
    assert "first use in this environment, needs a C++ compiler" in out[building]
    assert out[building + 1] == "  done in 12 s"
    assert any("dien" in line and "test AUC" in line for line in out[building + 2 :])


def test_build_kernels_command():
    done = subprocess.run(
        [sys.executable, "-m", "monolith_layers", "build-kernels"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "the native kernels are built:" in done.stdout or "done in" in done.stdout
    env = dict(os.environ, MONOLITH_LAYERS_NATIVE="0")
    done = subprocess.run(
        [sys.executable, "-m", "monolith_layers", "build-kernels"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2 and "switches the native kernels off" in done.stderr


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
    err = capsys.readouterr().err
    assert f"interrupted; the last complete epoch is saved in {out} (continue with --resume)" in err
    model = load_model(out)  # epoch 1's weights, complete
    assert model.config.encoder == "din"
    assert not list(out.glob(".*.tmp"))
    monkeypatch.undo()
    assert main(args + ["--out", str(out), "--resume", "--no-progress"]) == 0
    history = json.loads((out / "metrics.json").read_text())["models"]["din"]["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]


def test_ctrl_c_before_any_epoch_says_nothing_was_saved(tmp_path, capsys, monkeypatch):
    from monolith_layers.train import Trainer

    def interrupted(self, train, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_train_epoch", interrupted)
    data = _recbole_dir(tmp_path)
    args = ["--data", str(data), "--no-progress"]
    assert main(["train", *args, "--max-len", "6", "--out", str(tmp_path / "run")]) == 130
    assert "interrupted; no epoch had finished, nothing was saved" in capsys.readouterr().err
    assert main(["demo", *args, "--out", str(tmp_path / "demo")]) == 130
    assert "interrupted; no epoch had finished, nothing was saved" in capsys.readouterr().err
