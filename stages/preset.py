"""`ltsft preset NAME`: write presets/NAME.yaml over params.yaml (a complete file, not a patch),
and dvc.yaml for the methods the preset runs (``run_methods``)."""

from __future__ import annotations

from pipeline.core.atomic import atomic_file
from pipeline.core.config import ConfigError, load_params
from stages import dvc_yaml, layout


def available() -> list[str]:
    return sorted(p.stem for p in layout.PRESETS.glob("*.yaml"))


def run(name: str) -> None:
    source = layout.preset_file(name)
    if not source.is_file():
        raise ConfigError(f"preset {name!r}: no {source} (available: {', '.join(available())})")
    text = source.read_text(encoding="utf-8")
    load_params(source)  # never install a broken preset: the same schema as every stage (errors name the key)
    with atomic_file(layout.PARAMS) as handle:
        handle.write(text)
    print(f"{layout.PARAMS}: now preset {name}")
    # dvc.yaml lists the stages of the methods this preset runs.
    if not dvc_yaml.run(path=layout.DVC_YAML):
        print(f"{layout.DVC_YAML}: written for its methods")
