"""Identical inputs give byte-identical outputs: re-running a stage leaves dvc.lock as it was.

Run facts (wall time, date, host, git revision) live in run logs under runs/, never in an
output, so DVC sees that a forced re-run produced the same thing (and re-runs nothing
downstream, and `dvc exp diff` shows no noise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages import dvc_yaml

REPO = Path(__file__).resolve().parents[1]


def dvc(*args: str, cwd: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(cwd))
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.slow
def test_a_forced_rerun_leaves_dvc_lock_unchanged(tmp_path):
    (tmp_path / "dvc.yaml").write_text(dvc_yaml.render(None))  # the smoke preset's: every method
    for code in ("pipeline", "stages"):  # the stages' code dependencies (and the code that runs)
        shutil.copytree(REPO / code, tmp_path / code, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tests" / "fixtures" / "smoke", tmp_path / "tests" / "fixtures" / "smoke")
    params = yaml.safe_load((REPO / "presets" / "smoke.yaml").read_text())
    params["lang_sft"]["phase1"] = params["lang_sft"]["phase2"] = {"steps": 3}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    dvc("init", "--no-scm", "-q", cwd=tmp_path)
    stage = "train_lang_lt_sft@xx"
    dvc("repro", "-q", stage, cwd=tmp_path)
    first = (tmp_path / "dvc.lock").read_text()
    log = tmp_path / "runs" / "diffs" / "lt-sft" / "lang" / "xx.json"
    assert log.is_file() and "wall_seconds" in log.read_text()  # the run facts went here…
    assert "wall_seconds" not in (tmp_path / "diffs" / "lt-sft" / "lang" / "xx" / "diff.json").read_text()  # …not here
    dvc("repro", "-q", "--force", "--single-item", stage, cwd=tmp_path)
    assert (tmp_path / "dvc.lock").read_text() == first
