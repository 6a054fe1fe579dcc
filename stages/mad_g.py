"""Stages `mad_g_text` and `train_generator`: MAD-G's generator, once per run.

`ltsft mad-g-text` collects the generator's training text (pipeline/sources/generator_text.py:
many languages, never a task target) into corpora/mad-g/<code>.txt with a manifest.
`ltsft train-generator` trains the generator on it over θ0 (the first seed: one generator
serves every seed's task adapters) and writes it with every language's generated adapter,
mad-g's language components (pipeline/methods/mad_g/build.py).
"""

from __future__ import annotations

from pipeline.core.atomic import atomic_dir, write_json
from pipeline.core.config import Params
from pipeline.core.method import TrainContext
from pipeline.core.models import load_tokenizer
from pipeline.formats.text import read_lines, write_lines
from pipeline.tasks import get_task
from stages import layout
from stages.common import require_files, write_curves, write_run_logs

MANIFEST = "manifest.json"


def collect_text(params: Params) -> None:
    """Write the generator's training text, atomically, with a manifest of lines per language."""
    from pipeline.sources.generator_text import collect_generator_text

    texts, provenance = collect_generator_text(params)
    with atomic_dir(layout.GENERATOR_TEXT) as out:
        for code, lines in sorted(texts.items()):
            write_lines(lines, out / f"{code}.txt")
        write_json(out / MANIFEST, {"provenance": provenance, "lines": {code: len(lines) for code, lines in sorted(texts.items())}})
    print(f"{layout.GENERATOR_TEXT}: {len(texts)} languages, {sum(map(len, texts.values())):,} lines "
          f"({provenance['source']})")


def read_text() -> dict[str, list[str]]:
    """The generator's training text as the text stage wrote it (language -> lines)."""
    require_files(layout.GENERATOR_TEXT / MANIFEST)
    return {path.stem: read_lines(path) for path in sorted(layout.GENERATOR_TEXT.glob("*.txt"))}


def train(params: Params) -> None:
    """Train the generator and generate the adapter of every language under `languages:`."""
    from pipeline.methods.mad_g.build import build_generator, check_settings

    dev_paths = {lang: layout.text_split(lang, "dev") for lang in params.languages}
    require_files(layout.BASE_MODEL)
    texts = read_text()
    check_settings(params, [*texts, *params.languages])  # before θ0 is loaded: bad input costs nothing
    task = get_task("mlm")
    ctx = TrainContext(params=params, task=task, kind="generator", name="uriel",
                       model=task.build_model(layout.BASE_MODEL, params.seed), tokenizer=load_tokenizer(layout.BASE_MODEL),
                       train=[], dev=[], paths=layout.COMPONENTS)
    dev = {lang: read_lines(path) for lang, path in dev_paths.items() if path.is_file()}
    result = build_generator(ctx, texts, list(params.languages), dev)
    write_curves(result.curves)
    write_run_logs(result.facts)
