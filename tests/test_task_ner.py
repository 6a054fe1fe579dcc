"""NER as a word-tagging task (pipeline/tasks/ner.py, pipeline/tasks/tagging.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import BertForMaskedLM

from pipeline.formats.bio import NER_TAGS, TaggedSentence
from pipeline.tasks.ner import NamedEntityRecognition
from pipeline.tasks.tagging import IGNORE, WordTagging, first_subword_labels

TASK = NamedEntityRecognition()
ID = {tag: i for i, tag in enumerate(NER_TAGS)}
SENTENCES = [
    TaggedSentence(("Tom", "sang", "in", "Go", "."), ("B-PER", "O", "O", "B-LOC", "O")),
    TaggedSentence(("Tom", "opened", "the", "new", "apple"), ("B-PER", "O", "O", "B-ORG", "I-ORG")),
    TaggedSentence(("Ru", "finen", "zo"), ("B-ORG", "O", "B-LOC")),
]


def test_task_attributes():
    assert isinstance(TASK, WordTagging)
    assert (TASK.name, TASK.metric, TASK.data_format, TASK.labels) == ("ner", "f1", "bio", NER_TAGS)
    assert TASK.higher_is_better


def test_reads_a_bio_file(tmp_path):
    path = tmp_path / "dev.bio"
    path.write_text("Tom\tB-PER\nsang\tO\n\nGo\tB-LOC\nka\tI-LOC\n\n", encoding="utf-8")
    assert TASK.read(path) == [
        TaggedSentence(("Tom", "sang"), ("B-PER", "O")),
        TaggedSentence(("Go", "ka"), ("B-LOC", "I-LOC")),
    ]


def test_featurize_labels_first_subwords_only(tiny_tokenizer):
    sentence = SENTENCES[1]
    [features] = TASK.featurize([sentence], tiny_tokenizer, max_length=64)
    expected = [IGNORE]  # [CLS]
    for word, tag in zip(sentence.words, sentence.tags):
        pieces = tiny_tokenizer.tokenize(word)
        expected += [ID[tag]] + [IGNORE] * (len(pieces) - 1)
    expected.append(IGNORE)  # [SEP]
    assert features["labels"] == expected
    assert len(features["input_ids"]) == len(features["attention_mask"]) == len(expected)
    assert any(len(tiny_tokenizer.tokenize(w)) > 1 for w in sentence.words)  # the test means something


def test_first_subword_labels_still_importable_from_pos():
    from pipeline.tasks import pos

    assert pos.first_subword_labels is first_subword_labels and pos.IGNORE == IGNORE == -100


@pytest.mark.parametrize(
    ("gold", "predicted", "expected"),
    [
        # 3 gold entities; 2 found, plus 1 spurious: P = R = F1 = 2/3.
        ([["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O", "O"]],
         [["B-PER", "I-PER", "O", "B-LOC", "B-ORG"], ["O", "O", "O"]], (2 / 3, 2 / 3, 2 / 3)),
        # A type error is one false positive and one false negative: P = R = 1/2.
        ([["B-PER", "O", "B-LOC"]], [["B-PER", "O", "B-ORG"]], (1 / 2, 1 / 2, 1 / 2)),
        # A wrong span is also FP + FN; 4 predicted, 3 gold, 1 right.
        ([["B-PER", "I-PER", "O", "B-LOC", "B-ORG"]], [["B-PER", "O", "B-LOC", "B-LOC", "I-PER"]],
         (1 / 4, 1 / 3, 2 / 7)),
        # Invalid IOB2 is read like conlleval: I-X after O or at the start opens an X entity.
        ([["B-PER", "I-PER", "O", "B-LOC"]], [["I-PER", "I-PER", "O", "I-LOC"]], (1.0, 1.0, 1.0)),
        # I-X after B-Y opens a new X entity: PER + LOC, where gold has one LOC span.
        ([["B-LOC", "I-LOC"]], [["B-PER", "I-LOC"]], (0.0, 0.0, 0.0)),
        # Nothing predicted: P is 0 (as in conlleval), not a warning or NaN.
        ([["B-PER", "O"]], [["O", "O"]], (0.0, 0.0, 0.0)),
    ],
)
def test_score_against_hand_computed_values(gold, predicted, expected):
    metrics = TASK.score(gold, predicted)
    precision, recall, f1 = expected
    assert metrics["precision"] == pytest.approx(precision)
    assert metrics["recall"] == pytest.approx(recall)
    assert metrics["f1"] == pytest.approx(f1)
    assert metrics["words"] == sum(len(g) for g in gold)


def test_score_of_nothing_is_nan():
    metrics = TASK.score([], [])
    assert metrics["words"] == 0 and all(metrics[k] != metrics[k] for k in ("f1", "precision", "recall"))


class Oracle(torch.nn.Module):
    """Predicts B-PER at the sub-word 'T' (as in 'Tom') and O everywhere else."""

    def __init__(self, t_id: int):
        super().__init__()
        self.t_id = t_id
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # eval_batches looks up the device

    def forward(self, input_ids, attention_mask, **_):
        logits = torch.zeros(*input_ids.shape, len(NER_TAGS))
        logits[..., ID["O"]] = 1.0
        logits[input_ids == self.t_id, ID["B-PER"]] = 2.0
        return SimpleNamespace(logits=logits)


def test_an_entity_lost_to_truncation_is_a_false_negative(tiny_tokenizer):
    sentence = TaggedSentence(("Tom", "sang", "Tom"), ("B-PER", "O", "B-PER"))
    model = Oracle(tiny_tokenizer.convert_tokens_to_ids("T"))
    full = TASK.evaluate(model, [sentence], tiny_tokenizer, max_length=64, batch_size=2)
    assert (full["precision"], full["recall"], full["f1"]) == (1.0, 1.0, 1.0)

    # [CLS] T ##o ##m s ##a ##n ##g [SEP]: the second "Tom" does not fit in 9 tokens.
    assert len(tiny_tokenizer.tokenize("Tom sang")) == 7
    assert TASK.predict(model, [sentence], tiny_tokenizer, 9, 2) == [["B-PER", "O", None]]
    cut = TASK.evaluate(model, [sentence], tiny_tokenizer, max_length=9, batch_size=2)
    assert cut["precision"] == 1.0 and cut["recall"] == pytest.approx(1 / 2) and cut["f1"] == pytest.approx(2 / 3)
    assert cut["words"] == 3


def test_predictions_do_not_depend_on_batching(make_tagger, tiny_tokenizer):
    model = make_tagger(seed=1, num_labels=len(NER_TAGS))
    one = TASK.predict(model, SENTENCES, tiny_tokenizer, 12, batch_size=1)
    all_ = TASK.predict(model, SENTENCES, tiny_tokenizer, 12, batch_size=3)
    assert one == all_ and [len(p) for p in one] == [len(s.words) for s in SENTENCES]


def test_build_model(tmp_path, tiny_config):
    BertForMaskedLM(tiny_config).save_pretrained(tmp_path)
    model = TASK.build_model(tmp_path, seed=3)
    again = TASK.build_model(tmp_path, seed=3)
    assert model.config.num_labels == len(NER_TAGS) and model.config.id2label[1] == "B-PER"
    assert model.config.label2id["I-LOC"] == 6
    assert torch.equal(model.classifier.weight, again.classifier.weight)
    assert TASK.head_parameter_names(model) == ["classifier.weight", "classifier.bias"]


def test_training_steps_lower_the_loss_and_evaluate_scores(make_tagger, tiny_tokenizer):
    model = make_tagger(seed=0, num_labels=len(NER_TAGS))
    batch = TASK.collator(tiny_tokenizer)(TASK.featurize(SENTENCES, tiny_tokenizer, max_length=32))
    assert batch["labels"].shape == batch["input_ids"].shape
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(6):
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0]
    metrics = TASK.evaluate(model, SENTENCES, tiny_tokenizer, max_length=32, batch_size=2)
    assert set(metrics) == {"f1", "precision", "recall", "words"}
    assert 0.0 <= metrics["f1"] <= 1.0 and metrics["words"] == 13
    assert not model.training  # evaluation switched dropout off
