"""Tag tables into UD v2 UPOS (pipeline/sources/tagsets.py)."""

from __future__ import annotations

import pytest

from pipeline.formats.conllu import UPOS_TAGS
from pipeline.sources.tagsets import (
    GOOGLE_UNIVERSAL_TO_UPOS, PENN_TO_UPOS, TWT_COARSE_TO_UPOS, TWT_FINE_TO_UPOS, UPOS_IDENTITY, map_tags,
)

# The 36 word-level tags of the Penn Treebank tagset (Santorini 1990) and its 12 punctuation/symbol tags.
PENN_WORD_TAGS = (
    "CC CD DT EX FW IN JJ JJR JJS LS MD NN NNS NNP NNPS PDT POS PRP PRP$ RB RBR RBS RP SYM TO UH "
    "VB VBD VBG VBN VBP VBZ WDT WP WP$ WRB"
).split()
PENN_PUNCT_TAGS = ("#", "$", "''", "``", "(", ")", "-LRB-", "-RRB-", ",", ".", ":", "-LCB-", "-RCB-")
GOOGLE_TAGS = ("ADJ", "ADP", "ADV", "CONJ", "DET", "NOUN", "NUM", "PRON", "PRT", "VERB", ".", "X")


ALL_TABLES = [PENN_TO_UPOS, GOOGLE_UNIVERSAL_TO_UPOS, TWT_COARSE_TO_UPOS, TWT_FINE_TO_UPOS, UPOS_IDENTITY]


@pytest.mark.parametrize("table", ALL_TABLES)
def test_every_table_maps_into_upos(table):
    assert set(table.values()) <= set(UPOS_TAGS)


def test_penn_table_is_complete():
    assert len(PENN_WORD_TAGS) == 36
    assert set(PENN_WORD_TAGS) | set(PENN_PUNCT_TAGS) <= set(PENN_TO_UPOS)
    assert "-NONE-" not in PENN_TO_UPOS  # empty elements are not words


def test_google_table_is_exactly_the_twelve_tags():
    assert set(GOOGLE_UNIVERSAL_TO_UPOS) == set(GOOGLE_TAGS)


@pytest.mark.parametrize("table, tag, upos", [
    (PENN_TO_UPOS, "NNP", "PROPN"), (PENN_TO_UPOS, "MD", "AUX"), (PENN_TO_UPOS, "PRP$", "PRON"),
    (PENN_TO_UPOS, "TO", "PART"), (PENN_TO_UPOS, "-LRB-", "PUNCT"), (PENN_TO_UPOS, "$", "SYM"),
    (PENN_TO_UPOS, "CC", "CCONJ"), (PENN_TO_UPOS, "RP", "ADP"), (PENN_TO_UPOS, "UH", "INTJ"),
    (GOOGLE_UNIVERSAL_TO_UPOS, "CONJ", "CCONJ"), (GOOGLE_UNIVERSAL_TO_UPOS, "PRT", "PART"),
    (GOOGLE_UNIVERSAL_TO_UPOS, ".", "PUNCT"), (TWT_COARSE_TO_UPOS, "PUNCT", "PUNCT"),
    (TWT_COARSE_TO_UPOS, "ONOM", "X"), (TWT_FINE_TO_UPOS, "NNP", "PROPN"), (TWT_FINE_TO_UPOS, "VJ", "VERB"),
])
def test_hand_checked_mappings(table, tag, upos):
    assert table[tag] == upos


def test_map_tags_maps_in_order():
    assert map_tags(["DT", "NN", "."], PENN_TO_UPOS, "wsj") == ("DET", "NOUN", "PUNCT")
    assert map_tags([], PENN_TO_UPOS, "wsj") == ()


def test_unknown_tag_names_tag_and_source():
    with pytest.raises(ValueError, match=r"^twt: unknown tag 'NOPE'$"):
        map_tags(["NOUN", "NOPE"], GOOGLE_UNIVERSAL_TO_UPOS, "twt")
