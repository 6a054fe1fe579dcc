"""Stage `import_published_{lang,task}@<name>`: the authors' released diffs, converted.

For the `lt-sft-published` method (paper preset): fetch ``pytorch_diff.bin`` from the
hub repo named in params (`published.lang_repo` / `published.task_repos`), or read it
from `published.local_root/<repo>/pytorch_diff.bin`, and convert it to our format with
pipeline/sources/published.py (no code from the file is ever run). Evaluation then composes them
exactly like our own diffs: the quickest check of our evaluation against the paper.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.sources.published import FILE, load_published, reorder_head, to_sparse_diff
from pipeline.tasks import task_for
from stages import layout
from pipeline.core.config import ConfigError, Params, UserError



def repo_for(params: Params, kind: str, name: str) -> str:
    published = params.published
    if kind == "lang":
        if not published.lang_repo:
            raise ConfigError("published.lang_repo: not set (only the paper presets name released diffs)")
        return published.lang_repo.format(code=published.codes.get(name, name))
    if name not in published.task_repos:
        raise ConfigError(f"published.task_repos.{name}: no released repo named for task {name!r}")
    return published.task_repos[name]


def fetch(params: Params, repo: str) -> Path:
    local_root = params.published.local_root
    if local_root:
        path = Path(local_root).expanduser() / repo / FILE
        if not path.is_file():
            raise UserError(f"{path}: not found (published.local_root copy of {repo})")
        return path
    from huggingface_hub import hf_hub_download

    from pipeline.sources.hub import HubError, check_reachable

    try:
        check_reachable()
        return Path(hf_hub_download(repo, FILE))
    except HubError as err:
        raise UserError(f"{repo}: {err}; or set published.local_root") from None
    except Exception as err:  # huggingface_hub raises many types; one line for the user
        raise UserError(f"{repo}/{FILE}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def run(params: Params, kind: str, name: str) -> None:
    if kind not in ("lang", "task"):
        raise ConfigError(f"kind must be lang or task, got {kind!r}")
    (params.language if kind == "lang" else params.task)(name)
    repo = repo_for(params, kind, name)
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
