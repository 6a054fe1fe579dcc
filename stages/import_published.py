"""Stages `import_published_{lang,task,adapter}@<name>`: the authors' released files, converted.

For `lt-sft-published` (paper presets): fetch ``pytorch_diff.bin`` from the hub repo named in
params (`published.lang_repo` / `published.task_repos`), or read it from
`published.local_root/<repo>/pytorch_diff.bin`, and convert it to our format with
pipeline/sources/published.py (no code from the file is ever run). Evaluation then composes them
exactly like our own diffs: the quickest check of our evaluation against the paper.

For `madx-published`: fetch a released MAD-X language adapter (`published.adapter_repo` /
`published.adapter_repos`: its ``adapter_config.json`` and ``adapter.safetensors`` or
``pytorch_adapter.bin``, or the same files under `published.local_root/<repo>/`) and convert it
with pipeline/sources/adapterhub.py into our adapter format.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.sources.adapterhub import BIN_FILE, CONFIG_FILE, SAFETENSORS_FILE, import_adapter
from pipeline.sources.published import FILE, load_published, reorder_head, to_sparse_diff
from pipeline.tasks import task_for
from stages import layout
from pipeline.core.config import ConfigError, Params, UserError

KINDS = ("lang", "task", "adapter")


def repo_for(params: Params, kind: str, name: str) -> str:
    published = params.published
    if kind == "adapter":
        if name in published.adapter_repos:
            return published.adapter_repos[name]
        if not published.adapter_repo:
            raise ConfigError(f"published.adapter_repo: not set and published.adapter_repos has no {name!r} "
                              "(only the paper presets name released adapters)")
        return published.adapter_repo.format(code=name)
    if kind == "lang":
        if not published.lang_repo:
            raise ConfigError("published.lang_repo: not set (only the paper presets name released diffs)")
        return published.lang_repo.format(code=published.codes.get(name, name))
    if name not in published.task_repos:
        raise ConfigError(f"published.task_repos.{name}: no released repo named for task {name!r}")
    return published.task_repos[name]


def fetch(params: Params, repo: str, filename: str = FILE) -> Path:
    """``filename`` of ``repo``: from published.local_root/<repo>/ if set, else the hub."""
    local_root = params.published.local_root
    if local_root:
        path = Path(local_root).expanduser() / repo / filename
        if not path.is_file():
            raise UserError(f"{path}: not found (published.local_root copy of {repo})")
        return path
    from huggingface_hub import hf_hub_download

    from pipeline.sources.hub import HubError, check_reachable

    try:
        check_reachable()
        return Path(hf_hub_download(repo, filename))
    except HubError as err:
        raise UserError(f"{repo}: {err}; or set published.local_root") from None
    except Exception as err:  # huggingface_hub raises many types; one line for the user
        raise UserError(f"{repo}/{filename}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def fetch_adapter(params: Params, repo: str) -> Path:
    """The directory holding a released adapter's config and its weights (either file)."""
    config = fetch(params, repo, CONFIG_FILE)
    try:
        fetch(params, repo, SAFETENSORS_FILE)
    except UserError:  # most released adapters have only the pickled state dict
        fetch(params, repo, BIN_FILE)
    return config.parent


def run(params: Params, kind: str, name: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    (params.task if kind == "task" else params.language)(name)
    repo = repo_for(params, kind, name)
    if kind == "adapter":
        run_adapter(params, name, repo)
        return
    path = fetch(params, repo)
    out = layout.COMPONENTS.component("lt-sft-published", kind, name)
    diff = to_sparse_diff(load_published(path), str(path), base_model=params.model.name)
    labels = params.published.head_labels.get(name)
    if kind == "task" and labels:
        reorder_head(diff, list(labels), list(task_for(params.task(name)).labels))  # e.g. dp: by its head
    diff.provenance.update({"repo": repo, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                            "kind": kind, "trainable_parameters": diff.nnz + sum(t.numel() for t in diff.dense.values())})
    diff.save(out)
    print(f"{out}: imported {repo}, nnz {diff.nnz:,}, dense {sorted(diff.dense)}")


def run_adapter(params: Params, lang: str, repo: str) -> None:
    """A released language adapter as madx-published's language component for ``lang``."""
    directory = fetch_adapter(params, repo)
    out = layout.COMPONENTS.component("madx-published", "lang", lang)
    base = params.model.name if params.model.source == "hub" else None  # a hub id names what it was trained on
    meta = import_adapter(directory, out, params.madx.language.reduction_factor, base, repo=repo, kind="lang")
    print(f"{out}: imported {repo}, {meta['trainable_parameters']:,} parameters, {meta['non_linearity']}")
