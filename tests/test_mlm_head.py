"""The MLM-head warm-up (prepare_model, e5): model.warmup.decoder, its dev curve, prepare.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForMaskedLM

from pipeline.core import curves
from pipeline.core.budget import PhaseBudget
from pipeline.core.config import ConfigError, WarmupSpec, parse_params
from pipeline.core.models import save_model
from pipeline.tasks.mlm import warm_up_head

REPO = Path(__file__).resolve().parents[1]
TEXT = [line for path in sorted((REPO / "tests" / "fixtures" / "smoke" / "text").glob("*.txt"))
        for line in path.read_text(encoding="utf-8").splitlines()][:40]


def demo_tree() -> dict:
    return yaml.safe_load((REPO / "presets" / "demo.yaml").read_text())


def fresh(make_mlm):
    """A tiny masked LM with its own config: untying writes tie_word_embeddings into the
    config, and the fixture's config is shared by the whole session."""
    return make_mlm(seed=0, tie_word_embeddings=True)


def spec(decoder: str = "tied", steps: int = 4, eval_every: int = 0) -> WarmupSpec:
    return WarmupSpec(phase=PhaseBudget(steps=steps, eval_every=eval_every), batch_size=8, learning_rate=1e-2,
                      max_grad_norm=1.0, max_length=32, decoder=decoder)


def test_decoder_option_is_parsed_with_tied_as_the_default():
    tree = demo_tree()
    tree["model"]["warmup"].pop("decoder", None)
    assert parse_params(tree).model.warmup.decoder == "tied"  # today's behaviour when absent
    tree["model"]["warmup"]["decoder"] = "untied"
    assert parse_params(tree).model.warmup.decoder == "untied"
    tree["model"]["warmup"]["decoder"] = "shared"
    with pytest.raises(ConfigError, match=r"^model\.warmup\.decoder: "):
        parse_params(tree)


def test_tied_trains_the_transform_and_bias_and_leaves_the_decoder_the_input_embeddings(make_mlm, tiny_tokenizer):
    model = fresh(make_mlm)
    embeddings = model.get_input_embeddings().weight
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    report, _ = warm_up_head(model, tiny_tokenizer, TEXT[:32], TEXT[32:], spec("tied"), seed=1, eval_batch_size=8)
    assert report["decoder"] == "tied"
    assert model.get_output_embeddings().weight is embeddings  # still tied: one parameter
    changed = {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}
    assert changed == {"cls.predictions.bias", "cls.predictions.transform.dense.weight",
                       "cls.predictions.transform.dense.bias", "cls.predictions.transform.LayerNorm.weight",
                       "cls.predictions.transform.LayerNorm.bias"}


def test_untied_trains_its_own_copy_of_the_embeddings_as_the_decoder(make_mlm, tiny_tokenizer, tmp_path):
    model = fresh(make_mlm)
    embeddings = model.get_input_embeddings().weight.detach().clone()
    report, _ = warm_up_head(model, tiny_tokenizer, TEXT[:32], TEXT[32:], spec("untied"), seed=1, eval_batch_size=8)
    assert report["decoder"] == "untied"
    decoder = model.get_output_embeddings().weight
    assert decoder is not model.get_input_embeddings().weight
    assert torch.equal(model.get_input_embeddings().weight, embeddings)  # the encoder stays frozen
    assert not torch.equal(decoder, embeddings)  # the decoder trained
    save_model(model, tiny_tokenizer, tmp_path / "base")  # θ0 keeps its own decoder when reloaded
    loaded = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "base"))
    assert torch.equal(loaded.get_output_embeddings().weight, decoder.detach())
    assert not torch.equal(loaded.get_output_embeddings().weight, loaded.get_input_embeddings().weight)


def test_tied_and_untied_warm_ups_differ_but_start_from_the_same_dev_loss(make_mlm, tiny_tokenizer):
    tied, _ = warm_up_head(fresh(make_mlm), tiny_tokenizer, TEXT[:32], TEXT[32:], spec("tied"), 1, 8)
    untied, _ = warm_up_head(fresh(make_mlm), tiny_tokenizer, TEXT[:32], TEXT[32:], spec("untied"), 1, 8)
    assert tied["dev_loss_before"] == untied["dev_loss_before"]
    assert tied["dev_loss_after"] != untied["dev_loss_after"]


def test_the_dev_curve_starts_at_step_0_and_ends_on_dev_loss_after(make_mlm, tiny_tokenizer):
    model = fresh(make_mlm)
    report, log = warm_up_head(model, tiny_tokenizer, TEXT[:32], TEXT[32:], spec(steps=4, eval_every=2), 1, 8)
    dev = curves.from_history(log)["mlm-head-warmup"]["eval_loss"]
    assert [step for step, _ in dev] == [0, 2, 4]
    assert dev[0][1] == report["dev_loss_before"] and dev[-1][1] == report["dev_loss_after"]
    assert report["dev_loss_after"] < report["dev_loss_before"]
    # The reused last point is what scoring the final state gives.
    from pipeline.tasks import get_task

    assert get_task("mlm").evaluate(model, TEXT[32:], tiny_tokenizer, 32, 8)["loss"] == pytest.approx(
        report["dev_loss_after"], abs=1e-6)


def test_dev_scoring_leaves_the_warm_up_unchanged(make_mlm, tiny_tokenizer):
    plain, _ = warm_up_head(fresh(make_mlm), tiny_tokenizer, TEXT[:32], TEXT[32:], spec(steps=4), 1, 8)
    scored, _ = warm_up_head(fresh(make_mlm), tiny_tokenizer, TEXT[:32], TEXT[32:], spec(steps=4, eval_every=1), 1, 8)
    assert plain == scored


def test_prepare_e5_writes_the_warm_up_into_prepare_json_and_its_curve(make_mlm, tiny_tokenizer, tmp_path,
                                                                     monkeypatch):
    """prepare_model's e5 path, the registry download replaced by a tiny model."""
    from stages import layout, prepare_model

    monkeypatch.chdir(tmp_path)
    for lang, lines in (("en", TEXT[:14]), ("xx", TEXT[14:27]), ("yy", TEXT[27:])):
        for split, part in (("train", lines[:-3]), ("dev", lines[-3:])):
            path = layout.text_split(lang, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(part) + "\n", encoding="utf-8")
    tree = yaml.safe_load((REPO / "presets" / "smoke.yaml").read_text())
    tree["model"] = {"source": "e5", "warmup": {"phase": {"steps": 3, "eval_every": 2}, "batch_size": 8,
                                                "learning_rate": 1e-2, "max_length": 32, "decoder": "untied"}}
    params = parse_params(tree)
    monkeypatch.setattr(prepare_model, "rebuild_e5",
                        lambda p: (fresh(make_mlm), tiny_tokenizer, {"layers": 2}))
    prepare_model.run(params)
    report = json.loads((layout.BASE_MODEL / "prepare.json").read_text())
    warmup = report["mlm_head_warmup"]
    assert report["layers"] == 2
    assert set(warmup) == {"dev_loss_before", "dev_loss_after", "steps", "train_lines", "decoder"}
    assert warmup["decoder"] == "untied" and warmup["steps"] == 3 and warmup["train_lines"] == 31
    assert warmup["dev_loss_after"] < warmup["dev_loss_before"]
    found = curves.read(layout.curves_dir(layout.BASE_MODEL))["mlm-head-warmup"]
    assert [step for step, _ in found["eval_loss"]] == [0, 2, 3]
    assert found["eval_loss"][-1][1] == pytest.approx(warmup["dev_loss_after"])
    assert [step for step, _ in found["loss"]] == [1, 2, 3]



def test_the_report_draws_the_warm_up_with_its_dev_loss(tmp_path):
    from pipeline.report import render_report

    family = "MLM-head warm-up of the base model"
    found = {family: {"models/base": {"mlm-head-warmup": {"loss": [(1, 10.0), (2, 8.0)],
                                                          "eval_loss": [(0, 11.4), (2, 7.5)]}}},
             "language diffs": {"lt-sft en": {"iter1-phase1": {"loss": [(1, 3.0), (2, 2.5)]},
                                              "iter1-phase2": {"loss": [(1, 2.4)], "eval_loss": [(2, 2.6)]}}}}
    page = render_report("t", [], tmp_path, curves=found)
    assert page.count("<img") == 2 and f"{family}: training loss" in page and "dots: the dev loss" in page
    assert (tmp_path / "curves_mlm-head-warm-up-of-the-base-model.png").is_file()
