"""Render a report from MADE-UP rows (every method, every figure type) and screenshot it
with headless Chromium, to check the page's layout by eye. The numbers mean nothing.

    python scripts/screenshot_report.py [--out FOLDER] [--chromium chromium]

Prints the screenshot's path. Needs Chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.report import METHOD_ORDER, TaskReport, render_report  # noqa: E402

TARGETS = {"pos": ["he", "id", "tr", "ja", "ar"], "dp": ["he", "id", "tr", "ja", "ar", "ko"]}
LANG_PARAMS = {"lt-sft-published": 7_667_712, "lt-sft": 7_667_712, "rand-sft": 7_667_712, "madx": 7_387_776,
               "dense-composed": 117_653_760}
TASK_PARAMS = {"lt-sft-published": 7_667_712, "lt-sft": 7_667_712, "lt-sft-task-only": 7_667_712,
               "rand-sft": 7_667_712, "madx": 894_528, "madx-task-only": 894_528, "full-ft": 117_653_760,
               "dense-composed": 117_653_760, "dense-composed-task-only": 117_653_760, "head-only": 150_701}
QUALITY = {"lt-sft-published": 0.78, "lt-sft": 0.77, "lt-sft-task-only": 0.72, "rand-sft": 0.70, "madx": 0.75,
           "madx-task-only": 0.71, "full-ft": 0.72, "dense-composed": 0.69, "dense-composed-task-only": 0.71,
           "head-only": 0.55}
METRICS = {"pos": ("accuracy",), "dp": ("uas", "las")}


def sample_rows(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for task, langs in TARGETS.items():
        for method in METHOD_ORDER:
            for lang in langs:
                base = QUALITY[method] + rng.uniform(-0.06, 0.06)
                for metric in METRICS[task]:
                    value = base - (0.08 if metric == "las" else 0.0)
                    row = {"task": task, "method": method, "lang": lang, "metric": metric, "value": round(value, 4),
                           "params_lang": LANG_PARAMS.get(method, 0), "params_task": TASK_PARAMS[method]}
                    if method in ("lt-sft", "lt-sft-task-only", "rand-sft"):
                        row["k"] = 7_667_712
                    rows.append(row)
        for k, shift in ((100_000, -0.08), (1_000_000, -0.02), (30_000_000, -0.03)):
            for method in ("lt-sft", "lt-sft-task-only", "rand-sft"):
                for lang in langs:
                    value = QUALITY[method] + shift + rng.uniform(-0.02, 0.02) - (0.08 if task == "dp" else 0.0)
                    rows.append({"task": task, "method": method, "lang": lang, "metric": METRICS[task][-1],
                                 "value": round(value, 4), "params_lang": 0, "params_task": k, "k": k,
                                 "ablation": "sparsity"})
    return rows


def sample_overlap(langs: list[str], layers: int = 12, seed: int = 1) -> dict:
    rng = random.Random(seed)
    names = ["embeddings"] + [f"layer {i}" for i in range(layers)]
    out = {}
    for lang in langs:
        task_n = [rng.randint(200_000, 800_000) for _ in names]
        lang_n = [rng.randint(200_000, 800_000) for _ in names]
        expected = [t * l / 7_000_000 for t, l in zip(task_n, lang_n)]
        shared = [int(e * rng.uniform(0.5, 4.0)) for e in expected]
        out[lang] = {"lang_entries": lang_n, "task_entries": task_n, "shared": shared,
                     "expected": [round(e, 3) for e in expected]}
    return {"layers": names, "langs": out}


def build(out: Path) -> Path:
    rows = sample_rows()
    references = [{"task": "pos", "method": "lt-sft", "lang": "avg", "metric": "accuracy", "value": 75.0,
                   "source": "made-up sample"},
                  {"task": "dp", "method": "madx", "lang": "he", "metric": "las", "value": 66.6,
                   "source": "made-up sample"}]
    reports = []
    for task in TARGETS:
        provenance = {"source": "en", "preset": "sample", "model": "made-up", "K (task)": "7,667,712",
                      "seeds": "42", "git revision": "0000000", "params hash": "sample", "date": "—",
                      "hardware": "—", "wall time": "—"}
        reports.append(TaskReport(task, [r for r in rows if r["task"] == task], provenance,
                                  [ref for ref in references if ref["task"] == task],
                                  sample_overlap(TARGETS[task]) if task == "dp" else None))
    page = render_report("RENDERING SAMPLE (made-up numbers, not results)", reports, out / "plots",
                         intro="This page shows the report's layout on made-up rows covering every method and "
                               "every figure type. None of its numbers are results.")
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        help="folder for index.html, plots/ and the screenshot (default: a temp folder)")
    parser.add_argument("--chromium", default="chromium", help="the Chromium executable")
    parser.add_argument("--size", default="1280,2400", help="window size WIDTH,HEIGHT")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="report-sample-"))
    out.mkdir(parents=True, exist_ok=True)
    page = build(out)
    browser = shutil.which(args.chromium)
    if browser is None:
        sys.exit(f"{args.chromium}: not found (Debian: apt-get install chromium); the page is at {page}")
    shot = out / "screenshot.png"
    subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                    f"--screenshot={shot}", f"--window-size={args.size}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    print(shot)


if __name__ == "__main__":
    main()
