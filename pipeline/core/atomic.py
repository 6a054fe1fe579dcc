"""Atomic writes: a reader (or a crashed run) never sees a half-written output.

Everything is written into a temporary sibling first and moved into place with
``os.replace``, which is atomic on POSIX when source and target share a filesystem.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _readable_as_umask_allows(path: Path, directory: bool) -> None:
    """mkdtemp/mkstemp create private (0700/0600) entries; give the finished output the
    permissions a plain mkdir/open would have had, so the team can read it (umask respected)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _share_contents(root: Path) -> None:
    """Widen everything inside a finished output to at least what the umask allows.

    Writers other than ours create private files too: safetensors' ``save_file`` (and so
    ``save_pretrained``) writes through a 0600 temporary file, which left every
    ``diff.safetensors`` and ``model.safetensors`` unreadable to the rest of a team on a
    shared filesystem. Bits are only added (an executable stays executable); links are skipped."""
    wanted = {True: 0o777 & ~_umask(), False: 0o666 & ~_umask()}
    for folder, dirs, files in os.walk(root):
        for name, directory in [(d, True) for d in dirs] + [(f, False) for f in files]:
            entry = os.path.join(folder, name)
            mode = os.lstat(entry).st_mode
            if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) | wanted[directory] != stat.S_IMODE(mode):
                os.chmod(entry, stat.S_IMODE(mode) | wanted[directory])


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``target`` on success.

    On an exception the temporary directory is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _share_contents(tmp)
    _readable_as_umask_allows(tmp, directory=True)
    # A directory cannot be os.replace'd over a non-empty one: move the old one aside first.
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


@contextlib.contextmanager
def atomic_file(target: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of ``target`` for writing; rename it over ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    encoding = None if "b" in mode else "utf-8"
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
    except BaseException:
        os.unlink(tmp_name)
        raise
    _readable_as_umask_allows(Path(tmp_name), directory=False)
    os.replace(tmp_name, target)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically (stable bytes for DVC hashing)."""
    with atomic_file(path) as handle:
        json.dump(obj, handle, indent=2, sort_keys=True)
        handle.write("\n")
