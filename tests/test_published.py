"""Importing the paper's published diffs (pipeline/sources/published.py) from a file in their
format written here: column-major delta-coded indices, numpy scalars, a dense head."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.formats.sparse_diff import DiffError, SparseDiff
from pipeline.sources.published import import_published, load_published


def published_file(path, entries, head):
    """entries: {name: (shape, [(row-major index tuple), ...], values)} → the reference format."""
    diffs = {}
    for name, (shape, positions, values) in entries.items():
        flat_f = np.ravel_multi_index(tuple(np.array(positions).T), shape, order="F")
        order = np.argsort(flat_f)
        flat_f = flat_f[order]
        steps = np.diff(flat_f, prepend=0)
        diffs[name] = {"size": tuple(np.int64(d) for d in shape),  # numpy scalars, as in the released files
                       "index_steps": torch.from_numpy(steps.astype(np.int64)),
                       "values": torch.tensor(np.array(values, dtype=np.float32)[order])}
    torch.save({"diffs": diffs, "abs": head}, path)


def test_import_matches_the_entries_and_applies(tmp_path, make_tagger):
    model = make_tagger(seed=0)
    weights = dict(model.named_parameters())
    name_2d = "bert.encoder.layer.0.attention.self.query.weight"
    name_1d = "bert.encoder.layer.1.output.dense.bias"
    rows, cols = weights[name_2d].shape
    positions_2d = [(0, 1), (1, 0), (rows - 1, cols - 1), (2, 5)]
    entries = {name_2d: (tuple(weights[name_2d].shape), positions_2d, [0.5, -1.0, 2.0, 0.25]),
               name_1d: (tuple(weights[name_1d].shape), [(3,), (0,)], [1.5, -0.5])}
    head = {"classifier.weight": torch.full_like(weights["classifier.weight"], 0.125),
            "classifier.bias": torch.zeros_like(weights["classifier.bias"])}
    path = tmp_path / "pytorch_diff.bin"
    published_file(path, entries, head)

    diff = import_published(path, tmp_path / "imported", base_model="tiny")
    loaded = SparseDiff.load(tmp_path / "imported")
    assert loaded.nnz == 6 and set(loaded.dense) == set(head)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loaded.apply(model, with_dense=True)
    after = dict(model.named_parameters())
    for (r, c), v in zip(positions_2d, [0.5, -1.0, 2.0, 0.25]):
        assert torch.isclose(after[name_2d][r, c] - before[name_2d][r, c], torch.tensor(v))
    assert torch.isclose(after[name_1d][3] - before[name_1d][3], torch.tensor(1.5))
    assert torch.equal(after["classifier.weight"], head["classifier.weight"])
    changed = sum(int((after[n] != before[n]).sum()) for n in before if not n.startswith("classifier"))
    assert changed == 6
    assert diff.provenance["method"] == "lt-sft-published"


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_arbitrary_code_is_refused(tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({"diffs": {}, "abs": {}, "x": Exploit()}, path)
    with pytest.raises(DiffError, match="not a loadable published diff"):
        load_published(path)


def test_bad_indices_are_refused(tmp_path):
    path = tmp_path / "bad.bin"
    torch.save({"diffs": {"w": {"size": (2, 2), "index_steps": torch.tensor([1, 0]),
                                "values": torch.tensor([1.0, 2.0])}}, "abs": {}}, path)
    with pytest.raises(DiffError, match="strictly increasing"):
        import_published(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_published_without_a_repo_names_the_key(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from stages.cli import app

    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((repo / "presets" / "smoke.yaml").read_text())
    result = CliRunner().invoke(app, ["import-published", "lang", "en"])
    assert result.exit_code == 2 and "published.lang_repo: not set" in result.output
    assert not (tmp_path / "diffs").exists()
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["preset"] == "smoke"


NUMPY1 = Path(__file__).parent / "fixtures" / "published" / "numpy1"  # tests/fixtures/make_numpy1_diff.py


def test_a_file_pickled_under_numpy_1_imports(tmp_path):
    """Every released diff names numpy.core.multiarray.scalar (numpy 1.x); numpy 2 renamed it."""
    import pickletools
    import zipfile

    with zipfile.ZipFile(NUMPY1 / "pytorch_diff.bin") as archive:
        stream = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    globals_named = {arg for op, arg, _ in pickletools.genops(stream) if op.name == "GLOBAL"}
    assert "numpy.core.multiarray scalar" in globals_named
    assert not any(name.startswith("numpy._core") for name in globals_named)
    # A directory holding pytorch_diff.bin (as the reference's SFT(dir)) or the file itself.
    for path in (NUMPY1, NUMPY1 / "pytorch_diff.bin"):
        diff = import_published(path, tmp_path / "out")
        # Column-major flat 1, 3 in a 2x3 matrix are (1, 0) and (1, 1): row-major 3 and 4.
        assert diff.indices["encoder.weight"].tolist() == [3, 4]
        assert diff.values["encoder.weight"].tolist() == [0.5, -0.25]
        assert diff.dense["classifier.bias"].tolist() == [1.0, 2.0, 3.0]


def test_a_refusal_gives_the_unpicklers_whole_reason(tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({"diffs": {}, "abs": {}, "x": Exploit()}, path)
    with pytest.raises(DiffError) as info:
        load_published(path)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message
    assert "posix.system" in message and "Re-running" not in message  # the reason, not torch's advice

    import datetime

    torch.save({"diffs": {}, "abs": {}, "when": datetime.date(2021, 1, 1)}, path)  # allowed nowhere
    with pytest.raises(DiffError) as info:
        load_published(path)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message
    assert "WeightsUnpickler error: Unsupported global: GLOBAL datetime.date" in message

    # A plain pickle (not torch's zip) at protocol 4: the unpickler stops at an opcode it cannot
    # read and gives its reason in the paragraph after "WeightsUnpickler error:".
    path.write_bytes(pickle.dumps({"diffs": {}, "abs": {}}, protocol=4))
    with pytest.raises(DiffError) as info:
        load_published(path)
    message = str(info.value)
    assert "\n" not in message
    assert "WeightsUnpickler error: Unsupported operand" in message


# The reference's label names in ClassLabel id order (composable-sft@29f7872): its NER dataset
# script (examples/token-classification/ner_dataset.py:108-116), the hub's UD script's `upos`
# (with "_"), MultiNLI's `label`.
REFERENCE_CLASSLABELS = {
    "ner": ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"],
    "pos": ["NOUN", "PUNCT", "ADP", "NUM", "SYM", "SCONJ", "ADJ", "PART", "DET", "CCONJ", "PROPN", "PRON", "X", "_",
            "ADV", "INTJ", "VERB", "AUX"],
    "nli": ["entailment", "neutral", "contradiction"],
}


def reference_head_order(task: str) -> list[str]:
    """The rows of a head the reference built: token tasks sort the names and drop "_"
    (run_token_classification.py:332-334); text classification keeps the ClassLabel ids
    (run_text_classification.py:307-308)."""
    names = REFERENCE_CLASSLABELS[task]
    return list(names) if task == "nli" else [name for name in sorted(names) if name != "_"]


@pytest.mark.parametrize(("task", "preset"), [("ner", "paper"), ("pos", "paper"), ("nli", "paper-nli")])
def test_a_released_head_in_the_references_row_order_lands_on_our_labels(tmp_path, monkeypatch, task, preset):
    import yaml

    from pipeline.core.config import parse_params
    from pipeline.tasks import get_task
    from stages import import_published as stage
    from stages import layout

    tree = yaml.safe_load((Path(__file__).resolve().parents[1] / "presets" / f"{preset}.yaml").read_text())
    tree["published"]["local_root"] = str(tmp_path / "released")
    params = parse_params(tree)
    reference, ours = reference_head_order(task), list(get_task(task).labels)
    # Only NER's order differs (so only it needs published.head_labels); POS and NLI match as they are.
    assert (reference != ours) == (task == "ner") and (task in params.published.head_labels) == (task == "ner")

    hidden = 4  # not 3, 7 or 17: a square tensor must not look like a head to reorder
    rows = torch.arange(1, len(reference) + 1, dtype=torch.float32)  # row r of the released head: value r + 1
    prefix = "classifier.out_proj" if task == "nli" else "classifier"  # XLM-R's head vs BERT's
    head = {f"{prefix}.weight": rows[:, None].repeat(1, hidden), f"{prefix}.bias": rows.clone()}
    if task == "nli":
        head["classifier.dense.weight"] = torch.arange(hidden * hidden, dtype=torch.float32).reshape(hidden, hidden)
    path = tmp_path / "released" / params.published.task_repos[task] / "pytorch_diff.bin"
    path.parent.mkdir(parents=True)
    published_file(path, {"bert.embeddings.word_embeddings.weight": ((3, 2), [(1, 0)], [0.5])}, head)

    monkeypatch.chdir(tmp_path)
    stage.run(params, "task", task)
    dense = SparseDiff.load(layout.COMPONENTS.component("lt-sft-published", "task", task)).dense
    for i, label in enumerate(ours):
        released_row = reference.index(label) + 1
        assert dense[f"{prefix}.weight"][i].tolist() == [released_row] * hidden, label
        assert dense[f"{prefix}.bias"][i].item() == released_row, label
    if task == "nli":
        assert torch.equal(dense["classifier.dense.weight"], head["classifier.dense.weight"])


def test_a_head_order_without_a_head_is_refused():
    from pipeline.sources.published import reorder_head

    diff = SparseDiff({"w": (2, 2)}, {"w": "float32"}, {}, {}, {"classifier.weight": torch.zeros(5, 4)})
    labels = reference_head_order("ner")
    with pytest.raises(DiffError, match=r"no dense tensor with 7 rows .*classifier.weight \(5, 4\)"):
        reorder_head(diff, labels, sorted(labels, reverse=True))


def test_targets_without_a_released_module_are_skipped_and_reported(tmp_path, monkeypatch):
    """published.unreleased (sme in the paper preset): never imported, skipped by the published
    method's evaluation with the reason in the results file, refused where it contradicts."""
    import json

    import yaml

    from pipeline.core.config import ConfigError, parse_params
    from pipeline.methods import METHODS
    from pipeline.report import TaskReport, render_report
    from stages import evaluate, layout

    tree = yaml.safe_load((Path(__file__).resolve().parents[1] / "presets" / "paper.yaml").read_text())
    params = parse_params(tree)
    assert params.published.unreleased == ("sme",) and "sme" not in params.published.languages
    assert "sme" in params.tasks["pos"].targets
    assert METHODS["lt-sft-published"].skipped_targets(params, ["mt", "sme"]) == {
        "sme": "no released language diff (published.unreleased)"}
    assert METHODS["lt-sft"].skipped_targets(params, ["mt", "sme"]) == {}

    scored = {}

    def fake_score(params, task, task_name, base, tests, composer, variants, extra=None):
        scored.update(tests)
        return [{"task": task_name, "method": "lt-sft-published", "lang": lang, "metric": "accuracy", "value": 0.5}
                for lang in tests]

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(evaluate, "score", fake_score)
    monkeypatch.setattr(evaluate, "require_files", lambda *paths: None)
    evaluate.run(params, "pos", "lt-sft-published")
    assert "sme" not in scored and set(scored) == set(params.tasks["pos"].targets) - {"sme"}
    written = json.loads(layout.results_file("pos", "lt-sft-published").read_text())
    assert written["skipped"] == {"lt-sft-published": {"sme": "no released language diff (published.unreleased)"}}
    page = render_report("t", [TaskReport("pos", written["rows"], skipped=written["skipped"])], tmp_path)
    assert "lt-sft-published: not evaluated on sme — no released language diff" in page

    for unreleased, message in (([["xx"]], "published.unreleased: unknown language 'xx'"),
                                ([["en"]], "published.unreleased: 'en' is also in published.languages")):
        bad = dict(tree, published=dict(tree["published"], unreleased=unreleased[0]))
        with pytest.raises(ConfigError, match=message):
            parse_params(bad)
