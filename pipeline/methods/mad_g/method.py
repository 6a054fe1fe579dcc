"""The registered MAD-G methods.

- `mad-g`: the target language's adapter GENERATED from its URIEL typology vector by the one
  generator (trained once per run on many languages' text, never the targets'), a task adapter
  trained over the generated source-language adapter (MAD-X's stacking), the target's
  generated adapter swapped in at test time. 0 trained parameters per language: the generator
  is counted once (``params_shared`` in its result rows).
- `mad-g-ls`: each language's generated adapter made an ordinary adapter and fine-tuned on the
  language's text with the MAD-X language budget (``madx.language``), then used as `madx` uses
  its language adapters (its task adapter over the fine-tuned source adapter).

The generated adapters have MAD-X's structure without the invertible adapter (see
generator.py), so both methods are MAD-X with another source of language adapters: they
reuse its training and composition (pipeline/methods/madx/method.py) and change only where
language adapters come from and their shape. Task adapters use ``madx.task``'s budget, so the
comparison with `madx` changes only the language side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.method import ComponentPaths, TrainContext, Variant
from pipeline.core.runs import RunResult
from pipeline.methods import register
from pipeline.methods.mad_g.settings import MadGSettings
from pipeline.methods.madx.method import AdapterComposer, MadX

GENERATOR = ("mad-g", "generator", "uriel")  # (method, kind, name) of the generator's directory


@register
class MadG(MadX):
    name = "mad-g"
    family = "mad_g"
    summary = ("MAD-G: language adapters generated from URIEL typology by one generator trained on many "
               "languages' text (targets unseen), a task adapter stacked on the generated source adapter")
    sections = ("madx.task", "mad_g")
    config_sections = {"mad_g": (MadGSettings, "MAD-G: the typology-to-adapter generator (methods mad-g, mad-g-ls).")}
    language_sections = ()
    language_from = "mad-g"
    imports_language = True  # its language adapters are written by the generator stage (`ltsft train-generator`)
    prerequisite = "generator"
    evaluation_sections = ("madx.task", "mad_g")
    # The task adapter alone too: what the generated target adapter adds (or costs) on top of it.
    variants = (Variant("mad-g-task-only", False), Variant("mad-g", True))

    @property
    def code(self) -> tuple[str, ...]:
        return (self.family, "madx")

    def language_shape(self, params: Any) -> tuple[int, bool]:
        return params.mad_g.reduction_factor, False  # generated adapters have no invertible part

    def train_language(self, ctx: TrainContext) -> RunResult:
        raise NotImplementedError("mad-g generates its language adapters (`ltsft train-generator`)")

    def composer(self, params: Any, paths: ComponentPaths, task: str, targets: Sequence[str]) -> GeneratedComposer:
        return GeneratedComposer(params, paths.component(self.name, "task", task),
                                 {lang: paths.component(self.name, "lang", lang) for lang in targets},
                                 self.language_shape(params), paths.component(*GENERATOR))


@register
class MadGLs(MadG):
    name = "mad-g-ls"
    summary = ("MAD-G-ls: each generated language adapter fine-tuned on the language's text (the madx.language "
               "budget), then used as MAD-X uses its language adapters")
    language_sections = ("madx.language", "mad_g")
    language_from = "mad-g-ls"
    imports_language = False
    starts_from = "mad-g"  # each language adapter starts as mad-g's generated one
    variants = (Variant("mad-g-ls", True),)
    train_language = MadX.train_language


class GeneratedComposer(AdapterComposer):
    """MAD-X's composition, with the generator behind the language adapters counted once
    (``shared_params``: its parameters, trained once for every language)."""

    def __init__(self, params: Any, task_path: Path, lang_paths: dict[str, Path], language_shape: tuple[int, bool],
                 generator_path: Path):
        super().__init__(params, task_path, lang_paths, language_shape)
        self.generator_path = generator_path

    def inputs(self, with_language: bool) -> list[Path]:
        return [*super().inputs(with_language), self.generator_path]

    def load(self, model: Any) -> None:
        from pipeline.formats.mad_g_generator import read_generator_meta

        super().load(model)
        self.shared_params = int(read_generator_meta(self._read(self.generator_path))["parameters"])
