"""Every shell command block of the README, run as a user runs it (progress bars
on, the console script, torchrun), each block in a fresh folder.

Only the data shrinks: `--data X` (or no --data) becomes a small RecBole
folder, and `train` gets a small history and embedding, so that each command
takes seconds. `pip install` lines are checked, not run: the extras they name
must exist. `pytest` is this suite itself.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")
from distributed import free_port
from test_cli import _recbole_dir

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
# A small batch: 20+ steps per rank and epoch, so per-step display code (the loss
# shown every 20 steps) runs on every rank.
TINY_TRAIN = ["--max-len", "6", "--embed-dim", "4", "--batch-size", "16"]
TINY_ROWS = 3000
MY_CONFIG = {
    "model": {"encoder": "dmr", "embed_dim": 4},
    "data": {"max_len": 6},
    "train": {"epochs": 1},
}

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)


def commands(block: str) -> list[list[str]]:
    """The block's commands as argument lists: comments dropped, `&&` split."""
    found = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            found.append(words[:cut])
            words = words[cut + 1 :]
    return found


def _extras() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(meta["project"]["optional-dependencies"])


def _with_tiny_data(args: list[str], data: Path) -> list[str]:
    """`--data X` -> the small folder; demo and train get it when they name none.
    A sample log (`train --schema`) keeps its --data: an earlier command of the
    block wrote it."""
    args = list(args)
    if "--schema" in args:
        pass
    elif "--data" in args:
        args[args.index("--data") + 1] = str(data)
    elif args and args[0] in ("demo", "train") and "--config" not in args:
        args += ["--data", str(data)]
    if args and args[0] == "train":
        args += TINY_TRAIN
    return args


def _console_script() -> str:
    script = Path(sys.executable).with_name("monolith-layers")
    return str(script) if script.exists() else shutil.which("monolith-layers") or "monolith-layers"


def _environment_prefix(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """``VAR=value ... command``: the variables, and the command."""
    assignments = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        name, value = words[0].split("=", 1)
        assignments[name] = value
        words = words[1:]
    return assignments, words


def runnable(words: list[str], data: Path) -> list[str] | None:
    """The command to run for a README command; None for one that is only checked."""
    head = words[0]
    if head == "pip":
        for word in words:
            extra = re.fullmatch(r"\.\[(\w+)\]", word)
            if extra:
                assert extra.group(1) in _extras(), f"README names a missing extra: {word}"
        return None
    if head == "pytest":
        return None
    if head == "monolith-layers":
        return [_console_script(), *_with_tiny_data(words[1:], data)]
    if head == "torchrun":
        module = words.index("-m")
        launcher = [sys.executable, "-m", "torch.distributed.run", *words[1:module]]
        launcher += ["--master_port", str(free_port())]
        return [*launcher, *words[module : module + 2], *_with_tiny_data(words[module + 2 :], data)]
    if head == "python" and words[1:3] == ["-m", "monolith_layers"]:
        return [sys.executable, *words[1:3], *_with_tiny_data(words[3:], data)]
    if head == "python" and words[1].endswith(".py"):
        args = list(words[2:])
        if "--rows" in args:  # a generated sample log: small enough for seconds of training
            args[args.index("--rows") + 1] = str(TINY_ROWS)
        return [sys.executable, str(ROOT / words[1]), *args]
    raise AssertionError(f"the README runs a command this test does not know: {words}")


def test_every_readme_block_is_recognised():
    blocks = bash_blocks()
    assert len(blocks) >= 4
    heads = {_environment_prefix(words)[1][0] for block in blocks for words in commands(block)}
    assert {"monolith-layers", "torchrun", "pip", "python"} <= heads


@pytest.mark.parametrize("index", range(len(bash_blocks())))
def test_readme_block_runs(tmp_path, index):
    block = bash_blocks()[index]
    data = _recbole_dir(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "my.json").write_text(json.dumps(MY_CONFIG))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MONOLITH_LAYERS_NATIVE", None)
    for words in commands(block):
        assignments, words = _environment_prefix(words)
        command = runnable(words, data)
        if command is None:
            continue
        done = subprocess.run(
            command,
            cwd=work,
            capture_output=True,
            text=True,
            env={**env, **assignments},
            timeout=600,
        )
        shown = " ".join(words)
        assert done.returncode == 0, f"{shown}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, f"{shown}\n{done.stderr[-3000:]}"
