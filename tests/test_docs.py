"""The README's example must run as printed."""

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_readme_example_runs():
    text = README.read_text()
    section = text.split("## Example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README example", "exec"), namespace)
    assert namespace["logits"].shape == (32, 1)
    assert namespace["loss"].requires_grad


def test_readme_python_ctr_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    section = text.split("## CTR models from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README CTR example", "exec"), namespace)
    assert 0.0 <= namespace["metrics"]["auc"] <= 1.0
    assert namespace["model"].config.name == "dien+senet"
    assert (tmp_path / "runs" / "dien" / "model.safetensors").exists()


def test_migration_guide_example_runs(monkeypatch, capsys):
    from parity import fixture_dir

    guide = (README.parent / "docs" / "migrating-from-monolith.md").read_text()
    code = re.search(r"```python\n(.*?)```", guide, re.S).group(1)
    code = code.replace('shared = "../shared/parity"', f'shared = "{fixture_dir()}"')
    exec(compile(code, "migration guide example", "exec"), {})
    assert "['ema_decay', 'global_step']" in capsys.readouterr().out
