"""Sharing through a DVC remote (README: "Share diffs and results with DVC"): a diff pushed from
one clone and pulled into a fresh one is byte-identical; the project ships with no remote."""

from __future__ import annotations

import configparser
import filecmp
import os
import subprocess
import sys
from pathlib import Path

import torch

from pipeline.formats.sparse_diff import SparseDiff

REPO = Path(__file__).resolve().parents[1]
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}


def run(*cmd: str, cwd: Path) -> str:
    done = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **GIT_ENV, "DVC_NO_ANALYTICS": "1"})
    assert done.returncode == 0, (cmd, done.stdout, done.stderr)
    return done.stdout


def dvc(*args: str, cwd: Path) -> str:
    return run(sys.executable, "-m", "dvc", *args, cwd=cwd)


def test_the_project_ships_without_a_remote():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert not [s for s in config.sections() if s.startswith(("'remote", "remote"))]
    assert not config.has_option("core", "remote")


def test_diff_pushed_from_one_clone_is_pulled_identical_into_another(tmp_path):
    origin, remote = tmp_path / "origin", tmp_path / "remote"
    origin.mkdir()
    run("git", "init", "-q", cwd=origin)
    dvc("init", "-q", cwd=origin)
    theta0 = {"w": torch.zeros(8, 8)}
    diff = SparseDiff.from_masks(theta0, {"w": torch.tensor([3, 17, 40])}, {"w": torch.tensor([0.5, -1.0, 2.0])},
                                 dense={"head": torch.arange(4.0)}, k=3, provenance={"method": "lt-sft"})
    diff.save(origin / "diffs" / "lt-sft" / "lang" / "en")
    dvc("add", "-q", "diffs", cwd=origin)
    dvc("remote", "add", "-d", "team", str(remote), cwd=origin)  # the README's shared-folder remote
    run("git", "add", "-A", cwd=origin)
    run("git", "commit", "-qm", "diffs", cwd=origin)
    dvc("push", "-q", cwd=origin)

    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path)
    assert not (clone / "diffs").exists()  # git carries the .dvc pointer, not the data
    dvc("pull", "-q", cwd=clone)
    for name in ("diff.json", "diff.safetensors"):
        a, b = (root / "diffs/lt-sft/lang/en" / name for root in (origin, clone))
        assert filecmp.cmp(a, b, shallow=False), name
    pulled = SparseDiff.load(clone / "diffs/lt-sft/lang/en")  # checksums verified on load
    assert torch.equal(pulled.indices["w"], diff.indices["w"]) and torch.equal(pulled.dense["head"], diff.dense["head"])
