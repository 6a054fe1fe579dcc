"""URIEL typology vectors: the input of MAD-G's parameter generator.

MAD-G's authors (github adapter-hub/CPGAdapters) feed the generator lang2vec's
``syntax_knn+phonology_knn+inventory_knn``: 103 syntax, 28 phonology and 158 phoneme
inventory features, 289 values of 0 or 1, with the gaps in URIEL filled by k-nearest-
neighbour prediction so that every language URIEL lists gets a complete vector.

The values come from lang2vec 1.1.2's own data file, read here with numpy instead of through
``lang2vec.get_features``: lang2vec imports ``pkg_resources`` at import time, which
setuptools 82 removed, so importing it fails in a fresh environment. The knn sets live in
``lang2vec/data/feature_predictions.npz`` (plain float32 and unicode arrays: it loads with
``allow_pickle=False``). The vector is assembled the way lang2vec assembles it (each set's
features in the file's order, the sets concatenated in the order named), and the codes are
normalised with lang2vec's own ISO 639-1 table (``letter_codes.json`` in the same wheel), so a
code gives exactly the vector ``get_features(code, FEATURE_SET)`` would give (tests/test_typology.py
checks this against lang2vec itself).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from pipeline.core.errors import LtsftError

LANG2VEC = "lang2vec==1.1.2"
FEATURE_SET = "syntax_knn+phonology_knn+inventory_knn"
# lang2vec's FEATURE_SETS_DICT entries for the three knn sets: (file, source, feature-name prefix).
_KNN_FILE = "feature_predictions.npz"
_KNN_SOURCE = "predicted"
_PREFIXES = {"syntax_knn": "S_", "phonology_knn": "P_", "inventory_knn": "INV_"}
DIMENSIONS = 289  # 103 + 28 + 158, as in the authors' code


def _data_file(name: str) -> Path:
    """A file in the installed lang2vec wheel's data folder, found through the installed
    distribution's metadata rather than by importing ``lang2vec``: the wheel also installs a
    script ``bin/lang2vec.py``, and under any console script (``ltsft``, ``pytest``) the bin
    folder comes first on sys.path, so ``import lang2vec`` would find that script instead."""
    try:
        dist = metadata.distribution("lang2vec")
    except metadata.PackageNotFoundError:
        raise LtsftError(f"lang2vec is not installed (URIEL typology needs it): pip install {LANG2VEC}") from None
    if dist.version != LANG2VEC.split("==")[1]:
        raise LtsftError(f"lang2vec {dist.version} is installed; URIEL typology is pinned to {LANG2VEC}")
    path = Path(str(dist.locate_file(f"lang2vec/data/{name}")))
    if not path.is_file():
        raise LtsftError(f"{path}: missing from the installed lang2vec ({LANG2VEC})")
    return path


@lru_cache(maxsize=1)
def letter_codes() -> dict[str, str]:
    """lang2vec's table to ISO 639-3 (from ISO 639-1 and a few ISO 639-2/B codes), the one lang2vec applies itself."""
    return dict(json.loads(_data_file("letter_codes.json").read_text(encoding="utf-8")))


@lru_cache(maxsize=1)
def _knn_table() -> tuple[dict[str, int], np.ndarray]:
    """(ISO 639-3 code -> row, the (languages, 289) float32 matrix in FEATURE_SET's order)."""
    with np.load(_data_file(_KNN_FILE), allow_pickle=False) as archive:
        data, langs, feats, sources = (archive[key] for key in ("data", "langs", "feats", "sources"))
    source = int(np.flatnonzero(sources == _KNN_SOURCE)[0])
    feats = [str(f) for f in feats]
    # Feature names of one set are those with its prefix, in the file's order (lang2vec's get_feature_names).
    columns = [i for prefix in _PREFIXES.values() for i, name in enumerate(feats) if name.startswith(prefix)]
    if len(columns) != DIMENSIONS:
        raise LtsftError(f"lang2vec {_KNN_FILE}: {len(columns)} knn features, expected {DIMENSIONS} ({LANG2VEC})")
    matrix = np.ascontiguousarray(data[:, columns, source], dtype=np.float32)
    return {str(code): row for row, code in enumerate(langs)}, matrix


def iso639_3(code: str) -> str:
    """The ISO 639-3 code for a project language code, through lang2vec's own table: two-letter
    (ISO 639-1) codes and the twenty ISO 639-2/B codes it lists (alb -> sqi, ger -> deu, ...);
    any other three-letter code as it is (the paper presets already use ISO 639-3: pcm, quy, shp)."""
    if not isinstance(code, str) or not code.isascii() or not code.isalpha() or not code.islower() \
            or len(code) not in (2, 3):
        raise LtsftError(f"language code {code!r}: expected a lower-case two- or three-letter code")
    table = letter_codes()
    if code in table:
        return table[code]
    if len(code) == 2:
        raise LtsftError(f"language code {code!r}: not an ISO 639-1 code lang2vec knows, no ISO 639-3 code for it")
    return code


def uriel_languages() -> frozenset[str]:
    """Every ISO 639-3 code with a knn typology vector."""
    return frozenset(_knn_table()[0])


def knows(code: str) -> bool:
    """Whether URIEL has a vector for ``code`` (any code iso639_3 accepts); False for malformed codes."""
    try:
        return iso639_3(code) in _knn_table()[0]
    except LtsftError:
        return False


def uriel_vector(code: str) -> np.ndarray:
    """The 289-dim 0/1 float32 typology vector of ``code`` (a fresh copy: callers may write to it)."""
    iso = iso639_3(code)
    rows, matrix = _knn_table()
    if iso not in rows:
        looked_up = f"looked up as {iso!r}" if iso != code else "looked up as is"
        raise LtsftError(f"language {code!r}: URIEL ({LANG2VEC}, {FEATURE_SET}) has no such language ({looked_up})")
    return matrix[rows[iso]].copy()


def uriel_vectors(codes: Iterable[str]) -> dict[str, np.ndarray]:
    """``{code: uriel_vector(code)}`` for each code, keyed by the code as given."""
    return {code: uriel_vector(code) for code in codes}
