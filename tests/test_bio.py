"""IOB2 NER files and tag repairs (pipeline/formats/bio.py)."""

from __future__ import annotations

import pytest

from pipeline.formats.bio import (
    NER_TAGS, TaggedSentence, biose_to_bio, iob2_error, map_entity_types, read_bio, to_bio, write_bio,
)

SENTENCES = [
    TaggedSentence(("Dani", "lives", "in", "Tel", "Aviv", "."), ("B-PER", "O", "O", "B-LOC", "I-LOC", "O")),
    TaggedSentence(("東京",), ("B-LOC",)),
]


def test_round_trip(tmp_path):
    path = tmp_path / "out" / "train.bio"
    write_bio(SENTENCES, path)
    assert path.read_text(encoding="utf-8").startswith("Dani\tB-PER\nlives\tO\n")
    assert path.read_text(encoding="utf-8").endswith("\n\n東京\tB-LOC\n\n")
    assert read_bio(path) == SENTENCES
    assert [p.name for p in path.parent.iterdir()] == ["train.bio"]  # no temporary left


def test_tagged_sentence_needs_one_tag_per_word():
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        TaggedSentence(("a", "b"), ("O",))


def test_write_rejects_whitespace_words_and_leaves_no_file(tmp_path):
    path = tmp_path / "x.bio"
    with pytest.raises(ValueError, match="sentence 1"):
        write_bio([TaggedSentence(("a b",), ("O",))], path)
    with pytest.raises(ValueError, match="empty"):
        write_bio([TaggedSentence((), ())], path)
    assert not path.exists()


def test_to_bio_repairs_iob1():
    assert to_bio(["I-PER", "I-PER", "O", "I-LOC", "I-ORG", "B-ORG", "I-ORG"]) == (
        "B-PER", "I-PER", "O", "B-LOC", "B-ORG", "B-ORG", "I-ORG")
    with pytest.raises(ValueError, match="BIOSE"):
        to_bio(["S-PER"])
    with pytest.raises(ValueError, match="not an entity tag"):
        to_bio(["PER"])


def test_biose_to_bio():
    assert biose_to_bio(["S-GPE", "B-PER", "I-PER", "E-PER", "O", "E-ORG"]) == (
        "B-GPE", "B-PER", "I-PER", "I-PER", "O", "B-ORG")


def test_map_entity_types_drops_unmapped_and_keeps_iob2():
    table = {"person": "PER", "PSN": "PER", "GPE": "LOC", "LOC": "LOC"}
    assert map_entity_types(["B-person", "I-person", "O", "B-movie", "I-movie"], table) == (
        "B-PER", "I-PER", "O", "O", "O")
    # merged types: the second entity still opens with B-
    assert map_entity_types(["B-GPE", "B-LOC", "I-LOC"], table) == ("B-LOC", "B-LOC", "I-LOC")
    assert all(iob2_error(map_entity_types(t, table)) is None for t in (["I-PSN", "I-PSN"], ["B-ART", "I-PSN"]))


def test_read_bio_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.bio"
    path.write_text("Dani\tB-PER\n\nlives in\tO\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.bio, line 3: expected 'word<TAB>tag'"):
        read_bio(path)
    path.write_text("a\tO\nb\tB-MISC\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.bio, line 2: unknown tag 'B-MISC'"):
        read_bio(path)
    assert read_bio(path, tagset=None) == [TaggedSentence(("a", "b"), ("O", "B-MISC"))]
    path.write_text("a\tO\n\nb\tO\nc\tI-PER\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.bio, line 3: sentence 2: tag 2 is 'I-PER' after O"):
        read_bio(path)


def test_ner_tags():
    assert NER_TAGS[0] == "O" and len(set(NER_TAGS)) == 7
    assert iob2_error(["B-PER", "I-PER", "I-ORG"]) == "tag 3 is 'I-ORG' after I-PER"
    assert iob2_error(["E-PER"]) == "tag 1 is 'E-PER', not IOB2"
