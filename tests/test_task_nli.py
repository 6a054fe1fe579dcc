"""NLI as a sentence-pair classification task (pipeline/tasks/nli.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from transformers import BertForMaskedLM, BertForSequenceClassification

from pipeline.core.parameters import maskable_parameter_names
from pipeline.formats import nli as data_nli
from pipeline.tasks.nli import NLI_LABELS, NaturalLanguageInference, NliExample, write_nli

TASK = NaturalLanguageInference()
EXAMPLES = [
    NliExample("Tom sang in every red story.", "Tom sang.", "entailment"),
    NliExample("I should like this quiet house.", "The house is loud.", "contradiction"),
    NliExample("Go pufun puk bo kezu.", "Ru finen zo.", "neutral"),
    NliExample("Wor yeishei weish moho mosh wash cheir chäshü.", "Wor thei jä.", "neutral"),
    NliExample("Tom opened the new apple near this letter.", "Tom opened an apple.", "entailment"),
]


@pytest.fixture
def classifier(tiny_config):
    torch.manual_seed(0)
    config = tiny_config.__class__(**{**tiny_config.to_dict(), "num_labels": len(NLI_LABELS)})
    return BertForSequenceClassification(config)


def test_task_attributes():
    assert (TASK.name, TASK.metric, TASK.data_format) == ("nli", "accuracy", "jsonl")
    assert TASK.labels == NLI_LABELS == ("entailment", "neutral", "contradiction")
    # One example class for the download stage and the task.
    assert NliExample is data_nli.NliExample and write_nli is data_nli.write_nli


def test_reads_string_and_integer_labels(tmp_path):
    path = tmp_path / "dev.jsonl"
    lines = [
        {"premise": "a b", "hypothesis": "c", "label": "neutral"},
        {"label": 0, "hypothesis": "e", "premise": "d"},
        {"premise": "f", "hypothesis": "g", "label": 2},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n")
    assert TASK.read(path) == [
        NliExample("a b", "c", "neutral"), NliExample("d", "e", "entailment"), NliExample("f", "g", "contradiction"),
    ]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"premise": "a", "hypothesis": "b", "label": "entail', "line 2: .*column"),
        ('{"premise": "a", "hypothesis": "b", "label": "maybe"}', "line 2: unknown NLI label 'maybe'"),
        ('{"premise": "a", "hypothesis": "b", "label": 3}', "line 2: NLI label index 3 out of range"),
        ('{"premise": "a", "hypothesis": "b", "label": true}', "line 2: unknown NLI label True"),
        ('{"premise": "a", "hypothesis": "b"}', "line 2: expected exactly the keys"),
        ('{"premise": "a", "hypothesis": "b", "label": 0, "id": 7}', "line 2: expected exactly the keys"),
        ('["a", "b", 0]', "line 2: expected exactly the keys"),
    ],
)
def test_a_malformed_line_is_an_error_naming_file_and_line(tmp_path, bad, message):
    path = tmp_path / "train.jsonl"
    path.write_text('{"premise": "a", "hypothesis": "b", "label": 1}\n' + bad + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        TASK.read(path)
    assert str(info.value).startswith(f"{path}, line 2: ")


def test_write_read_round_trip(tmp_path):
    path = tmp_path / "out" / "test.jsonl"
    write_nli(EXAMPLES, path)
    assert TASK.read(path) == EXAMPLES
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert json.loads(first) == {"premise": "Tom sang in every red story.", "hypothesis": "Tom sang.",
                                 "label": "entailment"}
    assert "chäshü" in path.read_text(encoding="utf-8")  # UTF-8, not ASCII escapes
    assert [p.name for p in path.parent.iterdir()] == ["test.jsonl"]  # no temporary left


def test_an_example_with_an_unknown_label_cannot_be_made():
    with pytest.raises(ValueError, match="unknown NLI label 'maybe'"):
        NliExample("a", "b", "maybe")


def test_featurize_pairs_with_segment_ids(tiny_tokenizer):
    features = TASK.featurize(EXAMPLES[:2], tiny_tokenizer, max_length=64)
    assert [f["labels"] for f in features] == [0, 2]
    for feature, example in zip(features, EXAMPLES):
        assert set(feature) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
        n_premise = len(tiny_tokenizer.tokenize(example.premise)) + 2  # [CLS] premise [SEP]
        n_hypothesis = len(tiny_tokenizer.tokenize(example.hypothesis)) + 1  # hypothesis [SEP]
        assert feature["token_type_ids"] == [0] * n_premise + [1] * n_hypothesis
        assert len(feature["input_ids"]) == len(feature["attention_mask"]) == n_premise + n_hypothesis


def test_featurize_truncates_longest_first(tiny_tokenizer):
    [feature] = TASK.featurize([EXAMPLES[3]], tiny_tokenizer, max_length=16)
    assert len(feature["input_ids"]) == 16
    ids = feature["input_ids"]
    sep = tiny_tokenizer.sep_token_id
    assert ids[0] == tiny_tokenizer.cls_token_id and ids[-1] == sep and ids.count(sep) == 2
    assert 1 in feature["token_type_ids"]  # the (shorter) hypothesis survives
    assert TASK.featurize([], tiny_tokenizer, 16) == []


def test_collator_pads_a_batch(tiny_tokenizer):
    features = TASK.featurize(EXAMPLES, tiny_tokenizer, max_length=24)
    batch = TASK.collator(tiny_tokenizer)(features)
    longest = max(len(f["input_ids"]) for f in features)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert batch[key].shape == (len(EXAMPLES), longest)
    assert batch["labels"].tolist() == [0, 2, 1, 1, 0]
    assert batch["attention_mask"].sum().item() == sum(len(f["input_ids"]) for f in features)


class Scripted(torch.nn.Module):
    """Predicts the given label ids in order, whatever the input."""

    def __init__(self, predictions: list[int]):
        super().__init__()
        self.predictions = list(predictions)
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # eval_batches looks up the device

    def forward(self, input_ids, attention_mask, token_type_ids, **rest):
        assert "labels" not in rest
        n = input_ids.shape[0]
        now, self.predictions = self.predictions[:n], self.predictions[n:]
        return SimpleNamespace(logits=torch.nn.functional.one_hot(torch.tensor(now), len(NLI_LABELS)).float())


def test_accuracy_against_hand_computed_value(tiny_tokenizer):
    # gold: entailment, contradiction, neutral, neutral, entailment = 0, 2, 1, 1, 0
    model = Scripted([0, 2, 2, 1, 1])
    metrics = TASK.evaluate(model, EXAMPLES, tiny_tokenizer, max_length=32, batch_size=2)
    assert metrics == {"accuracy": 3 / 5, "examples": 5.0}
    assert model.predictions == []
    empty = TASK.evaluate(Scripted([]), [], tiny_tokenizer, 32, 2)
    assert empty["examples"] == 0 and empty["accuracy"] != empty["accuracy"]


def test_head_is_the_classifier_and_the_pooler_is_maskable(classifier):
    assert TASK.head_parameter_names(classifier) == ["classifier.weight", "classifier.bias"]
    maskable = maskable_parameter_names(classifier)
    assert {"bert.pooler.dense.weight", "bert.pooler.dense.bias"} <= set(maskable)


def test_build_model(tmp_path, tiny_config):
    BertForMaskedLM(tiny_config).save_pretrained(tmp_path)  # no pooler weights, as models/base
    model = TASK.build_model(tmp_path, seed=5)
    assert isinstance(model, BertForSequenceClassification)
    assert model.config.num_labels == 3 and model.config.id2label == dict(enumerate(NLI_LABELS))
    assert model.config.label2id == {"entailment": 0, "neutral": 1, "contradiction": 2}
    # The classifier and the missing pooler are initialised from the seed alone, so the
    # evaluation stage rebuilds the same θ0 the diffs were trained from.
    again = TASK.build_model(tmp_path, seed=5)
    other = TASK.build_model(tmp_path, seed=6)
    for name in ("classifier.weight", "bert.pooler.dense.weight"):
        assert torch.equal(model.get_parameter(name), again.get_parameter(name)), name
        assert not torch.equal(model.get_parameter(name), other.get_parameter(name)), name


def test_training_steps_lower_the_loss_and_evaluate_scores(classifier, tiny_tokenizer):
    batch = TASK.collator(tiny_tokenizer)(TASK.featurize(EXAMPLES, tiny_tokenizer, max_length=24))
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-2)
    classifier.train()
    losses = []
    for _ in range(6):
        loss = classifier(**batch).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0]
    metrics = TASK.evaluate(classifier, EXAMPLES, tiny_tokenizer, max_length=24, batch_size=2)
    assert set(metrics) == {"accuracy", "examples"} and metrics["examples"] == 5
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert not classifier.training
