"""URIEL typology vectors (pipeline/typology.py): lang2vec's own answer, without pkg_resources."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import types
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import LtsftError
from pipeline.sources.demo_sources import UDHR_CODES
from pipeline.typology import (
    DIMENSIONS,
    FEATURE_SET,
    iso639_3,
    knows,
    letter_codes,
    uriel_languages,
    uriel_vector,
    uriel_vectors,
)

# sha256 of each vector as 289 bytes (uint8 0/1), computed once from lang2vec 1.1.2 itself:
#   lang2vec.get_features(["eng", "heb", "jpn", "yor"], "syntax_knn+phonology_knn+inventory_knn")
#   -> np.array(values, dtype=np.uint8).tobytes() -> hashlib.sha256(...).hexdigest()
# (imported with a pkg_resources shim, as in test_equals_lang2vec_itself). It pins the data even
# where lang2vec's module cannot be imported.
KNOWN = {
    "eng": (103, "48f2434a3930c0dd"),
    "heb": (92, "352a92621b7f24d7"),
    "jpn": (76, "aca9f903d8a7955c"),
    "yor": (75, "bfc37e7bf94050a9"),
}


def _digest(vector: np.ndarray) -> str:
    return hashlib.sha256(vector.astype(np.uint8).tobytes()).hexdigest()[:16]


def _import_lang2vec(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """lang2vec's own module, loaded from its installed file (``import lang2vec`` under pytest
    finds the wheel's bin/lang2vec.py script first), importable even where setuptools no longer
    ships pkg_resources: the shim gives the one function lang2vec uses, resource_filename."""
    folder = Path(str(metadata.distribution("lang2vec").locate_file("lang2vec")))
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, rel: str(folder / rel)
        monkeypatch.setitem(sys.modules, "pkg_resources", shim)
    spec = importlib.util.spec_from_file_location("lang2vec_reference", folder / "lang2vec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_equals_lang2vec_itself_for_every_language(monkeypatch: pytest.MonkeyPatch) -> None:
    l2v = _import_lang2vec(monkeypatch)
    codes = sorted(uriel_languages())
    assert len(codes) > 7000
    theirs = l2v.get_features(codes, FEATURE_SET)
    ours = uriel_vectors(codes)
    for code in codes:
        assert np.array_equal(np.asarray(theirs[code], dtype=np.float32), ours[code]), code
    # short codes go through the same table lang2vec applies
    for code in ("en", "he", "ja", "sw", "gn", "ny", "gre"):
        assert np.array_equal(np.asarray(l2v.get_features(code, FEATURE_SET)[code], dtype=np.float32),
                              uriel_vector(code)), code


def test_known_properties() -> None:
    vectors = uriel_vectors(["en", "he", "tr", "ja", "id", "yo", "pcm", "quy", "shp", "cni"])
    for code, vector in vectors.items():
        assert vector.shape == (DIMENSIONS,) == (289,) and vector.dtype == np.float32, code
        assert set(np.unique(vector)) <= {0.0, 1.0}, code
    digests = {_digest(v) for v in vectors.values()}
    assert len(digests) == len(vectors)  # distinct languages, distinct vectors
    for code, (ones, digest) in KNOWN.items():
        assert (int(uriel_vector(code).sum()), _digest(uriel_vector(code))) == (ones, digest), code


def test_codes_and_copies() -> None:
    assert [iso639_3(c) for c in ("en", "he", "tr", "ja", "id", "yo", "ha", "ig", "sw", "am", "rw", "lg",
                                  "wo", "ny", "gn")] == \
        ["eng", "heb", "tur", "jpn", "ind", "yor", "hau", "ibo", "swa", "amh", "kin", "lug", "wol", "nya", "grn"]
    assert iso639_3("pcm") == "pcm" and iso639_3("quy") == "quy"
    assert iso639_3("alb") == "sqi" and iso639_3("ger") == "deu"  # ISO 639-2/B codes, as lang2vec maps them
    assert np.array_equal(uriel_vector("en"), uriel_vector("eng"))
    v = uriel_vector("en")
    v[:] = 7
    assert set(np.unique(uriel_vector("en"))) <= {0.0, 1.0}  # callers get copies, the table stays intact
    # the demo's udhr declaration codes (a different table: udhr file names) agree for its languages
    assert all(iso639_3(lang) == code for lang, code in UDHR_CODES.items())
    assert len(letter_codes()) == 204 and knows("he") and not knows("nah") and not knows("Xx")


@pytest.mark.parametrize("code, message", [
    ("nah", r"language 'nah': URIEL .* has no such language \(looked up as is\)"),
    ("xx", r"language code 'xx': not an ISO 639-1 code"),
    ("EN", r"language code 'EN': expected a lower-case"),
    ("english", r"language code 'english': expected"),
    ("zzz", r"language 'zzz': URIEL"),
])
def test_unknown_language_is_one_line(code: str, message: str) -> None:
    with pytest.raises(LtsftError, match=message) as err:
        uriel_vector(code)
    assert "\n" not in str(err.value)
