"""The contract every registered method keeps, run over the whole registry (peft's
TEST_CASES idea): a new method gets these tests by registering.

On a tiny BERT built in code, for each method that trains: train its language component
(where it has one; a method that imports released ones gets them converted from files written
here) and its task component for a few steps, then
- save → load is bit-identical (the component read back equals the one trained);
- composing from disk gives the in-memory model's logits, and they differ from θ0's;
- every pretrained weight the method must not change is bit-identical to θ0;
- the trainable-parameter count it reports equals what actually trained (a sparse method:
  the entries that changed are at most K, and the count is K plus the head).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.core.config import parse_params
from pipeline.formats.adapter import load_adapter
from pipeline.formats.sparse_diff import SparseDiff
from pipeline.methods import METHODS
from pipeline.methods.mad_g.build import build_generator
from pipeline.methods.mad_g.method import GENERATOR
from pipeline.core.method import TrainContext
from pipeline.core.models import build_tiny_mlm, save_model, train_wordpiece_tokenizer
from pipeline.core.parameters import count_parameters_named, snapshot
from pipeline.sources.adapterhub import import_adapter
from pipeline.tasks import get_task
from tests.conftest import FIXTURES
from tests.released_adapter import random_roles, released_tensors, write_released

REPO = Path(__file__).resolve().parents[1]
SMOKE = FIXTURES / "smoke"
TRAINED = [name for name, method in METHODS.items() if not method.imported]
K = 3000


class Paths:
    def __init__(self, root: Path) -> None:
        self.root = root

    def component(self, method: str, kind: str, name: str) -> Path:
        return self.root / method / kind / name


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny base model on disk, params with budgets of a few steps, and a scratch store."""
    root = tmp_path_factory.mktemp("contract")
    texts = [line for path in sorted((SMOKE / "text").glob("*.txt")) for line in path.read_text().splitlines()]
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size=300)
    save_model(build_tiny_mlm(tokenizer, 0, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64), tokenizer, root / "base")
    raw = yaml.safe_load((REPO / "presets" / "smoke.yaml").read_text())
    raw["sparsity"]["k"] = K
    for section in (raw["lang_sft"], raw["task_sft"]):
        section["phase1"], section["phase2"] = {"steps": 2}, {"steps": 2}
    for section in (raw["full_ft"], raw["head_only"], raw["bitfit"], raw["madx"]["language"], raw["madx"]["task"],
                    raw["mad_g"]["generator"]):
        section["phase"] = {"steps": 2}
    return {"base": root / "base", "tokenizer": tokenizer, "params": parse_params(raw), "paths": Paths(root)}


def context(world, kind: str, name: str, source: str | None = None) -> TrainContext:
    task = get_task("mlm" if kind == "lang" else "pos")
    if kind == "lang":
        train = task.read(SMOKE / "text" / f"{name}.txt")[:40]
        dev = train[:8]
    else:
        train = task.read(SMOKE / "pos" / source / "train.conllu")[:24]
        dev = task.read(SMOKE / "pos" / source / "dev.conllu")[:8]
    return TrainContext(params=world["params"], task=task, kind=kind, name=name,
                        model=task.build_model(world["base"], 0), tokenizer=world["tokenizer"], train=train, dev=dev,
                        paths=world["paths"], source=source)


def logits(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(["a small test sentence", "another one"], return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def assert_same_component(trained, path: Path, model) -> None:
    """The component read back from ``path`` equals the one trained, bit for bit."""
    if isinstance(trained, SparseDiff):
        loaded = SparseDiff.load(path)
        assert loaded.indices.keys() == trained.indices.keys() and loaded.dense.keys() == trained.dense.keys()
        for name in trained.indices:
            assert torch.equal(loaded.indices[name], trained.indices[name].to(torch.int64)), name
            assert torch.equal(loaded.values[name], trained.values[name]), name
        for name in trained.dense:
            assert torch.equal(loaded.dense[name], trained.dense[name]), name
        return
    # An adapter component: its module's weights, and the head as a diff.
    fresh = copy.deepcopy(trained.adapter)
    with torch.no_grad():
        for param in fresh.parameters():
            param.zero_()
    load_adapter(path / "adapter" if trained.head is not None else path, fresh)
    for name, tensor in trained.adapter.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    if trained.head is not None:
        assert_same_component(trained.head, path / "head", model)


def build_prerequisite(world, method) -> None:
    """A method's once-per-run stage (mad-g: the generator, and the generated adapters of xx and en)."""
    if method.prerequisite is None or world["paths"].component(*GENERATOR).exists():
        return
    assert method.prerequisite == "generator", f"no contract fixture for prerequisite {method.prerequisite!r}"
    ctx = context(world, "lang", "en")
    build_generator(ctx, {"en": (SMOKE / "text" / "en.txt").read_text().splitlines()}, ["xx", "en"])


@pytest.mark.parametrize("name", TRAINED)
def test_method_contract(world, name):
    method = METHODS[name]
    paths, tokenizer = world["paths"], world["tokenizer"]
    build_prerequisite(world, method)
    if method.has_language:
        maker = METHODS[method.language_from]
        for seed, lang in enumerate(("xx", "en")):
            if maker.prerequisite and not maker.trains_language:  # written by its prerequisite (mad-g: generated)
                assert paths.component(name, "lang", lang).exists()
            elif maker.imports_language:  # released adapters (madx-published), in the `adapters` library's layout
                released = write_released(paths.root / "released" / lang,
                                          released_tensors(random_roles(32, 2, seed=seed, std=0.05), name=lang),
                                          name=lang)
                import_adapter(released, paths.component(name, "lang", lang),
                               world["params"].madx.language.reduction_factor)
            elif not paths.component(name, "lang", lang).exists():
                result = maker.train_language(context(world, "lang", lang))
                if maker.name == name:
                    assert_same_component(result.component, paths.component(name, "lang", lang), None)

    ctx = context(world, "task", "pos", source="en")
    theta0 = snapshot(ctx.model)
    result = method.train_task(ctx)
    trained_model = ctx.model
    out = paths.component(name, "task", "pos")
    assert_same_component(result.component, out, trained_model)

    # Compose from disk onto a fresh θ0: the source language (where there is one) + the task.
    composer = method.composer(world["params"], paths, "pos", ["en"])
    composed = get_task("pos").build_model(world["base"], 0)
    base_logits = logits(composed, tokenizer)
    composer.load(composed)
    composer.prepare(composed, "en", method.has_language)
    on_disk = logits(composed, tokenizer)
    assert not torch.allclose(on_disk, base_logits), "the method changed nothing"
    torch.testing.assert_close(on_disk, logits(trained_model, tokenizer), rtol=0, atol=1e-5)

    # The task component alone on θ0: only what the method may change has changed.
    alone = get_task("pos").build_model(world["base"], 0)
    composer_alone = method.composer(world["params"], paths, "pos", ["en"])
    composer_alone.load(alone)
    composer_alone.prepare(alone, "en", False)
    head = {n for n in get_task("pos").head_parameter_names(alone) if n in theta0}  # not adapters
    allowed = set(method.may_change(alone)) | head
    state = dict(alone.named_parameters())
    for param_name, before in theta0.items():
        if param_name not in allowed:
            assert torch.equal(state[param_name], before), f"{name} changed {param_name}"

    # The reported count is what trained: the parameters the optimizer was given (a sparse
    # method: K entries of them, and the entries that changed are at most K).
    reported = composer_alone.task_params
    if composer_alone.k is not None:
        changed = sum(int((state[n] != theta0[n]).sum()) for n in allowed - head)
        assert 0 < changed <= composer_alone.k
        assert reported == composer_alone.k + count_parameters_named(alone, sorted(head))
    else:
        assert reported == sum(p.numel() for p in trained_model.parameters() if p.requires_grad)
