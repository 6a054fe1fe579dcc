"""Tests for the claims decided from result rows (pipeline/claims.py) and their place in the
report: the rule's arithmetic, pairing by seed and target, each verdict, missing methods or
sweep, the Claims section at the top of the page and the evidence in reports/metrics.json."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from pipeline.claims import (
    INCONCLUSIVE,
    NO_EVIDENCE,
    NOT_SUPPORTED,
    RULE,
    SUPPORTED,
    decide,
    evaluate_claims,
    paired_differences,
)
from pipeline.report import TaskReport, render_report, report_claims, report_metrics

POS = {"pos": "accuracy"}


def row(method: str, lang: str, value: float, seed: int | None = None, task: str = "pos", metric: str = "accuracy",
        **extra) -> dict:
    out = {"task": task, "method": method, "lang": lang, "metric": metric, "value": value} | extra
    return out if seed is None else out | {"seed": seed}


def grid(method: str, values: dict[tuple[int, str], float], **extra) -> list[dict]:
    """Rows of one method from {(seed, lang): value}."""
    return [row(method, lang, value, seed, **extra) for (seed, lang), value in values.items()]


def by_id(claims) -> dict:
    return {claim.id: claim for claim in claims}


# --- the rule -------------------------------------------------------------------------------

def test_rule_arithmetic_on_a_hand_computed_example() -> None:
    # differences 1, 2, 3, 6: mean 3; sample variance (4 + 1 + 0 + 9) / 3 = 14/3; SE = √(14/3 / 4) ≈ 1.080
    mean, stderr, verdict = decide([1.0, 2.0, 3.0, 6.0])
    assert mean == pytest.approx(3.0) and stderr == pytest.approx(math.sqrt(7 / 6))
    assert verdict == SUPPORTED  # 3 > 2 × 1.080
    assert decide([-1.0, -2.0, -3.0, -6.0])[2] == NOT_SUPPORTED
    # 3, −1, 4, 0: mean 1.5, SE = √(17/3 / 4) ≈ 1.190; 1.5 < 2.38 → inconclusive
    mean, stderr, verdict = decide([3.0, -1.0, 4.0, 0.0])
    assert (mean, verdict) == (pytest.approx(1.5), INCONCLUSIVE) and stderr == pytest.approx(math.sqrt(17 / 12))
    # just either side of twice the standard error
    assert decide([1.0, 3.0])[2] == INCONCLUSIVE  # mean 2, SE 1: not more than 2·SE
    assert decide([0.9, 3.0])[2] == INCONCLUSIVE and decide([1.1, 3.0])[2] == SUPPORTED  # 2.05 > 2 × 0.95
    assert decide([5.0]) == (5.0, None, INCONCLUSIVE)  # one pair: no spread
    assert decide([]) == (None, None, NO_EVIDENCE)


# --- pairing --------------------------------------------------------------------------------

def test_pairs_are_matched_by_seed_and_target() -> None:
    # A seed effect far larger than the gap: only matched pairs see the steady +1 point.
    base = {(1, "he"): 0.40, (1, "tr"): 0.70, (2, "he"): 0.20, (2, "tr"): 0.90, (3, "he"): 0.55, (3, "tr"): 0.30}
    wobble = {(1, "he"): 0.001, (1, "tr"): -0.001, (2, "he"): 0.002, (2, "tr"): 0.0, (3, "he"): -0.002, (3, "tr"): 0.0}
    ltsft = grid("lt-sft", {key: v + 0.01 + wobble[key] for key, v in base.items()})
    madx = grid("madx", {key: v for key, v in base.items() if key[0] != 3})  # seed 3 has no MAD-X run
    diffs = paired_differences(ltsft + madx, POS, "lt-sft", "madx")
    assert len(diffs) == 4 and set(diffs["seed"]) == {"1", "2"}
    expected = {("1", "he"): 1.1, ("1", "tr"): 0.9, ("2", "he"): 1.2, ("2", "tr"): 1.0}
    assert {(s, lang): round(d, 6) for s, lang, d in zip(diffs["seed"], diffs["lang"], diffs["diff"])} == expected
    claim = by_id(evaluate_claims(ltsft + madx, POS))["ltsft_beats_madx_pos"]
    assert claim.n == 4 and claim.mean_diff == pytest.approx(1.05) and claim.verdict == SUPPORTED


def test_rows_without_a_seed_are_one_seed() -> None:
    rows = [row("lt-sft", "he", 0.5), row("madx", "he", 0.4), row("lt-sft", "tr", 0.6), row("madx", "tr", 0.58),
            row("madx", "ja", 0.1)]  # ja: no lt-sft to pair with
    diffs = paired_differences(rows, POS, "lt-sft", "madx")
    assert sorted(zip(diffs["lang"], diffs["diff"].round(6))) == [("he", 10.0), ("tr", 2.0)]


def test_ablation_rows_and_other_metrics_are_not_paired() -> None:
    rows = grid("lt-sft", {(1, "he"): 0.5, (2, "he"): 0.6}) + grid("madx", {(1, "he"): 0.4, (2, "he"): 0.5})
    noise = [row("madx", "he", 0.99, 1, ablation="sparsity", k=10), row("madx", "he", 0.99, 2, metric="f1")]
    assert paired_differences(rows + noise, POS, "lt-sft", "madx")["diff"].round(6).tolist() == [10.0, 10.0]


# --- each verdict, from rows ----------------------------------------------------------------

def seeded(method: str, gaps: list[float], base: float = 0.5) -> list[dict]:
    """One row per (seed, lang) pair: base + gap (points)."""
    keys = [(seed, lang) for seed in (1, 2) for lang in ("he", "tr")]
    return grid(method, {key: base + gap / 100 for key, gap in zip(keys, gaps)})


@pytest.mark.parametrize(("gaps", "verdict"), [
    ([1.0, 2.0, 3.0, 6.0], SUPPORTED),
    ([-1.0, -2.0, -3.0, -6.0], NOT_SUPPORTED),
    ([3.0, -1.0, 4.0, 0.0], INCONCLUSIVE),
])
def test_each_verdict_comes_out(gaps: list[float], verdict: str) -> None:
    rows = seeded("lt-sft", gaps) + seeded("rand-sft", [0.0] * 4) + seeded("madx", [0.0] * 4)
    claims = by_id(evaluate_claims(rows, POS))
    for claim_id in ("selection_beats_random", "ltsft_beats_madx_pos"):
        assert claims[claim_id].verdict == verdict and claims[claim_id].n == 4
        assert claims[claim_id].mean_diff == pytest.approx(sum(gaps) / 4)


def test_a_missing_method_or_sweep_is_no_evidence_and_says_which() -> None:
    rows = seeded("lt-sft", [1.0, 2.0, 3.0, 6.0]) + seeded("madx", [0.0] * 4)
    claims = by_id(evaluate_claims(rows, POS))
    assert claims["ltsft_beats_madx_pos"].verdict == SUPPORTED
    for claim_id, absent in (("selection_beats_random", "rand-sft"), ("lang_diff_helps", "lt-sft-task-only"),
                             ("dense_interferes_more", "dense-composed")):
        claim = claims[claim_id]
        assert (claim.verdict, claim.n, claim.mean_diff, claim.stderr) == (NO_EVIDENCE, 0, None, None)
        assert absent in claim.reason and "lt-sft," not in claim.reason  # names only what is missing
    assert claims["sparsity_guards_overfitting"].verdict == NO_EVIDENCE
    assert "no sparsity sweep" in claims["sparsity_guards_overfitting"].reason


def test_claim_one_is_judged_per_task() -> None:
    rows = seeded("lt-sft", [1.0, 2.0, 3.0, 6.0]) + seeded("madx", [0.0] * 4)
    ner = [dict(r, task="ner", metric="f1") for r in seeded("lt-sft", [-1.0, -2.0, -3.0, -6.0]) + seeded("madx", [0.0] * 4)]
    claims = evaluate_claims(rows + ner, {"ner": "f1", "pos": "accuracy"})
    assert [c.id for c in claims][:2] == ["ltsft_beats_madx_ner", "ltsft_beats_madx_pos"]
    assert by_id(claims)["ltsft_beats_madx_ner"].verdict == NOT_SUPPORTED
    assert by_id(claims)["ltsft_beats_madx_pos"].verdict == SUPPORTED
    # the pooled claims pool over tasks: each pair is (task, seed, target)
    pooled = evaluate_claims([dict(r, method="rand-sft") if r["method"] == "madx" else r for r in rows + ner],
                             {"ner": "f1", "pos": "accuracy"})
    claim = by_id(pooled)["selection_beats_random"]
    assert claim.n == 8 and claim.mean_diff == pytest.approx(0.0) and claim.tasks == ("ner", "pos")


def test_interference_reuses_the_plots_gain() -> None:
    # per pair: sparse gain = lt-sft − lt-sft-task-only, dense gain = dense-composed − its task-only
    rows = (seeded("lt-sft", [3.0, 2.0, 4.0, 3.0]) + seeded("lt-sft-task-only", [0.0] * 4)
            + seeded("dense-composed", [-1.0, 0.0, -2.0, -1.0]) + seeded("dense-composed-task-only", [1.0] * 4))
    claim = by_id(evaluate_claims(rows, POS))["dense_interferes_more"]
    # differences (3 − (−2)), (2 − (−1)), (4 − (−3)), (3 − (−2)) = 5, 3, 7, 5
    assert claim.n == 4 and claim.mean_diff == pytest.approx(5.0)
    assert claim.stderr == pytest.approx(math.sqrt(8 / 3 / 4)) and claim.verdict == SUPPORTED
    assert by_id(evaluate_claims(rows, POS))["lang_diff_helps"].mean_diff == pytest.approx(3.0)


def sweep(values: dict[int, list[float]], seeds: tuple[int, ...] = (1, 2)) -> list[dict]:
    """lt-sft sweep rows: K → scores (points) for the pairs (seed, lang) in order."""
    keys = [(seed, lang) for seed in seeds for lang in ("he", "tr")]
    return [row("lt-sft", lang, score / 100, seed, k=k, ablation="sparsity")
            for k, scores in values.items() for (seed, lang), score in zip(keys, scores)]


def test_sparsity_claim_compares_the_best_smaller_k_with_the_largest() -> None:
    rows = sweep({1_000: [50, 52, 51, 49], 100_000: [55, 57, 58, 54], 4_000_000: [53, 54, 55, 52]})
    # the main evaluation's point (a K, no ablation) joins the sweep, as in the sparsity plot
    rows += [row("lt-sft", lang, 0.50, seed, k=10_000) for seed in (1, 2) for lang in ("he", "tr")]
    claim = by_id(evaluate_claims(rows, POS))["sparsity_guards_overfitting"]
    # best smaller K by mean: 100k (56.0); differences vs 4M: 2, 3, 3, 2
    assert claim.n == 4 and claim.mean_diff == pytest.approx(2.5) and claim.verdict == SUPPORTED
    assert "100,000 vs 4,000,000" in claim.reason
    # the largest K best: not supported
    worse = sweep({1_000: [50, 52, 51, 49], 4_000_000: [53, 54, 55, 52]})
    assert by_id(evaluate_claims(worse, POS))["sparsity_guards_overfitting"].verdict == NOT_SUPPORTED
    # one K only: the sweep is there but decides nothing
    single = by_id(evaluate_claims(sweep({4_000_000: [53, 54, 55, 52]}), POS))["sparsity_guards_overfitting"]
    assert single.verdict == NO_EVIDENCE and "fewer than two K" in single.reason


def test_sparsity_pairs_need_every_k() -> None:
    rows = sweep({1_000: [60, 60, 60, 60], 4_000_000: [50, 51, 52, 53]})
    rows += [row("lt-sft", "he", 0.90, 3, k=1_000, ablation="sparsity")]  # seed 3: no largest K
    claim = by_id(evaluate_claims(rows, POS))["sparsity_guards_overfitting"]
    assert claim.n == 4 and claim.mean_diff == pytest.approx(8.5)


# --- the report -----------------------------------------------------------------------------

def full_rows() -> list[dict]:
    return (seeded("lt-sft", [1.0, 2.0, 3.0, 6.0]) + seeded("madx", [0.0] * 4) + seeded("rand-sft", [0.0] * 4)
            + sweep({1_000: [50, 52, 51, 49], 4_000_000: [53, 54, 55, 52]}))


def test_report_renders_the_claims_section_at_the_top(tmp_path: Path) -> None:
    rows = full_rows()
    dp = [row(m, "tr", v, 1, task="dp", metric="uas") for m, v in (("lt-sft", 0.5), ("madx", 0.4))]
    page = render_report("t", [TaskReport("pos", rows), TaskReport("dp", dp)], tmp_path, intro="Intro.")
    sections = re.findall(r"<section id='([^']+)'>", page)
    assert sections[0] == "claims" and page.index("<section id='claims'>") < page.index("<nav>")
    claims = re.search(r"<section id='claims'>.*?</section>", page, flags=re.DOTALL).group(0)
    assert RULE in claims.replace("&#x27;", "'") and "POS accuracy" in claims
    one = re.search(r"<tr data-claim='ltsft_beats_madx_pos'>(.*?)</tr>", claims, flags=re.DOTALL).group(1)
    assert re.findall(r"<td[^>]*>(.*?)</td>", one)[3:7] == ["4", "+3.00", "1.08", "supported"]
    assert "inconclusive at this budget" not in one
    assert "no results for lt-sft-task-only" in claims  # a missing method says which
    # dp is judged on its headline metric (LAS): UAS rows alone give no evidence
    dp_row = re.search(r"<tr data-claim='ltsft_beats_madx_dp'>(.*?)</tr>", claims, flags=re.DOTALL).group(1)
    assert "no evidence" in dp_row and "DP LAS" in claims


def test_inconclusive_reads_at_this_budget(tmp_path: Path) -> None:
    rows = seeded("lt-sft", [3.0, -1.0, 4.0, 0.0]) + seeded("madx", [0.0] * 4)
    page = render_report("t", [TaskReport("pos", rows)], tmp_path)
    assert "inconclusive at this budget" in page


def test_metrics_json_carries_each_claims_evidence() -> None:
    rows = full_rows()
    metrics = report_metrics(rows, report_claims(rows))
    assert set(metrics["pos"]["lt-sft"]) == {"he", "tr", "avg"}  # the headline scores stay
    claims = json.loads(json.dumps(metrics))["claims"]  # plain JSON numbers
    assert claims["ltsft_beats_madx_pos"] == {"mean_diff": 3.0, "stderr": round(math.sqrt(7 / 6), 4), "n": 4,
                                              "verdict": 1}
    assert claims["sparsity_guards_overfitting"]["verdict"] == -1
    assert claims["lang_diff_helps"] == {"n": 0, "verdict": 0}  # no evidence: no numbers to compare
    assert all(isinstance(v, (int, float)) for entry in claims.values() for v in entry.values())
