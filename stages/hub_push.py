"""`ltsft diff push` / `ltsft adapter push`: a component directory plus a model card, uploaded
to the Hugging Face Hub (or, with --local-dir, written as exactly the folder that would be).

The card's facts come from where the pipeline keeps them: the component's own JSON (method,
kind, language or task, K, budget params, dev metrics before and after: runs.provenance),
`ltsft diff info` (entries, density, storage), the run log beside the outputs
(layout.run_log: wall time, hardware, git revision, params hash) and, when that params hash
is the current params.yaml's, params.yaml (model and data source, language names). Whatever is
missing is said to be unknown on the card, never guessed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.atomic import atomic_dir
from pipeline.core.errors import LtsftError
from pipeline.formats import hub_repo
from pipeline.formats.checked import read_json
from pipeline.formats.model_card import README, Card, render
from stages import layout

PROJECT = "ltsft (LT-SFT reproduction: composable sparse fine-tuning, Ansell et al., ACL 2022)"


@dataclass
class Sources:
    """What is known about a component, from each place that records it."""

    path: Path
    provenance: dict[str, Any]
    run_log: dict[str, Any] | None = None
    params: dict[str, Any] | None = None  # params.yaml, only when the run log says it made the component
    unknown: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str(self.provenance.get("kind", ""))


def _relative(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def gather(path: Path, provenance: dict[str, Any], params_file: Path = layout.PARAMS) -> Sources:
    """The provenance plus the run log and (if it is the same run's) params.yaml."""
    from pipeline.core.runs import params_hash

    found = Sources(path, provenance)
    log_path = layout.run_log(_relative(path))
    if log_path.is_file():
        found.run_log = read_json(log_path, LtsftError)
    else:
        found.unknown.append(f"wall time, hardware and git revision (no run log {log_path})")
    if found.run_log and params_file.is_file():
        raw = yaml.safe_load(params_file.read_text(encoding="utf-8"))
        if isinstance(raw, dict) and params_hash(raw) == found.run_log.get("params_hash"):
            found.params = raw
    if found.params is None:
        found.unknown.append("the data source and model source (params.yaml is not the one the run log records)")
    return found


# ----------------------------------------------------------------------------- shared facts
def _language(sources: Sources) -> str | None:
    prov = sources.provenance
    return prov.get("lang") or prov.get("source_lang")


def _language_words(code: str | None, sources: Sources) -> str:
    if not code:
        return "an unrecorded language"
    name = ((sources.params or {}).get("languages") or {}).get(code, {}) or {}
    return f"{name['name']} ({code})" if isinstance(name, dict) and name.get("name") else code


def _what(sources: Sources) -> str:
    """The component in words: a language component, or a task component and its source language."""
    prov = sources.provenance
    if sources.kind == "lang" or (prov.get("lang") and not prov.get("task")):
        return f"language component for {_language_words(prov.get('lang'), sources)}, trained by masked language modelling on raw text"
    if prov.get("task"):
        source = _language_words(prov.get("source_lang"), sources)
        return f"task component for {prov['task']}, trained on {source} over that language's component"
    if "composed_of" in prov:
        return f"composition of {len(prov['composed_of'])} components (their sum)"
    if prov.get("imported_from"):
        return f"component imported from {prov['imported_from']}"
    return "component of unrecorded kind"


def _method_words(method: str | None) -> str:
    from pipeline.methods import METHODS

    if not method:
        return "an unrecorded method"
    return f"`{method}` ({METHODS[method].summary})" if method in METHODS else f"`{method}`"


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(tree, dict):
        return [row for key in sorted(tree) for row in _flatten(tree[key], f"{prefix}{key}.")]
    return [(prefix.rstrip("."), tree if isinstance(tree, str) else json.dumps(tree))]


def _budget(sources: Sources) -> list[tuple[str, str]]:
    prov, rows = sources.provenance, []
    if "train_examples" in prov:
        rows.append(("training examples", f"{prov['train_examples']:,}"))
    if "trainable_parameters" in prov:
        rows.append(("trained parameters", f"{prov['trainable_parameters']:,}"))
    rows += [(f"`{key}`", value) for key, value in _flatten(prov.get("params") or {})]
    for key in ("preset", "seed", "precision", "world_size"):
        if key in prov:
            rows.append((key, str(prov[key])))
    log = sources.run_log or {}
    if "wall_seconds" in log:
        rows.append(("wall time", f"{log['wall_seconds']} s on {log.get('hardware', 'unrecorded hardware')}"))
    for key in ("finished", "git_revision"):
        if key in log:
            rows.append((key.replace("_", " "), str(log[key])))
    if not prov.get("params"):
        sources.unknown.append("the training budget (steps, batch size, learning rate)")
    return rows


def _metrics(sources: Sources) -> dict[str, tuple[float | None, float | None]]:
    found = sources.provenance.get("dev_metrics") or {}
    before, after = found.get("before") or {}, found.get("after") or {}
    if not after:
        sources.unknown.append("dev metrics")
    elif not before:
        sources.unknown.append("dev metrics before training (a task head starts random: not scored)")
    return {name: (before.get(name), after.get(name)) for name in sorted(set(before) | set(after))}


def _commands(sources: Sources) -> list[str]:
    """The commands that make the component again: the stage as DVC runs it and by hand."""
    from stages.dvc_yaml import _ident

    prov = sources.provenance
    method = prov.get("method")
    lines = [f"ltsft preset {prov['preset']}   # the params it was trained with"] if prov.get("preset") else []
    if method and prov.get("task") and prov.get("kind", "task") == "task":
        lines += [f"dvc repro train_task_{_ident(method)}@{prov['task']}   # or by hand, after its inputs:",
                  f"ltsft train-task {prov['task']} --method {method}"]
    elif method and prov.get("lang") and "imported_from" not in prov:
        lines += [f"dvc repro train_lang_{_ident(method)}@{prov['lang']}   # or by hand, after its inputs:",
                  f"ltsft train-lang {prov['lang']} --method {method}"]
    elif prov.get("imported_from"):
        lines = [f"# imported from {prov['imported_from']} (ltsft import-published, ltsft diff/adapter import)"]
    elif "composed_of" in prov:
        lines = ["# a sum of components (ltsft diff compose); their provenance is in diff.json"]
    if not lines:
        sources.unknown.append("the command that made it")
    return lines


def _hub_base(base_model: str | None, sources: Sources) -> str | None:
    """The base model as the Hub's ``base_model`` metadata, only when it is a Hub model id:
    a locally built base (the smoke preset's tiny BERT, the demo's rebuilt e5) is no Hub model."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not base_model:
        return None
    source = ((sources.params or {}).get("model") or {}).get("source")
    if source not in (None, "hub"):
        sources.unknown.append(f"a Hub id for the base model: `{base_model}` is built locally (model.source: {source}); "
                               f"`ltsft prepare-model` writes it to {layout.BASE_MODEL}")
        return None
    try:
        validate_repo_id(base_model)
    except HFValidationError:
        sources.unknown.append(f"a Hub id for the base model (`{base_model}` is none; push with --base-model)")
        return None
    if source is None:
        sources.unknown.append(f"whether `{base_model}` is a Hub model id (taken as one)")
    return base_model


# ----------------------------------------------------------------------------- per format
def diff_card(path: Path, repo_id: str, datasets: Sequence[str] = (), base_model: str | None = None) -> Card:
    """The card of a sparse diff directory (checked: a damaged diff is refused, not pushed)."""
    from pipeline.formats.sparse_diff import read_meta
    from stages.diff_info import info

    facts = info(path)
    sources = gather(path, read_meta(path)["provenance"])
    base = base_model or facts["base_model"] or None
    hub_base = _hub_base(base, sources)
    load_from = hub_base or (str(layout.BASE_MODEL) if base else "BASE_MODEL")
    head = facts["dense_tensors"]
    task = sources.provenance.get("task")
    size = [("K (entries selected)", f"{facts['k']:,}" if facts["k"] is not None else "not recorded"),
            ("entries stored", f"{facts['nnz']:,} of {facts['maskable_entries']:,} maskable"),
            ("density", f"{facts['density']:.4%}"),
            ("dense tensors (stored whole)", ", ".join(f"`{n}`" for n in head) or "none"),
            ("base fingerprint", f"`{facts['base_fingerprint']}`"),
            ("files", f"{facts['file_bytes']:,} bytes; {facts['sparse_bytes_per_entry']:.2f} bytes per sparse entry")]
    summary = (f"A sparse fine-tuning diff φ for `{base or 'an unrecorded base model'}`: the {_what(sources)}, "
               f"made with {_method_words(sources.provenance.get('method'))}. θ = θ0 + φ changes "
               f"{facts['nnz']:,} of the base model's {facts['maskable_entries']:,} maskable weights; diffs are "
               "composable (a target language's diff plus a task diff gives zero-shot cross-lingual transfer). "
               f"Written by {PROJECT}; `SparseDiff.from_pretrained` checks the files' sha256 and refuses a "
               "base model with another fingerprint.")
    if task and head:
        model_line = f'model = get_task("{task}").build_model("{load_from}", seed=0)  # θ0 with a {task} head'
        usage = ["from pipeline.formats.sparse_diff import SparseDiff", "from pipeline.tasks import get_task",
                 model_line, f'diff = SparseDiff.from_pretrained("{repo_id}")',
                 "diff.apply(model, with_dense=True)  # θ0 + φ and the trained head; add a language diff likewise"]
    else:
        usage = ["from pipeline.formats.sparse_diff import SparseDiff", "from transformers import AutoModelForMaskedLM",
                 f'model = AutoModelForMaskedLM.from_pretrained("{load_from}")',
                 f'diff = SparseDiff.from_pretrained("{repo_id}")',
                 "diff.apply(model)  # θ ← θ0 + φ in place; diff.revert(model) undoes it"]
    return _card(sources, path, "diff", size, summary, "\n".join(usage), datasets, hub_base,
                 ["sparse-fine-tuning", "lt-sft" if "sft" in str(sources.provenance.get("method")) else "sparse-diff"])


def _adapter_dir(path: Path) -> Path:
    from pipeline.formats.adapter import META_FILE

    return path if (path / META_FILE).is_file() else path / "adapter"


def adapter_card(path: Path, repo_id: str, datasets: Sequence[str] = (), base_model: str | None = None) -> Card:
    """The card of an adapter directory, or of a MAD-X task component (adapter/ + head/)."""
    from pipeline.formats import adapter as fmt
    from pipeline.formats.checked import read_tensors
    from pipeline.formats.sparse_diff import SparseDiff

    where = _adapter_dir(path)
    meta = fmt.read_adapter_meta(where)
    name = fmt.TENSORS_FILE if meta["version"] == fmt.FORMAT_VERSION else fmt.V2_TENSORS_FILE
    read_tensors(where / name, meta, fmt.META_FILE, fmt.AdapterError)  # a damaged adapter is refused, not pushed
    head = SparseDiff.load(path / "head") if (path / "head").is_dir() else None
    sources = gather(path, {**meta, "kind": (head.provenance if head else meta).get("kind", meta.get("kind"))})
    # adapter.json names no base model (our own adapters): the run's params.yaml does.
    base = (base_model or meta.get("base_model") or (head.base_model if head else "")
            or ((sources.params or {}).get("model") or {}).get("name") or None)
    if not base:
        sources.unknown.append("the base model (adapter.json names none)")
    hub_base = _hub_base(base, sources)
    load_from = hub_base or (str(layout.BASE_MODEL) if base else "BASE_MODEL")
    language = meta.get("kind") != "task"
    rf = meta.get("reduction_factor")
    size = [("parameters", f"{meta.get('parameters', 0):,}"), ("layers", str(meta.get("num_layers"))),
            ("hidden size", str(meta.get("hidden_size"))), ("reduction factor", str(rf)),
            ("non-linearity", str(meta.get("non_linearity"))),
            ("task head", ", ".join(f"`{n}`" for n in sorted(head.dense)) if head else "none")]
    summary = (f"A MAD-X {'language' if language else 'task'} adapter for `{base or 'an unrecorded base model'}`: the "
               f"{_what(sources)}, made with {_method_words(meta.get('method'))}. Written by {PROJECT}; "
               "`load_adapter_pretrained` checks the files' sha256 and the adapter's architecture before loading.")
    attribute = "language" if language else "task"
    rfs = f"language_rf={rf}, task_rf=None" if language else f"language_rf=None, task_rf={rf}"
    usage = ["from transformers import AutoModelForMaskedLM",
             "from pipeline.formats.adapter import load_adapter_pretrained",
             "from pipeline.methods.madx.adapters import add_madx",
             f'model = AutoModelForMaskedLM.from_pretrained("{load_from}")',
             f'load_adapter_pretrained("{repo_id}", add_madx(model, {rfs}).{attribute})']
    return _card(sources, path, "adapter", size, summary, "\n".join(usage), datasets, hub_base,
                 ["adapter", "mad-x"])


def _card(sources: Sources, path: Path, noun: str, size: list[tuple[str, str]], summary: str, usage: str,
          datasets: Sequence[str], base: str | None, tags: list[str]) -> Card:
    prov = sources.provenance
    if prov.get("task"):
        title_what = f"{prov.get('method') or 'ltsft'} task {noun}: {prov['task']} (trained on {prov.get('source_lang', '?')})"
    elif _language(sources):
        title_what = f"{prov.get('method') or 'ltsft'} language {noun}: {_language_words(_language(sources), sources)}"
    else:
        title_what = f"{prov.get('method') or 'ltsft'} {noun}: {path.name}"
    data = (sources.params or {}).get("data") or {}
    if data:
        summary += f" Training data: `data.source: {data.get('source')}` in params.yaml."
    if not datasets:
        sources.unknown.append("the training data as Hub dataset ids (push with --dataset to name them)")
    extra = [t for t in (prov.get("method"), prov.get("task"), {"lang": "language", "task": "task"}.get(sources.kind))
             if t]
    budget, metrics, commands = _budget(sources), _metrics(sources), _commands(sources)
    language = _language(sources)
    return Card(title=title_what, summary=summary, usage=usage, base_model=base,
                languages=[language] if language else [], datasets=list(datasets),
                tags=[hub_repo.LIBRARY_NAME, *tags, *extra], size=size, budget=budget, metrics=metrics,
                commands=commands, unknown=list(dict.fromkeys(sources.unknown)))


# ----------------------------------------------------------------------------- the folder and the push
CARDS = {"diff": diff_card, "adapter": adapter_card}


def _check_kind(path: Path, kind: str) -> None:
    from pipeline.formats.adapter import META_FILE as ADAPTER_META
    from pipeline.formats.sparse_diff import META_FILE as DIFF_META

    if not path.is_dir():
        raise LtsftError(f"{path}: not a directory")
    is_adapter = (path / ADAPTER_META).is_file() or (path / "adapter" / ADAPTER_META).is_file()
    if kind == "diff" and not (path / DIFF_META).is_file():
        raise LtsftError(f"{path}: no {DIFF_META} (not a diff directory{'; an adapter: ltsft adapter push' if is_adapter else ''})")
    if kind == "adapter" and not is_adapter:
        raise LtsftError(f"{path}: no {ADAPTER_META} nor adapter/{ADAPTER_META} (not an adapter directory)")


def write_folder(path: Path, kind: str, repo_id: str, out: Path, datasets: Sequence[str] = (),
                 base_model: str | None = None) -> Card:
    """Write ``out``: the component's files as they are, plus README.md (the card); atomically."""
    _check_kind(path, kind)
    card = CARDS[kind](path, repo_id, datasets, base_model)
    if (path / README).exists():
        raise LtsftError(f"{path / README}: the component already holds a README.md (the card's name)")
    with atomic_dir(out) as tmp:
        shutil.copytree(path, tmp, dirs_exist_ok=True)
        (tmp / README).write_text(render(card), encoding="utf-8")
    return card


def push(path: Path, kind: str, repo_id: str, private: bool = False, local_dir: Path | None = None,
         datasets: Sequence[str] = (), base_model: str | None = None, api: Any = None) -> str:
    """Write the folder to ``local_dir`` (no network), or stage it and upload it; one line back."""
    if local_dir is not None:
        write_folder(path, kind, repo_id, local_dir, datasets, base_model)
        files = sorted(str(p.relative_to(local_dir)) for p in local_dir.rglob("*") if p.is_file())
        return f"{local_dir}: the folder `{kind} push` would upload to {repo_id} ({', '.join(files)})"
    hub_repo.check_can_push(repo_id)  # offline or a bad id: refused before any work
    with tempfile.TemporaryDirectory(prefix="ltsft-push-") as scratch:
        folder = Path(scratch) / "upload"
        write_folder(path, kind, repo_id, folder, datasets, base_model)
        url = hub_repo.upload(folder, repo_id, private, f"Upload {kind} {path.name} with ltsft", api)
    return f"{path}: pushed to {url}"
