"""MAD-G's stages: the generator's training text, the generator stage, and their refusals.

The methods themselves (mad-g, mad-g-ls) go through the registry's contract table
(tests/test_methods_contract.py) and the smoke pipeline (tests/test_pipeline.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.core.config import ConfigError, parse_params
from pipeline.formats.adapter import read_adapter_meta
from pipeline.methods.mad_g.generator import (
    generate_adapter,
    load_generator,
    typology_tensor,
)
from pipeline.sources import generator_text
from pipeline.typology import uriel_vector
from stages import dvc_yaml
from tests.test_pipeline import ltsft, smoke_params, workdir, write_params  # noqa: F401  (workdir: a fixture)
from tests.test_udhr_languages import LONG, _archive, _html


def test_local_text_is_the_listed_languages_and_a_target_is_refused_in_one_line():
    texts, provenance = generator_text.collect_generator_text(parse_params(smoke_params()))
    assert list(texts) == ["en"] and len(texts["en"]) == 60 and provenance["source"] == "local"
    with pytest.raises(ConfigError, match=r"^mad_g.train_languages: 'yy' is task target 'yy' \(targets stay unseen\)$"):
        generator_text.collect_generator_text(parse_params(smoke_params(**{"mad_g.train_languages": ["en", "yy"]})))
    with pytest.raises(ConfigError, match="required with data.source local"):
        generator_text.collect_generator_text(parse_params(smoke_params(**{"mad_g.train_languages": None})))


def test_registry_text_is_every_udhr_language_uriel_knows_minus_the_targets(tmp_path, monkeypatch):
    archive = _archive(tmp_path, {
        "package/declaration/eng.html": _html("eng", "eng", LONG),
        "package/declaration/hau.html": _html("hau", "hau", LONG, LONG),
        "package/declaration/nld.html": _html("nld", "nld", LONG),  # smoke's xx borrows Dutch: kept (xx is no Dutch)
        "package/declaration/heb.html": _html("heb", "heb", LONG),  # a target below, as "he"
        "package/declaration/cnr.html": _html("cnr", "cnr", LONG),  # not in URIEL
    })
    monkeypatch.setattr(generator_text, "fetch", lambda pin, cache: archive)
    params = smoke_params(**{"data.source": "registry", "mad_g.train_languages": None})
    params["languages"]["he"] = {"name": "Hebrew"}
    params["tasks"]["pos"]["targets"] = ["xx", "he"]
    texts, provenance = generator_text.collect_generator_text(parse_params(params))
    assert list(texts) == ["eng", "hau", "nld"] and len(texts["hau"]) == 2
    assert provenance["excluded"] == ["he", "xx"] and provenance["declarations"]["hau"] == "hau"

    params["mad_g"]["train_languages"] = ["ha", "eng"]  # ISO 639-1 or 639-3
    assert list(generator_text.collect_generator_text(parse_params(params))[0]) == ["hau", "eng"]
    for bad, expected in ((["cnr"], "'cnr' .* has no usable UDHR translation"), (["heb"], "'heb' is task target 'he'")):
        params["mad_g"]["train_languages"] = bad
        with pytest.raises(ConfigError, match=expected):
            generator_text.collect_generator_text(parse_params(params))


@pytest.mark.usefixtures("workdir")
def test_generator_stage_writes_the_generator_and_an_adapter_per_language():
    params = smoke_params(**{"mad_g.generator.phase": {"steps": 3}})
    write_params(params)
    for step in (("download",), ("prepare-model",), ("mad-g-text",), ("train-generator",)):
        result = ltsft(*step)
        assert result.exit_code == 0, (step, result.output)
    assert json.loads(Path("corpora/mad-g/manifest.json").read_text())["lines"] == {"en": 60}
    from pipeline.tasks import get_task

    model = get_task("pos").build_model(Path("models/base"), 0)
    generator = load_generator("adapters/mad-g/generator/uriel", model, "tiny-bert-smoke")
    saved = {}
    for lang, code in (("en", "en"), ("xx", "nld"), ("yy", "fra")):
        path = Path("adapters/mad-g/lang") / lang
        meta = read_adapter_meta(path)
        assert meta["trainable_parameters"] == 0 and meta["typology"] == code and meta["invertible"] is False
        assert set(meta["dev_metrics"]) == {"before", "after"}  # θ0 alone, and with the generated adapter
        # The saved adapter is the generator's output for the language's typology, bit for bit.
        from safetensors.torch import load_file

        saved[lang] = load_file(path / "madx_adapter.safetensors")
        regenerated = generate_adapter(generator, typology_tensor(uriel_vector(code), generator)).state_dict()
        assert all(torch.equal(saved[lang][name], regenerated[name]) for name in regenerated)
    assert not torch.equal(saved["xx"]["layers.0.down.weight"], saved["yy"]["layers.0.down.weight"])
    assert Path("curves/adapters/mad-g/generator/uriel/mad-g-generator/loss.tsv").is_file()


@pytest.mark.usefixtures("workdir")
def test_generator_stage_refusals_are_one_line_and_write_nothing():
    write_params(smoke_params())
    assert ltsft("download").exit_code == 0 and ltsft("prepare-model").exit_code == 0
    result = ltsft("train-lang", "xx", "--method", "mad-g-ls")  # before any adapter was generated
    assert result.exit_code == 2 and result.output.strip().endswith("adapters/mad-g/lang/xx: not found "
                                                                     "(run `dvc repro` or the stage that writes it)")
    result = ltsft("train-generator")
    assert result.exit_code == 2 and "corpora/mad-g/manifest.json: not found" in result.output
    shutil.move("data/text/yy", "yy-text")  # a language without text: mad-g-ls has nothing to fine-tune on
    result = ltsft("train-lang", "yy", "--method", "mad-g-ls")
    assert result.exit_code == 2 and result.output.strip().endswith("data/text/yy/train.txt: not found "
                                                                     "(run `dvc repro` or the stage that writes it)")
    shutil.move("yy-text", "data/text/yy")
    assert ltsft("mad-g-text").exit_code == 0
    cases = [
        ({"mad_g.typology": {"yy": "fra"}},
         ("error: mad_g: language code 'xx': not an ISO 639-1 code lang2vec knows, no ISO 639-3 code for it (map it "
          "onto a relative's code under mad_g.typology: {xx: ...})")),
        ({"mad_g.typology": {"xx": "nld", "yy": "qqq"}},
         ("error: mad_g.typology.yy: language 'qqq': URIEL (lang2vec==1.1.2, syntax_knn+phonology_knn+inventory_knn) "
          "has no such language (looked up as is)")),
        ({"mad_g.generator.phase": {"epochs": 1}}, "error: mad_g.generator.phase: only {steps: N} is supported"),
    ]
    for override, expected in cases:
        write_params(smoke_params(**override))
        result = ltsft("train-generator")
        assert result.exit_code == 2 and result.output.strip().startswith(expected), result.output
        assert len(result.output.strip().splitlines()) == 1 and not Path("adapters").exists()


def test_dvc_yaml_has_the_generator_stages_only_with_a_method_that_needs_them():
    assert "train_generator" not in dvc_yaml.render(["lt-sft", "madx"])
    text = dvc_yaml.render(["lt-sft", "mad-g-ls"])
    assert text.count("  train_generator:") == 1 and text.count("  mad_g_text:") == 1
    assert text.index("train_generator:") < text.index("train_lang_lt_sft:")
    block = text[text.index("train_lang_mad_g_ls:"):text.index("# Task components")]
    assert '"adapters/mad-g/lang/${key}"' in block  # mad-g-ls starts from the generated adapter
    task = text[text.index("train_task_mad_g_ls:"):text.index("# Zero-shot evaluation")]
    assert '"adapters/mad-g-ls/lang/${item.source}"' in task


def test_unknown_share_counts_only_real_tokens_and_the_filter_leaves_out_unreadable_languages():
    from pipeline.methods.mad_g.build import _unreadable, unknown_share

    readable = [{"input_ids": [1, 5, 6, 2], "special_tokens_mask": [1, 0, 0, 1]}]
    unreadable = [{"input_ids": [1, 9, 9, 5, 2], "special_tokens_mask": [1, 0, 0, 0, 1]}]
    assert unknown_share(readable, 9) == 0.0 and unknown_share(unreadable, 9) == pytest.approx(2 / 3)
    datasets = {"aaa": readable, "bbb": unreadable}
    assert _unreadable(datasets, 9, 0.05) == {"bbb"} and _unreadable(datasets, 9, None) == set()
    assert _unreadable(datasets, 9, 0.7) == set()


def test_the_generator_and_generated_adapters_are_one_per_run_whatever_the_seed():
    from pipeline.methods.mad_g.method import GENERATOR
    from stages import layout

    further = layout.COMPONENTS.for_seed(43, (42, 43))
    assert further.component(*GENERATOR) == layout.COMPONENTS.component(*GENERATOR) == Path("adapters/mad-g/generator/uriel")
    assert further.component("mad-g", "lang", "he") == Path("adapters/mad-g/lang/he")  # generated: no seed
    assert further.component("mad-g", "task", "pos") == Path("adapters/mad-g/task/pos/seed43")
    assert further.component("mad-g-ls", "lang", "he") == Path("adapters/mad-g-ls/lang/he/seed43")
