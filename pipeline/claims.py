"""The paper's claims, decided from result rows by one stated rule (never typed in by hand).

Each claim is a difference of scores, in points of the task's headline metric, taken per
pair matched by (task, seed, target language): e.g. claim 2's pair is one seed's `lt-sft`
and `lt-sft-task-only` scores on one target. Over the n pairs,

    mean_diff = mean of the differences,  stderr = their sample standard deviation / √n

and the verdict is (``RULE``): **supported** when mean_diff > 2·stderr, **not supported**
when mean_diff < −2·stderr, **inconclusive** otherwise (also with a single pair, which has
no spread); **no evidence** when a method or the sparsity sweep the claim needs is missing.

Rows are the report's: {task, method, lang, metric, value, …} with values as fractions and
optionally "seed" (rows without one are a single seed), "ablation" and "k" (the sparsity
sweep). The caller says which metric each task is judged on (the report's headline metric),
so this module needs neither torch nor the task registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from pipeline.methods import interference_pairs

__all__ = [
    "RULE",
    "Claim",
    "claims_metrics",
    "decide",
    "evaluate_claims",
    "interference_differences",
    "paired_differences",
    "sparsity_differences",
]

RULE = ("supported when the mean difference exceeds twice its standard error across the pairs "
        "(seed × target language, matched), not supported when it is below minus twice its standard error, "
        "inconclusive otherwise (also with a single pair: no spread to judge by)")
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NO_EVIDENCE = "supported", "not supported", "inconclusive", "no evidence"
# For reports/metrics.json: `dvc exp show` compares numbers, so each verdict has one.
VERDICT_CODES = {SUPPORTED: 1, NOT_SUPPORTED: -1, INCONCLUSIVE: 0, NO_EVIDENCE: 0}

SPARSE, DENSE = ({label: (composed, alone) for label, composed, alone in interference_pairs()}.get(kind)
                 for kind in ("sparse", "dense"))
SWEPT = "lt-sft"  # the method whose sparsity sweep claim 5 reads
KEYS = ["task", "seed", "lang"]  # what pairs are matched by
DIFF_COLUMNS = KEYS + ["diff"]


@dataclass(frozen=True)
class Claim:
    """One claim's evidence. ``mean_diff`` and ``stderr`` are in points (None without
    evidence); ``reason`` says why there is no evidence, or notes a caveat."""

    id: str
    statement: str
    compares: str
    tasks: tuple[str, ...]
    n: int
    mean_diff: float | None
    stderr: float | None
    verdict: str
    reason: str = ""


def decide(differences: Sequence[float]) -> tuple[float | None, float | None, str]:
    """(mean, standard error, verdict) of paired differences by ``RULE``."""
    n = len(differences)
    if n == 0:
        return None, None, NO_EVIDENCE
    mean = math.fsum(differences) / n
    if n == 1:
        return mean, None, INCONCLUSIVE
    variance = math.fsum((d - mean) ** 2 for d in differences) / (n - 1)
    stderr = math.sqrt(variance / n)
    if mean > 2 * stderr:
        return mean, stderr, SUPPORTED
    if mean < -2 * stderr:
        return mean, stderr, NOT_SUPPORTED
    return mean, stderr, INCONCLUSIVE


# --- the differences ------------------------------------------------------------------------

def _scores(rows: Iterable[Mapping], metrics: Mapping[str, str | None], sweep: bool = False) -> pd.DataFrame:
    """Columns task, seed, lang, method, (k), value: the rows scored on their task's headline
    metric, repeated rows averaged. Main-evaluation rows, or with ``sweep`` every row that
    carries a K (the sparsity sweep's and the main run's point, as the sparsity plot reads them)."""
    picked = []
    for r in rows:
        value = r.get("value")
        if (r.get("task") not in metrics or r.get("metric") != metrics[r["task"]] or value is None
                or (isinstance(value, float) and math.isnan(value))):
            continue
        if (sweep and r.get("k") is None) or (not sweep and r.get("ablation")):
            continue
        # A row without a seed is the one seed of its run: "" keeps it a valid key to pair on.
        picked.append({"task": r["task"], "seed": "" if r.get("seed") is None else str(r["seed"]),
                       "lang": r["lang"], "method": r["method"], "value": float(value) * 100.0}
                      | ({"k": int(r["k"])} if sweep else {}))
    columns = KEYS + ["method"] + (["k"] if sweep else [])
    if not picked:
        return pd.DataFrame(columns=columns + ["value"])
    return pd.DataFrame(picked).groupby(columns, as_index=False)["value"].mean()


def _by_method(scores: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """(task, seed, lang) × method, only the pairs where every one of ``methods`` has a score."""
    scores = scores[scores["method"].isin(methods)]
    if set(scores["method"]) != set(methods):
        return pd.DataFrame(columns=list(methods))
    table = scores.pivot_table(index=KEYS, columns="method", values="value")
    return table[list(methods)].dropna()


def _frame(table: pd.DataFrame, diff: pd.Series) -> pd.DataFrame:
    """The pairs of ``table`` (indexed by KEYS) with their differences, as DIFF_COLUMNS."""
    if table.empty:
        return pd.DataFrame(columns=DIFF_COLUMNS)
    return table.assign(diff=diff).reset_index()[DIFF_COLUMNS]


def paired_differences(rows: Iterable[Mapping], metrics: Mapping[str, str | None], plus: str, minus: str,
                       tasks: Iterable[str] | None = None) -> pd.DataFrame:
    """Columns task, seed, lang, diff: ``plus`` − ``minus`` in points, per matched pair."""
    scores = _scores(rows, {t: m for t, m in metrics.items() if tasks is None or t in set(tasks)})
    table = _by_method(scores, [plus, minus])
    return _frame(table, table[plus] - table[minus])


def interference_differences(rows: Iterable[Mapping], metrics: Mapping[str, str | None]) -> pd.DataFrame:
    """Per pair: the sparse gain of adding the language component minus the dense one, the
    interference plot's gains (composed − its task-only counterpart) differenced."""
    table = _by_method(_scores(rows, metrics), [*SPARSE, *DENSE])
    return _frame(table, (table[SPARSE[0]] - table[SPARSE[1]]) - (table[DENSE[0]] - table[DENSE[1]]))


def sparsity_differences(rows: Iterable[Mapping], metrics: Mapping[str, str | None]) -> tuple[pd.DataFrame, str]:
    """Per pair, from the sparsity sweep of `lt-sft`: the score at the best smaller K minus the
    score at the largest K, and a note naming the Ks per task. Per task, only pairs scored at
    every K count; the best smaller K is the one with the highest mean over those pairs (one
    choice for all pairs, so the maximum's selection does not inflate every pair)."""
    scores = _scores(rows, metrics, sweep=True)
    scores = scores[scores["method"] == SWEPT]
    parts, notes = [], []
    for task, group in scores.groupby("task"):
        table = group.pivot_table(index=KEYS, columns="k", values="value").dropna()
        if table.shape[1] < 2 or table.empty:
            continue
        largest = max(table.columns)
        best = table.drop(columns=largest).mean().idxmax()
        parts.append(_frame(table, table[best] - table[largest]))
        notes.append(f"{task}: K = {best:,} vs {largest:,}")
    if not parts:
        return pd.DataFrame(columns=DIFF_COLUMNS), ""
    return pd.concat(parts, ignore_index=True), "; ".join(notes)


# --- the claims -----------------------------------------------------------------------------

def _missing(rows: Sequence[Mapping], methods: Sequence[str], tasks: Iterable[str]) -> str:
    present = {r["method"] for r in rows if not r.get("ablation") and r.get("task") in set(tasks)}
    absent = [m for m in methods if m not in present]
    if absent:
        return f"no results for {', '.join(absent)} (not in this preset's methods)"
    return "no pair of these methods scored on the headline metric for the same seed and target"


def _claim(id: str, statement: str, compares: str, diffs: pd.DataFrame, no_evidence: str, note: str = "") -> Claim:
    mean, stderr, verdict = decide(diffs["diff"].tolist())
    reason = no_evidence if verdict == NO_EVIDENCE else (note or ("a single pair: no spread" if len(diffs) == 1 else ""))
    return Claim(id=id, statement=statement, compares=compares, tasks=tuple(sorted(set(diffs["task"]))),
                 n=len(diffs), mean_diff=mean, stderr=stderr, verdict=verdict, reason=reason)


def evaluate_claims(rows: Iterable[Mapping], metrics: Mapping[str, str | None]) -> list[Claim]:
    """Every claim's evidence, in the paper's order: claim 1 once per task (in ``metrics``'
    order), the others pooled over the tasks. ``metrics`` maps each task to the metric it is
    judged on; tasks missing from it are left out."""
    rows = list(rows)
    tasks = [t for t, m in metrics.items() if m]
    claims = []
    for task in tasks:
        diffs = paired_differences(rows, metrics, "lt-sft", "madx", tasks=[task])
        claims.append(_claim(f"ltsft_beats_madx_{task}", f"Composed LT-SFT beats MAD-X ({task})",
                             "lt-sft − madx", diffs, _missing(rows, ["lt-sft", "madx"], [task])))
    claims.append(_claim("lang_diff_helps", "Composing the target language's diff helps over the task diff alone",
                         "lt-sft − lt-sft-task-only", paired_differences(rows, metrics, "lt-sft", "lt-sft-task-only"),
                         _missing(rows, ["lt-sft", "lt-sft-task-only"], tasks)))
    claims.append(_claim("dense_interferes_more", "Dense composition loses more to interference than sparse",
                         f"({SPARSE[0]} − {SPARSE[1]}) − ({DENSE[0]} − {DENSE[1]})",
                         interference_differences(rows, metrics), _missing(rows, [*SPARSE, *DENSE], tasks)))
    claims.append(_claim("selection_beats_random", "LT-SFT's selection beats a random mask of the same K",
                         "lt-sft − rand-sft", paired_differences(rows, metrics, "lt-sft", "rand-sft"),
                         _missing(rows, ["lt-sft", "rand-sft"], tasks)))
    diffs, note = sparsity_differences(rows, metrics)
    swept = any(r.get("ablation") == "sparsity" for r in rows)
    claims.append(_claim("sparsity_guards_overfitting", "Sparsity guards against overfitting",
                         f"{SWEPT} at the best smaller K − at the largest K (sparsity sweep)", diffs,
                         "the sparsity sweep scored fewer than two K on a common seed and target" if swept
                         else "no sparsity sweep in this preset", note))
    return claims


def claims_metrics(claims: Iterable[Claim]) -> dict[str, dict[str, float | int]]:
    """For reports/metrics.json (`dvc exp show`): {claim id: {mean_diff, stderr, n, verdict}},
    numbers only (verdict: 1 supported, −1 not supported, 0 inconclusive or no evidence);
    differences in points rounded to 4 digits, absent ones left out."""
    out: dict[str, dict[str, float | int]] = {}
    for claim in claims:
        entry: dict[str, float | int] = {}
        if claim.mean_diff is not None:
            entry["mean_diff"] = round(claim.mean_diff, 4)
        if claim.stderr is not None:
            entry["stderr"] = round(claim.stderr, 4)
        out[claim.id] = entry | {"n": claim.n, "verdict": VERDICT_CODES[claim.verdict]}
    return out
