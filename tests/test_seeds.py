"""Seeds: `seeds: [...]` (or a lone `seed: N`, as older params files have it) in params; every
training and evaluation stage runs once per seed (stages/seeds.py), the first seed's
components where a single seed's always were and further seeds' nested inside them; every
result row carries its seed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import ConfigError, parse_params
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
    for tree in (demo, wide):
        tree.pop("preset"), tree.pop("seeds")
    if demo != wide:  # demo-seeds keeps the full breadth where demo trades some of it for a second seed
        for key in ("languages", "tasks"):
            assert all(name in wide[key] for name in demo[key]), key


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
