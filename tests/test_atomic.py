"""Atomic writes leave outputs as readable as the umask allows (mkdtemp/mkstemp are private)."""

from __future__ import annotations

import os
import stat

import pytest

from pipeline.core.atomic import atomic_dir, atomic_file, write_json


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
