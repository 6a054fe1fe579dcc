"""A merged checkpoint (`ltsft diff apply`): θ0 + Σφ written as a plain transformers model
directory (``save_pretrained``, safetensors, with the tokenizer), so that
``AutoModelFor<Task>.from_pretrained(dir)`` loads it without this project.

The model is built exactly as the evaluation builds it — the task's own ``build_model`` (its
head class, labels and seeded initialisation), then the diffs composed in the evaluation's
order (``pipeline.core.composition.compose``) — so the checkpoint's logits are bit-identical
to what was scored. Without a head the diffs go onto BASE in its own architecture (for
models/base a masked LM, its head untouched): an adapted encoder that any
``AutoModelFor<Task>`` loads with a fresh head.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.atomic import atomic_dir
from pipeline.core.composition import compose
from pipeline.core.errors import LtsftError
from pipeline.formats.sparse_diff import DiffError, SparseDiff


def load_diffs(paths: Sequence[str | Path]) -> list[SparseDiff]:
    """Every diff directory in ``paths``; a missing one is refused in one line, naming it."""
    for path in paths:
        if not Path(path).exists():
            raise DiffError(f"{path}: no such diff directory")
    return [SparseDiff.load(path) for path in paths]


def named_diff(diffs: Sequence[SparseDiff], head_from: str | Path) -> SparseDiff:
    """The diff loaded from the directory ``head_from`` names (``--head-from``)."""
    wanted = Path(head_from).resolve()
    for diff in diffs:
        if diff.source is not None and diff.source.resolve() == wanted:
            return diff
    raise DiffError(f"{head_from}: --head-from names none of the diffs given")


def head_diff(diffs: Sequence[SparseDiff], head_from: str | Path | None = None) -> SparseDiff:
    """The diff whose dense tensors become the model's head: ``head_from`` if given, else the
    only diff that carries dense tensors — or, when language diffs carry their MLM heads too,
    the only *task* diff that does."""
    if head_from is not None:
        diff = named_diff(diffs, head_from)
        if not diff.dense:
            raise DiffError(f"{head_from}: --head-from names a diff that carries no head (no dense tensors)")
        return diff
    carriers = [d for d in diffs if d.dense]
    if len(carriers) > 1:
        carriers = [d for d in carriers if d.provenance.get("kind") == "task"] or carriers
    if not carriers:
        raise DiffError("--with-head: none of the diffs carries a head (dense tensors)")
    if len(carriers) > 1:
        raise DiffError(f"--with-head: {', '.join(str(d.source) for d in carriers)} all carry a head: "
                        "name one with --head-from")
    return carriers[0]


def head_task(head: SparseDiff, task: str | None = None) -> str:
    """The task whose model the head belongs to: ``task``, else the one the diff records
    (a language diff's head is the masked LM's)."""
    if task:
        return task
    recorded = head.provenance.get("task") or ("mlm" if head.provenance.get("kind") == "lang" else None)
    if not recorded:
        raise DiffError(f"{head.source}: records no task (an imported diff?): name it with --task")
    return str(recorded)


def _from_pretrained(loader: Any, base: str | Path, **kwargs: Any) -> Any:
    """``loader(base)`` with any failure (a path that is not there, no network for a hub
    name) as one line naming BASE."""
    try:
        return loader(str(base), **kwargs)
    except (OSError, ValueError) as err:
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise LtsftError(f"{base}: cannot load a model from it ({first})") from None


def _base_architecture(base: str | Path) -> Any:
    """BASE as saved: the class its config names (models/base: BertForMaskedLM)."""
    import transformers

    config = _from_pretrained(transformers.AutoConfig.from_pretrained, base)
    names = [name for name in (config.architectures or []) if hasattr(transformers, name)]
    model_class = getattr(transformers, names[0]) if names else transformers.AutoModel
    return _from_pretrained(model_class.from_pretrained, base)


def merged_model(base: str | Path, diffs: Sequence[SparseDiff], with_head: bool = False, task: str | None = None,
                 head_from: str | Path | None = None) -> Any:
    """θ0 (from ``base``) + Σ ``diffs``, with the head of one of them when ``with_head``."""
    from transformers import PreTrainedModel

    from pipeline.tasks import get_task

    if not with_head:
        if task or head_from:
            raise LtsftError("--task and --head-from choose a head: give --with-head too")
        return compose(_base_architecture(base), diffs)
    head = head_diff(diffs, head_from)
    name = head_task(head, task)
    try:
        chosen = get_task(name)
    except KeyError as err:
        raise LtsftError(str(err.args[0])) from None
    # The seed the evaluation built θ0 with: where BASE lacks a tensor of the task model (an
    # MLM checkpoint has no pooler for NLI), that tensor is θ0's seeded initialisation.
    seed = int(head.provenance.get("seed") or 0)
    model = _from_pretrained(lambda path: chosen.build_model(path, seed), base)
    if not isinstance(model, PreTrainedModel):
        raise LtsftError(f"--with-head: task {name}'s model ({type(model).__name__}, pipeline/tasks/{name}.py) is "
                         "no transformers class, so no AutoModelFor* could load its head; leave out --with-head "
                         "for the encoder alone")
    return compose(model, diffs, head)


def write_merged(base: str | Path, diff_paths: Sequence[str | Path], out: str | Path, with_head: bool = False,
                 task: str | None = None, head_from: str | Path | None = None) -> dict[str, Any]:
    """Write the merged checkpoint to ``out`` (atomically: a failure leaves nothing there);
    returns what was written, for the command to print."""
    from pipeline.core.models import load_tokenizer, save_model

    diffs = load_diffs(diff_paths)
    model = merged_model(base, diffs, with_head, task, head_from)
    tokenizer = _from_pretrained(load_tokenizer, base)
    with atomic_dir(out) as tmp:
        save_model(model, tokenizer, tmp)
    labels = getattr(model.config, "id2label", None) if with_head else None
    return {"architecture": type(model).__name__, "entries": sum(d.nnz for d in diffs),
            "labels": [labels[i] for i in sorted(labels)] if labels else None}
