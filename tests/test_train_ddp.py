"""Data-parallel training: two gloo processes on CPU, and the CLI under torchrun."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from distributed import free_port, spawn, tiny_model_config

from monolith_layers.cli import main
from monolith_layers.data import DataConfig, SyntheticConfig, build_datasets, generate
from monolith_layers.models import CTRModel
from monolith_layers.train import TrainConfig, Trainer, load_model

pytest.importorskip("sklearn")

USERS = 151  # an odd test split: the world size does not divide it


def _setup():
    log = generate(SyntheticConfig(num_users=USERS, max_events=16, seed=4))
    splits = build_datasets(log, DataConfig(max_len=6))
    return splits, tiny_model_config(log)


def _worker(rank, world, folder):
    torch.set_num_threads(1)
    (train, valid, test), config = _setup()
    torch.manual_seed(0)
    model = CTRModel(config)
    train_config = TrainConfig(epochs=3, batch_size=32, lr=1e-2, patience=5, progress=False)
    trainer = Trainer(model, train_config, os.path.join(folder, "run"))
    result = trainer.fit(train, valid)
    metrics = trainer.evaluate(test)
    torch.save(
        {
            "state": model.state_dict(),
            "metrics": metrics,
            "losses": [r.train_loss for r in result.history],
        },
        os.path.join(folder, f"rank{rank}.pt"),
    )


def test_two_process_training_agrees_with_itself_and_with_one_process(tmp_path):
    spawn(_worker, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key  # identical on every rank
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    losses = ranks[0]["losses"]
    assert losses[-1] < losses[0]
    # Every test sample scored exactly once across the two ranks.
    (_, _, test), _ = _setup()
    assert ranks[0]["metrics"]["samples"] == len(test) == USERS
    # Only rank 0 wrote, and one process evaluating that checkpoint agrees.
    assert not list(tmp_path.glob("run/*.tmp"))
    single = Trainer(load_model(tmp_path / "run"), TrainConfig(progress=False)).evaluate(test)
    # The scores come back in the dataset's order: the same sums, the same metrics.
    assert single == ranks[0]["metrics"]


def _torchrun_train(data, out, train_args, launcher=()) -> list[str]:
    """``torchrun --nproc_per_node=2 ... -m monolith_layers train`` of a small DIN."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        *launcher,
        "--master_port",
        str(free_port()),
        "-m",
        "monolith_layers",
        "train",
        "--data",
        str(data),
        "--model",
        "din",
        "--max-len",
        "6",
        "--embed-dim",
        "4",
        "--out",
        str(out),
        *train_args,
    ]


def test_cli_under_torchrun(tmp_path):
    from test_cli import _recbole_dir

    data = _recbole_dir(tmp_path, users=61)
    out = tmp_path / "run"
    command = _torchrun_train(data, out, ["--epochs", "2", "--no-progress"])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("data parallel over 2 processes") == 1  # rank 0 speaks alone
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["world_size"] == 2
    assert main(["evaluate", str(out), "--no-progress"]) == 0


def test_torchrun_variables_without_a_rendezvous_are_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["train", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "WORLD_SIZE=2 but ['RANK', 'MASTER_ADDR', 'MASTER_PORT'] are not set" in err
    assert "torchrun" in err and not (tmp_path / "x").exists()


def test_subset_keeps_histories():
    (train, _, _), _ = _setup()
    rows = np.arange(1, len(train), 2)
    part = train.subset(rows)
    whole = train.__getitems__(rows[:5])
    mine = part.__getitems__(np.arange(5))
    for key in whole:
        assert torch.equal(whole[key], mine[key]), key


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            # The name field may hold spaces; the parent id follows its closing ')'.
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds torchrun's workers through /proc")
def test_a_killed_rank_is_restarted_and_the_run_resumes(tmp_path):
    """torchrun --max-restarts=1, one rank SIGKILLed in epoch 2: the restarted
    group resumes from the last complete epoch by itself and finishes the run."""
    import signal
    import time

    from test_cli import _recbole_dir

    data = _recbole_dir(tmp_path, users=800)
    out = tmp_path / "run"
    # Progress bars on, as users run it.
    command = _torchrun_train(
        data, out, ["--epochs", "3", "--batch-size", "16"], launcher=["--max-restarts=1"]
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # Files, not pipes: nobody reads a pipe while the test waits, and a full one
    # would stall the rank drawing its progress bar.
    logs = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(logs[0], "w") as stdout_file, open(logs[1], "w") as stderr_file:
        launcher = subprocess.Popen(command, stdout=stdout_file, stderr=stderr_file, env=env)
        try:
            deadline = time.monotonic() + 240
            while not (out / "trainer_state.pt").exists():
                assert launcher.poll() is None, logs[1].read_text()[-2000:]
                assert time.monotonic() < deadline, "epoch 1 never finished"
                time.sleep(0.1)
            time.sleep(0.5)  # into epoch 2
            workers = _children(launcher.pid)
            assert len(workers) == 2, workers
            os.kill(workers[-1], signal.SIGKILL)
            launcher.wait(timeout=300)
        finally:
            if launcher.poll() is None:
                launcher.kill()
    stdout, stderr = logs[0].read_text(), logs[1].read_text()
    assert launcher.returncode == 0, stderr[-3000:]
    assert f"restarted by torchrun: resuming the run saved in {out}" in stdout
    history = json.loads((out / "metrics.json").read_text())["models"]["din"]["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    model = load_model(out)
    assert model.config.encoder == "din"


def test_a_sample_log_under_torchrun_evaluates_as_one_process(tmp_path, capsys):
    """Data parallel (no --shard) on a Parquet log: each rank streams its own rows,
    and the gathered test scores equal one process's evaluation of the saved model."""
    from sample_logs import write_parquet, write_schema

    log = write_parquet(tmp_path / "log.parquet", 500)
    schema = write_schema(tmp_path / "schema.json")
    out = tmp_path / "run"
    command = _torchrun_train(log, out, ["--schema", str(schema), "--epochs", "1"])
    command[command.index("--max-len") : command.index("--max-len") + 2] = []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    saved = json.loads((out / "metrics.json").read_text())["models"]["din"]
    assert main(["evaluate", str(out), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["auc"] == saved["test_auc"]
