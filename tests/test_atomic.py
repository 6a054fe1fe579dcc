"""Atomic writes leave outputs as readable as the umask allows (mkdtemp/mkstemp are private)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipeline.core.atomic import atomic_dir, atomic_file, write_json
from tests.test_pipeline import workdir  # noqa: F401 — the pipeline tests' scratch directory fixture


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_outputs_follow_the_umask(tmp_path, umask_022):
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "inner.txt").write_text("x")
    write_json(tmp_path / "facts.json", {"a": 1})
    with atomic_file(tmp_path / "page.html") as handle:
        handle.write("<p>")
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "facts.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "page.html").stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_output(tmp_path):
    write_json(tmp_path / "facts.json", {"a": 1})
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "facts.json") as handle:
        handle.write("half")
        raise RuntimeError("crash")
    assert (tmp_path / "facts.json").read_text().startswith("{")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["facts.json"]


@pytest.fixture
def umask_002():
    old = os.umask(0o002)  # a team's umask: group-writable; differs from the default 022
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_private_files_written_inside_an_output_are_widened(tmp_path, umask_002):
    """safetensors' save_file writes 0600 files; nested folders from mkdtemp are 0700."""
    import tempfile

    import torch
    from safetensors.torch import save_file

    with atomic_dir(tmp_path / "out") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp / "w.safetensors"))
        assert mode(tmp / "w.safetensors") == 0o600  # the writer's own choice: what this guards against
        nested = Path(tempfile.mkdtemp(dir=tmp))
        (nested / "tool").write_text("#!/bin/sh\n")
        os.chmod(nested / "tool", 0o700)
        (tmp / "link").symlink_to("w.safetensors")
    out = tmp_path / "out"
    assert mode(out) == 0o775 and mode(out / "w.safetensors") == 0o664
    assert mode(out / nested.name) == 0o775
    assert mode(out / nested.name / "tool") == 0o764  # bits only added: the owner may still run it
    assert (out / "link").is_symlink()


@pytest.mark.usefixtures("workdir", "umask_002")
def test_real_stage_outputs_are_readable_by_the_team():
    """The smoke stages as `dvc repro` runs them: every output directory, file, run log and
    curve comes out as the umask asks (before the fix, every *.safetensors was 0600)."""
    from tests.test_pipeline import ltsft, smoke_params, write_params

    write_params(smoke_params())
    for step in (("download",), ("prepare-model",), ("train-lang", "en", "--method", "lt-sft")):
        result = ltsft(*step)
        assert result.exit_code == 0, (step, result.output)
    outputs = [Path("models/base"), Path("diffs/lt-sft/lang/en"), Path("diffs/dense-composed/lang/en"),
               Path("runs"), Path("curves"), Path("data")]
    entries = [p for out in outputs for p in (out, *out.rglob("*"))]
    assert Path("diffs/lt-sft/lang/en/diff.safetensors") in entries
    assert Path("models/base/model.safetensors") in entries
    wrong = {str(p): oct(mode(p)) for p in entries if mode(p) != (0o775 if p.is_dir() else 0o664)}
    assert not wrong
