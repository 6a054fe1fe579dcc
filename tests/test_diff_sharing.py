"""Sharing diffs (issue 14): `ltsft diff apply` (a merged transformers checkpoint), `diff compose`
(one diff, the sum) and `diff export --format composable-sft` (the reference's file), on tiny
models built in code: a saved θ0 directory, a POS or NLI task diff with its head, a language
diff with its MLM head, each made as training makes them (``SparseDiff.from_states``)."""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from typer.testing import CliRunner

from pipeline.core.composition import DiffComposer
from pipeline.core.diff_sum import compose_diffs
from pipeline.core.errors import LtsftError
from pipeline.core.merged import write_merged
from pipeline.core.models import load_tokenizer, save_model
from pipeline.core.parameters import maskable_parameter_names
from pipeline.formats import composable_sft
from pipeline.formats.sparse_diff import DiffError, SparseDiff
from pipeline.sources.published import import_published
from pipeline.tasks import get_task
from stages.cli import app

SEED = 3  # the seed the task model was "trained" with: θ0's fresh head and (NLI) pooler come from it


def perturbed_diff(model, rng_seed: int, density: float, head: list[str], **provenance) -> SparseDiff:
    """θ − θ0 of ``model`` after moving a random ``density`` of its maskable entries and
    replacing the ``head`` tensors, as a training run's diff."""
    names = maskable_parameter_names(model)
    params = dict(model.named_parameters())
    theta0 = {n: p.detach().clone() for n, p in params.items()}
    generator = torch.Generator().manual_seed(rng_seed)
    theta = dict(theta0)
    for name in names:
        moved = torch.rand(theta0[name].shape, generator=generator) < density
        theta[name] = theta0[name] + moved * torch.randn(theta0[name].shape, generator=generator)
    for name in head:
        theta[name] = torch.randn(theta0[name].shape, generator=generator)
    return SparseDiff.from_states(theta0, theta, names, head, k=sum(int(v.ne(theta0[n]).sum())
                                                                      for n, v in theta.items() if n in names),
                                  base_model="tiny", provenance=provenance)


@pytest.fixture
def base(tmp_path, make_mlm, tiny_tokenizer) -> Path:
    """θ0 as prepare-model writes it: a masked LM with its tokenizer."""
    path = tmp_path / "base"
    save_model(make_mlm(seed=0), tiny_tokenizer, path)
    return path


def task_diff(base: Path, out: Path, task: str = "pos", seed: int = 11) -> Path:
    chosen = get_task(task)
    model = chosen.build_model(base, SEED)
    diff = perturbed_diff(model, seed, 0.05, chosen.head_parameter_names(model),
                          method="lt-sft", kind="task", task=task, seed=SEED)
    assert diff.dense and diff.nnz
    diff.save(out)
    return out


def lang_diff(base: Path, out: Path, seed: int = 12) -> Path:
    chosen = get_task("mlm")
    model = chosen.build_model(base, SEED)
    diff = perturbed_diff(model, seed, 0.05, chosen.head_parameter_names(model), method="lt-sft", kind="lang", seed=SEED)
    assert any(name.startswith("cls.") for name in diff.dense)
    diff.save(out)
    return out


def input_batch(tokenizer) -> dict[str, torch.Tensor]:
    return tokenizer(["the cat sat on the mat", "a dog"], ["it was warm", "it ran"], padding=True, return_tensors="pt")


# --------------------------------------------------------------------------- diff apply
@pytest.mark.parametrize(("task", "auto_class"), [("pos", AutoModelForTokenClassification),
                                                  ("nli", AutoModelForSequenceClassification)])
def test_a_merged_checkpoint_gives_the_evaluations_logits(tmp_path, base, task, auto_class):
    task_path, lang_path = task_diff(base, tmp_path / "task", task), lang_diff(base, tmp_path / "lang")
    tokenizer = load_tokenizer(base)
    batch = input_batch(tokenizer)

    # In memory, exactly as the evaluation composes: pipeline/core/evaluation.py's score().
    composer = DiffComposer(task_path, {"xx": lang_path})
    model = get_task(task).build_model(base, SEED)
    composer.load(model)
    composer.prepare(model, "xx", with_language=True)
    expected = model.eval()(**batch).logits

    out = tmp_path / "merged"
    facts = write_merged(base, [lang_path, task_path], out, with_head=True)  # order given: irrelevant
    loaded = auto_class.from_pretrained(out).eval()
    assert torch.equal(loaded(**batch).logits, expected)
    theta0 = get_task(task).build_model(base, SEED).eval()
    assert not torch.equal(theta0(**batch).logits, expected)  # the diffs did change something

    labels = list(get_task(task).labels)
    assert loaded.config.id2label == dict(enumerate(labels)) and loaded.config.label2id == {t: i for i, t in enumerate(labels)}
    assert loaded.config.architectures == [type(model).__name__] and facts["labels"] == labels
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()
    assert load_tokenizer(out)("the cat")["input_ids"] == tokenizer("the cat")["input_ids"]
    assert not list(tmp_path.glob(".merged.*"))  # no temporary directory left behind


def test_without_a_head_the_diffs_go_onto_the_base_architecture(tmp_path, base):
    lang_path = lang_diff(base, tmp_path / "lang")
    out = tmp_path / "merged"
    facts = write_merged(base, [lang_path], out)
    assert facts["architecture"] == "BertForMaskedLM" and facts["labels"] is None
    expected = AutoModelForMaskedLM.from_pretrained(base)
    SparseDiff.load(lang_path).apply(expected)  # sparse part only
    loaded = dict(AutoModelForMaskedLM.from_pretrained(out).named_parameters())
    diff = SparseDiff.load(lang_path)
    for name, param in expected.named_parameters():
        assert torch.equal(loaded[name], param), name
    # The MLM head stayed θ0's: the diff's dense transform was not written.
    head = next(n for n in diff.dense if n.endswith("transform.dense.weight"))
    assert not torch.equal(loaded[head], diff.dense[head])


def test_apply_refuses_a_diff_of_another_base_naming_it(tmp_path, base, make_mlm, tiny_tokenizer):
    other_base = tmp_path / "other-base"
    save_model(make_mlm(seed=0, hidden_size=16), tiny_tokenizer, other_base)
    foreign = lang_diff(other_base, tmp_path / "foreign")
    out = tmp_path / "merged"
    with pytest.raises(DiffError, match=r"foreign: diff base fingerprint \w+ does not match"):
        write_merged(base, [task_diff(base, tmp_path / "task"), foreign], out, with_head=True)
    assert not out.exists() and not list(tmp_path.glob(".merged.*"))


def test_apply_refusals_are_one_line(tmp_path, base):
    task_path = task_diff(base, tmp_path / "task")
    out = tmp_path / "merged"
    runner = CliRunner()
    cases = [
        (["diff", "apply", str(base), str(tmp_path / "nope"), "--out", str(out)], "nope: no such diff directory"),
        (["diff", "apply", str(tmp_path / "no-base"), str(task_path), "--out", str(out), "--with-head"],
         "no-base: cannot load a model from it"),
        (["diff", "apply", str(base), str(task_path), "--out", str(out), "--task", "pos"], "give --with-head too"),
        (["diff", "apply", str(base), str(task_path), "--out", str(out), "--with-head", "--task", "sentiment"],
         "unknown task 'sentiment'"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()


def test_the_dependency_parsers_head_is_refused_in_one_line(tmp_path, base):
    diff = SparseDiff.load(task_diff(base, tmp_path / "task"))
    diff.provenance["task"] = "dp"  # a parser head: no AutoModelFor class has one
    diff.save(tmp_path / "dp")
    with pytest.raises(LtsftError, match=r"task dp's model \(\w+Parser, pipeline/tasks/dp.py\) is no transformers class"):
        write_merged(base, [tmp_path / "dp"], tmp_path / "merged", with_head=True)
    assert not (tmp_path / "merged").exists()


def test_which_head_is_written(tmp_path, base):
    a, b = task_diff(base, tmp_path / "a", seed=1), task_diff(base, tmp_path / "b", seed=2)
    with pytest.raises(DiffError, match=r"a, .*b all carry a head: name one with --head-from"):
        write_merged(base, [a, b], tmp_path / "merged", with_head=True)
    write_merged(base, [a, b], tmp_path / "merged", with_head=True, head_from=b)
    loaded = AutoModelForTokenClassification.from_pretrained(tmp_path / "merged")
    assert torch.equal(loaded.classifier.weight, SparseDiff.load(b).dense["classifier.weight"])
    imported = SparseDiff.load(a)
    imported.provenance = {"method": "lt-sft-published"}  # records no task
    imported.save(tmp_path / "imported")
    with pytest.raises(DiffError, match="records no task .*--task"):
        write_merged(base, [tmp_path / "imported"], tmp_path / "merged", with_head=True)
    write_merged(base, [tmp_path / "imported"], tmp_path / "merged", with_head=True, task="pos")


# --------------------------------------------------------------------------- diff compose
def test_compose_is_the_sum_with_k_and_parts(tmp_path, base):
    task_path, lang_path = task_diff(base, tmp_path / "task"), lang_diff(base, tmp_path / "lang")
    task, lang = SparseDiff.load(task_path), SparseDiff.load(lang_path)
    runner = CliRunner()
    result = runner.invoke(app, ["diff", "compose", str(task_path), str(lang_path), "--out", str(tmp_path / "sum")])
    assert result.exit_code == 0, result.output
    total = SparseDiff.load(tmp_path / "sum")
    expected = task + lang
    assert total.indices.keys() == expected.indices.keys()
    for name in expected.indices:
        assert torch.equal(total.indices[name], expected.indices[name])
        assert torch.equal(total.values[name], expected.values[name])
    overlap = sum(int(np.intersect1d(task.indices[n], lang.indices[n]).size) for n in task.indices if n in lang.indices)
    assert overlap > 0 and total.nnz == task.nnz + lang.nnz - overlap  # a union (no value cancelled here)
    assert total.k == task.k + lang.k
    assert set(total.dense) == set(task.dense) | set(lang.dense)
    assert [part["path"] for part in total.provenance["parts"]] == [str(task_path), str(lang_path)]
    assert total.provenance["parts"][0]["provenance"]["task"] == "pos"
    # Composing the sum onto θ0 moves every entry as applying the two parts one after the other.
    one, two = get_task("pos").build_model(base, SEED), get_task("pos").build_model(base, SEED)
    total.apply(one)
    task.apply(two)
    lang.apply(two)
    for (name, p), q in zip(one.named_parameters(), two.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_compose_refuses_two_heads_unless_one_is_named(tmp_path, base):
    a, b = task_diff(base, tmp_path / "a", seed=1), task_diff(base, tmp_path / "b", seed=2)
    result = CliRunner().invoke(app, ["diff", "compose", str(a), str(b), "--out", str(tmp_path / "sum")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert f"{a} and {b} both carry head tensor 'classifier." in result.output and "--head-from" in result.output
    assert not (tmp_path / "sum").exists()
    total = compose_diffs([a, b], tmp_path / "sum", head_from=b)
    assert torch.equal(total.dense["classifier.weight"], SparseDiff.load(b).dense["classifier.weight"])
    assert total.provenance["head_from"] == str(b)
    assert total.provenance["task"] == "pos" and total.provenance["kind"] == "task"  # what `apply --with-head` needs
    with pytest.raises(DiffError, match="names none of the diffs"):
        compose_diffs([a, b], tmp_path / "sum2", head_from=tmp_path / "c")
    with pytest.raises(DiffError, match="nope: no such diff directory"):
        compose_diffs([a, tmp_path / "nope"], tmp_path / "sum2")


# --------------------------------------------------------------------------- diff export
def reference_decode(entry: dict, numel: int) -> torch.Tensor:
    """What the reference's decoder computes, written out here as a test oracle: steps summed
    to flat indices, coordinate i = flat // (product of the sizes before i) % size i; the
    result as a dense tensor."""
    size = list(entry["size"])
    flat = np.cumsum(np.asarray(entry["index_steps"], dtype=np.int64))
    divisors = np.concatenate([[1], np.cumprod(size)[:-1]])
    coords = (flat[None, :] // divisors[:, None]) % np.asarray(size)[:, None]
    dense = torch.zeros(size, dtype=entry["values"].dtype)
    dense[tuple(torch.from_numpy(coords))] = entry["values"]
    assert dense.numel() == numel
    return dense


@pytest.fixture
def exported(tmp_path, base) -> tuple[SparseDiff, Path]:
    diff = SparseDiff.load(task_diff(base, tmp_path / "task"))
    empty = min(diff.indices)  # one tensor with no entries: its shape must survive too
    del diff.indices[empty], diff.values[empty]
    diff.save(tmp_path / "task")
    result = CliRunner().invoke(app, ["diff", "export", str(tmp_path / "task"), str(tmp_path / "ref"),
                                      "--format", "composable-sft"])
    assert result.exit_code == 0, result.output
    return SparseDiff.load(tmp_path / "task"), tmp_path / "ref"


def test_export_then_import_gives_the_same_diff(tmp_path, exported):
    original, out = exported
    result = CliRunner().invoke(app, ["diff", "import", str(out), str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    back = SparseDiff.load(tmp_path / "back")
    assert back.shapes == original.shapes and back.dtypes == original.dtypes
    assert back.base_fingerprint == original.base_fingerprint
    assert back.indices.keys() == original.indices.keys() and back.dense.keys() == original.dense.keys()
    for name in original.indices:
        assert torch.equal(back.indices[name], original.indices[name])
        assert back.values[name].dtype == original.values[name].dtype
        assert back.values[name].numpy().tobytes() == original.values[name].numpy().tobytes()
    for name in original.dense:
        assert back.dense[name].numpy().tobytes() == original.dense[name].numpy().tobytes()


def test_the_export_is_the_references_layout_and_loads_with_torchs_default_allow_list(exported):
    original, out = exported
    # torch's weights-only loader with nothing added to its allow-list (no numpy scalars inside).
    obj = torch.load(out / composable_sft.FILE, weights_only=True)
    assert set(obj) == {"diffs", "abs"} and set(obj["diffs"]) == set(original.shapes)
    for name, entry in obj["diffs"].items():
        assert set(entry) == {"size", "index_steps", "values"} and type(entry["size"]) is torch.Size
        assert all(type(step) is int for step in entry["index_steps"])
        assert all(step > 0 for step in entry["index_steps"][1:])
        expected = torch.zeros(original.shapes[name], dtype=getattr(torch, original.dtypes[name]))
        if name in original.indices:
            expected.view(-1)[original.indices[name]] = original.values[name]
        assert torch.equal(reference_decode(entry, expected.numel()), expected), name
    assert any(entry["index_steps"] == [] for entry in obj["diffs"].values())
    for name, tensor in obj["abs"].items():
        assert torch.equal(tensor, original.dense[name])
    with zipfile.ZipFile(out / composable_sft.FILE) as archive:
        stream = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert not any(op.name in ("GLOBAL", "STACK_GLOBAL") and arg and "numpy" in str(arg)
                   for op, arg, _ in pickletools.genops(stream))


def test_export_is_byte_identical_and_refuses_in_one_line(tmp_path, exported):
    original, out = exported
    composable_sft.write(original, tmp_path / "again")
    assert (tmp_path / "again" / composable_sft.FILE).read_bytes() == (out / composable_sft.FILE).read_bytes()
    result = CliRunner().invoke(app, ["diff", "export", str(tmp_path / "nope"), str(tmp_path / "x"),
                                      "--format", "composable-sft"])
    assert result.exit_code == 2 and "nope: no such diff directory" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_an_export_of_an_import_is_the_released_file_less_its_numpy_scalars(tmp_path):
    """The released fixture (pickled under numpy 1, numpy scalars inside) → ours → exported:
    the same entries in the same order, now loadable with torch's default allow-list."""
    fixture = Path(__file__).parent / "fixtures" / "published" / "numpy1"
    released = composable_sft.load(fixture)
    composable_sft.write(import_published(fixture, tmp_path / "ours"), tmp_path / "again")
    again = torch.load(tmp_path / "again" / composable_sft.FILE, weights_only=True)
    for name, entry in released["diffs"].items():
        assert [int(s) for s in entry["index_steps"]] == again["diffs"][name]["index_steps"]
        assert torch.equal(torch.as_tensor(entry["values"]), again["diffs"][name]["values"])
        assert tuple(int(d) for d in entry["size"]) == tuple(again["diffs"][name]["size"])
