"""Hub loaders (pipeline/sources/hub.py) offline: small parquet files written here in the
hub's schemas, read through `data.local_root`; and the fast failure when the hub is away."""

from __future__ import annotations

import time
from pathlib import Path

import datasets
import pytest

from pipeline.sources import hub
from pipeline.formats.conllu import UPOS_TAGS

UD_ROWS = {
    "idx": ["s1", "s2"],
    "tokens": [["I", "saw", "it", "."], ["Don't", "Do", "n't", "go"]],
    "upos": [["PRON", "VERB", "PRON", "PUNCT"], ["_", "AUX", "PART", "VERB"]],
    "head": [[2, 0, 2, 2], [None, 3, 3, 0]],
    "deprel": [["nsubj", "root", "obj", "punct"], ["_", "aux", "advmod", "root"]],
}


def write_parquet(root: Path, split: hub.HubSplit, rows: dict, features: datasets.Features | None = None) -> None:
    folder = root / split.repo / (split.data_dir or split.name or "") / split.split
    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "0000.parquet"))


def test_ud_newer_typing_strings_and_ints(tmp_path):
    split = hub.ud_split("en_ewt", "dev")
    assert split.split == "dev" and split.revision == hub.PARQUET_BRANCH
    write_parquet(tmp_path, split, UD_ROWS)
    sentences = hub.ud_sentences(hub.load_split(split, tmp_path))
    assert [s.words for s in sentences] == [("I", "saw", "it", "."), ("Do", "n't", "go")]
    assert sentences[0].heads == (2, 0, 2, 2) and sentences[1].heads == (3, 3, 0)
    assert sentences[1].upos == ("AUX", "PART", "VERB") and sentences[0].deprels[3] == "punct"


def test_ud_older_typing_classlabel_upos_and_string_heads(tmp_path):
    upos_names = list(UPOS_TAGS) + ["_"]
    rows = dict(UD_ROWS)
    rows["upos"] = [[upos_names.index(t) for t in sentence] for sentence in UD_ROWS["upos"]]
    rows["head"] = [["2", "0", "2", "2"], ["None", "3", "3", "0"]]
    features = datasets.Features({
        "idx": datasets.Value("string"), "tokens": datasets.List(datasets.Value("string")),
        "upos": datasets.List(datasets.ClassLabel(names=upos_names)),
        "head": datasets.List(datasets.Value("string")), "deprel": datasets.List(datasets.Value("string")),
    })
    split = hub.ud_split("bm_crb", "test")
    write_parquet(tmp_path, split, rows, features)
    sentences = hub.ud_sentences(hub.load_split(split, tmp_path))
    assert sentences[0].upos == ("PRON", "VERB", "PRON", "PUNCT") and sentences[0].heads == (2, 0, 2, 2)
    assert sentences[1].words == ("Do", "n't", "go")


def test_ner_maps_misc_and_date_to_outside_and_repairs_bio(tmp_path):
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE", "B-MISC", "I-MISC"]
    features = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                                  "ner_tags": datasets.List(datasets.ClassLabel(names=names))})
    rows = {"tokens": [["Obi", "went", "to", "Lagos", "on", "Monday"], ["EU", "Cup"]],
            "ner_tags": [[1, 0, 0, 5, 0, 7], [3, 10]]}
    split = hub.masakhaner_split("yor", "dev")
    assert split.split == "validation"
    write_parquet(tmp_path, split, rows, features)
    sentences = hub.ner_sentences(hub.load_split(split, tmp_path))
    assert sentences[0].tags == ("B-PER", "O", "O", "B-LOC", "O", "O")
    assert sentences[1].tags == ("B-ORG", "O")


def test_nli_integer_labels_and_unlabelled_rows(tmp_path):
    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list(hub.NLI_LABELS))})
    rows = {"premise": ["a", "b", "c"], "hypothesis": ["x", "y", "z"], "label": [0, 2, -1]}
    split = hub.americas_nli_split("quy", "test")
    write_parquet(tmp_path, split, rows, features)
    assert hub.nli_rows(hub.load_split(split, tmp_path)) == [
        {"premise": "a", "hypothesis": "x", "label": "entailment"},
        {"premise": "b", "hypothesis": "y", "label": "contradiction"}]


def test_wikipedia_streams_paragraphs_up_to_a_limit(tmp_path):
    split = hub.wikipedia_split("yo")
    assert split.data_dir == "20231101.yo"
    write_parquet(tmp_path, split, {"id": ["1", "2"], "url": ["u", "v"], "title": ["A", "B"],
                                    "text": ["Heading\nOne two three four.\nFive six seven.", "Eight nine ten."]})
    dataset = hub.load_split(split, tmp_path, streaming=True)
    assert hub.wikipedia_lines(dataset, max_lines=2) == ["One two three four.", "Five six seven."]


def test_missing_local_copy_is_named(tmp_path):
    with pytest.raises(hub.HubError, match="no parquet files") as err:
        hub.load_split(hub.ud_split("en_ewt", "train"), tmp_path)
    assert "universal_dependencies/en_ewt/train" in str(err.value) and "\n" not in str(err.value)


def test_unreachable_hub_fails_fast_with_advice(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    start = time.monotonic()
    with pytest.raises(hub.HubError, match="cannot reach the Hugging Face hub") as err:
        hub.check_reachable()
    assert time.monotonic() - start < 15
    assert "data.local_root" in str(err.value) and "\n" not in str(err.value)


def test_offline_mode_is_refused_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.HubError, match="HF_HUB_OFFLINE"):
        hub.check_reachable()


# MasakhaNER 1.0 as its parquet branch holds it (the hub's converter keeps the loading script's
# features): configs = language codes, splits train / validation / test, ner_tags ClassLabel ids.
MASAKHANER1_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"]
MASAKHANER1_FEATURES = datasets.Features({
    "id": datasets.Value("string"), "tokens": datasets.List(datasets.Value("string")),
    "ner_tags": datasets.List(datasets.ClassLabel(names=MASAKHANER1_TAGS))})


def masakhaner1_rows(*sentences: list[tuple[str, str]]) -> dict:
    return {"id": [str(i) for i in range(len(sentences))], "tokens": [[w for w, _ in s] for s in sentences],
            "ner_tags": [[MASAKHANER1_TAGS.index(t) for _, t in s] for s in sentences]}


def test_benchmark_choices_match_the_hub_loaders():
    from pipeline.core.config import DEFAULT_NER_BENCHMARK, NER_BENCHMARKS

    assert NER_BENCHMARKS == tuple(hub.MASAKHANER) and DEFAULT_NER_BENCHMARK in NER_BENCHMARKS
    assert hub.MASAKHANER["masakhaner1"].languages == (
        "amh", "hau", "ibo", "kin", "lug", "luo", "pcm", "swa", "wol", "yor")


def test_masakhaner1_split_maps_date_to_outside(tmp_path):
    split = hub.masakhaner_split("hau", "dev", "masakhaner1")
    assert (split.repo, split.data_dir, split.split, split.revision) == (
        "masakhane/masakhaner", "hau", "validation", hub.PARQUET_BRANCH)
    assert hub.masakhaner_split("hau", "test").repo == "masakhane/masakhaner2"  # the default: unchanged
    rows = masakhaner1_rows(
        [("Buhari", "B-PER"), ("ya", "O"), ("je", "O"), ("Kano", "B-LOC"), ("ranar", "B-DATE"), ("Litinin", "I-DATE")],
        [("Hukumar", "B-ORG"), ("INEC", "I-ORG"), ("a", "O"), ("shekarar", "B-DATE"), ("2019", "I-DATE"),
         ("Abuja", "B-LOC"), ("ta", "I-LOC")])
    write_parquet(tmp_path, split, rows, MASAKHANER1_FEATURES)
    dataset = hub.load_split(split, tmp_path)
    assert list(dataset.features["ner_tags"].feature.names) == MASAKHANER1_TAGS  # the ids are read through these
    sentences = hub.ner_sentences(dataset)
    assert sentences[0].tags == ("B-PER", "O", "O", "B-LOC", "O", "O")
    assert sentences[1].tags == ("B-ORG", "I-ORG", "O", "O", "O", "B-LOC", "I-LOC")


def _ner_params(local_root, targets: list[str], benchmark: str | None = "masakhaner1"):
    """The paper preset cut down to its NER task (no Wikipedia), reading parquet under local_root."""
    import yaml

    from pipeline.core.config import parse_params

    tree = yaml.safe_load((Path(__file__).resolve().parents[1] / "presets" / "paper.yaml").read_text())
    tree["data"]["local_root"] = str(local_root) if local_root else None
    tree["languages"] = {lang: {"text": []} for lang in ["en", *targets]}
    tree["tasks"] = {"ner": {"source": "en", "targets": targets, **({"benchmark": benchmark} if benchmark else {})}}
    tree["ablation"]["task"] = "ner"
    tree["published"].update(languages=[], tasks=[], unreleased=[], adapter_languages=[], adapter_tasks=[])
    return parse_params(tree)


def test_collect_reads_masakhaner1_targets_and_conll_source(tmp_path):
    from pipeline.sources.collect import collect_hub

    conll = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                               "ner_tags": datasets.List(datasets.ClassLabel(names=["O", "B-MISC", "B-PER"]))})
    for split in ("train", "dev"):
        write_parquet(tmp_path, hub.conll2003_split(split), {"tokens": [["Obi", "is", "German"]],
                                                              "ner_tags": [[2, 0, 1]]}, conll)
    write_parquet(tmp_path, hub.masakhaner_split("yor", "test", "masakhaner1"),
                  masakhaner1_rows([("Ọjọ́", "B-DATE"), ("Ẹtì", "I-DATE"), ("Ade", "B-PER")]), MASAKHANER1_FEATURES)
    collected = collect_hub(_ner_params(tmp_path, ["yor"]))
    assert collected.splits[("ner", "yor", "test")][0].tags == ("O", "O", "B-PER")
    assert collected.splits[("ner", "en", "train")][0].tags == ("B-PER", "O", "O")
    assert collected.provenance["splits"]["ner/yor/test"] == "masakhane/masakhaner@refs/convert/parquet:yor/test"


def test_a_target_masakhaner1_lacks_is_refused_before_the_hub_is_asked(monkeypatch):
    from pipeline.core.config import ConfigError
    from pipeline.sources.collect import collect_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # were the hub asked first, this would be a HubError
    with pytest.raises(ConfigError) as err:
        collect_hub(_ner_params(None, ["yor", "bam"]))  # Bambara is in MasakhaNER 2.0 only
    message = str(err.value)
    assert message.startswith("tasks.ner.targets: MasakhaNER 1.0 (masakhane/masakhaner) has no language 'bam'")
    assert "amh, hau" in message and "\n" not in message
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(hub.HubError):  # 2.0 (the default) does not list its languages here: the hub decides
        collect_hub(_ner_params(None, ["yor", "bam"], benchmark=None))
