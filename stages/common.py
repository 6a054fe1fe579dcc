"""Glue the stages share: method lookup, input checks, run logs, quiet logging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.atomic import write_json
from pipeline.core.errors import ConfigError, UserError
from stages import layout


def quiet_transformers() -> None:
    """Expected notices (e.g. 'newly initialized classifier') would drown the progress bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def get_method(name: str, allowed: list[str], what: str) -> Any:
    """The registered method ``name``, if it may be used for ``what``; else one clear line."""
    from pipeline.methods import METHODS

    if name not in allowed:
        raise ConfigError(f"--method: unknown method {name!r} for {what} (known: {', '.join(allowed)})")
    return METHODS[name]


def require_files(*paths: Path) -> None:
    """Fail before any work, naming the first missing input."""
    for path in paths:
        if not Path(path).exists():
            raise UserError(f"{path}: not found (run `dvc repro` or the stage that writes it)")


def write_curves(curves: dict[str, Any]) -> None:
    """Each output's training curves where the layout keeps them (layout.curves_dir); by the
    main process only when several train data-parallel."""
    from pipeline.core import curves as curve_files
    from pipeline.core.distributed import is_main_process

    if not is_main_process():
        return
    for output, found in curves.items():
        curve_files.write(found, layout.curves_dir(output))


def write_run_logs(facts: dict[str, dict[str, Any]]) -> None:
    """One run log per output directory written (runs/<output>.json; see layout.RUNS); by the
    main process only when several train data-parallel."""
    from pipeline.core.distributed import is_main_process

    if not is_main_process():
        return
    for output, record in facts.items():
        write_json(layout.run_log(output), record)
