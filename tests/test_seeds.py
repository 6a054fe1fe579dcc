"""Seeds: `seeds: [...]` (or a lone `seed: N`, as older params files have it) in params; every
training and evaluation stage runs once per seed (stages/seeds.py), the first seed's
components where a single seed's always were and further seeds' nested inside them; every
result row carries its seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.core.config import ConfigError, parse_params
from pipeline.methods import METHODS
from stages import layout

REPO = Path(__file__).resolve().parents[1]


def smoke_tree(**top) -> dict:
    tree = yaml.safe_load((REPO / "presets" / "smoke.yaml").read_text())
    for key in ("seed", "seeds"):
        tree.pop(key, None)
    return tree | top


# ----------------------------------------------------------------------------- params
def test_a_lone_seed_is_one_seed():
    params = parse_params(smoke_tree(seed=7))
    assert params.seeds == (7,) and params.seed == 7


def test_seeds_win_for_training_and_seed_keeps_seeding_what_runs_once():
    params = parse_params(smoke_tree(seed=1, seeds=[42, 43]))
    assert params.seeds == (42, 43) and params.seed == 1  # the shared seed (data split, θ0)
    assert [params.for_seed(s).seed for s in params.seeds] == [42, 43]
    assert parse_params(smoke_tree(seeds=[5, 6])).seed == 5  # no `seed`: the first of seeds


def test_for_task_keeps_the_chosen_seed():
    tree = smoke_tree(seeds=[42, 43])
    tree["tasks"]["pos"]["overrides"] = {"task_sft": {"phase2": {"steps": 9}}}
    params = parse_params(tree).for_seed(43).for_task("pos")
    assert params.seed == 43 and params.task_sft.phase2.steps == 9


@pytest.mark.parametrize(("top", "expected"), [
    ({}, "seeds: missing from params.yaml"),
    ({"seeds": []}, "seeds: must be a non-empty list"),
    ({"seeds": [42, -1]}, "seeds[1]: must be an integer >= 0"),
    ({"seeds": [42, 43, 42]}, "seeds: seed 42 appears twice"),
    ({"seeds": 42}, "seeds: must be a non-empty list"),
])
def test_bad_seeds_name_the_key(top, expected):
    with pytest.raises(ConfigError) as info:
        parse_params(smoke_tree(**top))
    assert str(info.value).startswith(expected), str(info.value)


def test_for_seed_refuses_a_seed_not_listed():
    with pytest.raises(ConfigError, match="seeds: 44 is not one of"):
        parse_params(smoke_tree(seeds=[42, 43])).for_seed(44)


def test_presets():
    def seeds(name: str) -> list[int]:
        return yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())["seeds"]

    assert len(seeds("smoke")) == 1 and seeds("demo") == [42, 43] and len(seeds("demo-seeds")) >= 3
    demo, wide = (yaml.safe_load((REPO / "presets" / f"{n}.yaml").read_text()) for n in ("demo", "demo-seeds"))
    # demo-seeds keeps the full breadth where demo trades some of it for a second seed ...
    assert wide["run_methods"] is None and set(demo["run_methods"]) < set(METHODS)
    assert set(demo["languages"]) < set(wide["languages"]) and set(demo["tasks"]) < set(wide["tasks"])
    for name, spec in demo["tasks"].items():
        assert spec == wide["tasks"][name], name
    # ... and nothing else: the same sources, budgets, caps and θ0 settings.
    for tree in (demo, wide):
        for key in ("preset", "seeds", "run_methods", "languages", "tasks"):
            tree.pop(key)
    assert demo == wide


# ----------------------------------------------------------------------------- layout
def test_the_first_seed_keeps_the_single_seed_layout_and_further_seeds_nest():
    seeds = (42, 43)
    first, second = (layout.COMPONENTS.for_seed(s, seeds) for s in seeds)
    plain = layout.COMPONENTS.component("lt-sft", "lang", "en")
    assert first.component("lt-sft", "lang", "en") == plain
    assert second.component("lt-sft", "lang", "en") == plain / "seed43"
    assert second.component("madx", "task", "pos") == layout.COMPONENTS.component("madx", "task", "pos") / "seed43"
    # Released components have no seed.
    assert second.component("lt-sft-published", "lang", "en") == layout.COMPONENTS.component("lt-sft-published", "lang", "en")
    assert second.component("madx-published", "lang", "en") == layout.COMPONENTS.component("madx-published", "lang", "en")
    assert second.component("madx-published", "task", "pos").name == "seed43"


def test_curves_of_a_further_seed_join_their_family():
    assert layout.curve_family("diffs/lt-sft/lang/en") == ("language diffs", "lt-sft en")
    assert layout.curve_family("diffs/lt-sft/lang/en/seed43") == ("language diffs", "lt-sft en seed43")
    assert layout.run_log("diffs/lt-sft/lang/en/seed43") == Path("runs/diffs/lt-sft/lang/en/seed43.json")


# ----------------------------------------------------------------------------- the report
def seeded(method: str, lang: str, value: float, seed: int) -> dict:
    return {"task": "pos", "method": method, "lang": lang, "metric": "accuracy", "value": value, "seed": seed,
            "params_lang": 0, "params_task": 1000}


def test_tables_show_mean_sd_and_n_and_bold_only_beyond_the_spreads(tmp_path):
    from pipeline.report import (
        SPREAD_RULE,
        TaskReport,
        headline_metrics,
        render_report,
        task_stats,
    )

    rows = [seeded("lt-sft", "he", v, s) for v, s in ((0.70, 1), (0.72, 2), (0.74, 3))]
    rows += [seeded("lt-sft", "tr", v, s) for v, s in ((0.80, 1), (0.80, 2), (0.80, 3))]
    rows += [seeded("madx", "he", v, s) for v, s in ((0.60, 1), (0.61, 2), (0.62, 3))]   # far below: lt-sft bold
    rows += [seeded("madx", "tr", v, s) for v, s in ((0.78, 1), (0.81, 2), (0.84, 3))]   # within the spread
    stats = task_stats(rows, "pos", "accuracy")
    assert stats.several and stats.n.at["lt-sft", "he"] == 3
    assert stats.mean.at["lt-sft", "he"] == pytest.approx(0.72) and stats.sd.at["lt-sft", "he"] == pytest.approx(0.02)
    # avg: each seed's own mean over the languages, then mean and spread over seeds
    assert stats.mean.at["madx", "avg"] == pytest.approx(0.71) and stats.sd.at["madx", "avg"] == pytest.approx(0.02)
    page = render_report("t", [TaskReport("pos", rows)], tmp_path)
    table = page[page.index("<table class='results'"):]
    lt_sft = table[table.index(">lt-sft<"):table.index("</tr>", table.index(">lt-sft<"))]
    madx = table[table.index(">madx<"):table.index("</tr>", table.index(">madx<"))]
    assert "<b>72.0 ± 2.0 <small>n=3</small></b>" in lt_sft            # he: 72 vs 61, spreads 2 + 1
    assert "<td>80.0 ± 0.0 <small>n=3</small></td>" in lt_sft         # tr: 80.0 vs 81.0 ± 3.0: no bold
    assert "<td>81.0 ± 3.0 <small>n=3</small></td>" in madx           # the best mean, not beyond the spreads
    assert SPREAD_RULE in page
    metrics = headline_metrics(rows)
    assert metrics["pos"]["lt-sft"]["he"] == pytest.approx(0.72) and metrics["pos_sd"]["lt-sft"]["he"] == pytest.approx(0.02)
    assert metrics["pos_n"]["madx"]["avg"] == 3


def test_one_seed_renders_as_before():
    from pipeline.report import headline_metrics, render_table

    rows = [seeded("lt-sft", "he", 0.7, 42), seeded("madx", "he", 0.7, 42), seeded("madx", "tr", 0.6, 42)]
    bare = [{k: v for k, v in r.items() if k != "seed"} for r in rows]  # results written before rows had seeds
    assert render_table(rows, "pos", "accuracy") == render_table(bare, "pos", "accuracy")
    assert "±" not in render_table(rows, "pos", "accuracy") and "<b>70.0</b>" in render_table(rows, "pos", "accuracy")
    assert headline_metrics(rows) == headline_metrics(bare) and "pos_sd" not in headline_metrics(rows)


# ----------------------------------------------------------------------------- end to end
def files(root: Path, skip_seeds: bool = True) -> dict[str, bytes]:
    """Every file under a component directory (without further seeds' folders), by relative path."""
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()
            and not (skip_seeds and f.relative_to(root).parts[0].startswith("seed"))}


@pytest.mark.slow
def test_seeds_end_to_end(tmp_path, monkeypatch):
    """Two seeds: each trains its own components (the second nested in the first's) and every
    row carries its seed; the first seed's outputs are byte-identical to an older single-seed
    params file's (`seed: 42`, no `seeds`), and a further seed's to that seed run alone."""
    import json
    import shutil

    from test_pipeline import ltsft, smoke_params, write_params

    methods = ("lt-sft", "dense-composed")  # dense-composed: a second output of lt-sft's language stage
    steps = [("train-lang", lang, "--method", "lt-sft") for lang in ("en", "xx", "yy")]
    steps += [("train-task", "pos", "--method", m) for m in methods] + [("evaluate", "pos", "--method", m) for m in methods]

    def run(name: str, **top) -> Path:
        work = tmp_path / name
        work.mkdir()
        monkeypatch.chdir(work)
        tree = smoke_params()
        tree.pop("seeds")
        write_params(tree | top)
        if name == "two":  # the shared steps (seed 42 in every run here) once; copied to the others
            sweep = [("train-lang", lang, "--method", "rand-sft") for lang in ("en", "xx", "yy")]
            todo = [("download",), ("prepare-model",), *steps, *sweep, ("ablate", "pos", "--k", "5000"), ("report",)]
        else:
            shutil.copytree(tmp_path / "two" / "data", work / "data")
            shutil.copytree(tmp_path / "two" / "models", work / "models")
            todo = steps
        for step in todo:
            result = ltsft(*step)
            assert result.exit_code == 0, (step, result.output, result.exception)
        return work

    two = run("two", seed=42, seeds=[42, 43])
    old = run("old", seed=42)                     # an older params file: one seed, no `seeds`
    alone = run("alone", seed=42, seeds=[43])     # seed 43 on its own (same data and θ0)

    rows = json.loads((two / "results/pos/lt-sft.json").read_text())["rows"]
    assert sorted({r["seed"] for r in rows}) == [42, 43]
    keys = {seed: sorted((r["method"], r["lang"], r["metric"]) for r in rows if r["seed"] == seed) for seed in (42, 43)}
    assert keys[42] == keys[43] and len(keys[42]) == 4  # lt-sft and lt-sft-task-only on xx and yy, per seed
    old_rows = json.loads((old / "results/pos/lt-sft.json").read_text())["rows"]
    assert [r for r in rows if r["seed"] == 42] == old_rows and {r["seed"] for r in old_rows} == {42}
    alone_rows = json.loads((alone / "results/pos/lt-sft.json").read_text())["rows"]
    assert [r for r in rows if r["seed"] == 43] == alone_rows

    for component in ("diffs/lt-sft/lang/xx", "diffs/dense-composed/lang/en", "diffs/lt-sft/task/pos",
                      "diffs/lt-sft/task-phase1/pos", "diffs/dense-composed/task/pos"):
        first, second = two / component, two / component / "seed43"
        assert files(first) == files(old / component), component   # byte-identical to the single seed's
        assert files(second) == files(alone / component), component  # and to seed 43 alone
        assert files(first) != files(second), component                # different seeds, different components
        provenance = [json.loads((path / "diff.json").read_text())["provenance"]["seed"] for path in (first, second)]
        assert provenance == [42, 43], component
    # The sweep runs on the first seed; the report shows spreads, and the run logs of both seeds exist.
    assert {r["seed"] for r in json.loads((two / "results/pos/sparsity/k5000.json").read_text())["rows"]} == {42}
    assert (two / "runs/diffs/lt-sft/lang/xx/seed43.json").is_file() and (two / "curves/diffs/lt-sft/lang/xx/seed43").is_dir()
    page = (two / "reports/index.html").read_text()
    assert "<small>n=2</small>" in page and "mean ± standard deviation" in page
    assert "pos_sd" in json.loads((two / "reports/metrics.json").read_text())
