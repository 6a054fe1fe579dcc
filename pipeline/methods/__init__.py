"""The method registry: ``METHODS`` maps a method's name to the object that trains,
composes and reports it (peft's ``register_peft_method`` idea).

Every list of methods in the project derives from here: the CLI's ``--method`` choices,
evaluation variants, report order, plot groups, and the checks that dvc.yaml has a stage for
each. Adding a method is a package under ``pipeline/methods/`` whose classes are decorated
with :func:`register`, plus one import line below. Importing this module loads no torch.
"""

from __future__ import annotations

from pipeline.core.config import register_section
from pipeline.core.method import Method, Variant

METHODS: dict[str, Method] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add one instance of ``cls`` to ``METHODS`` under ``cls.name``."""
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    for section, (schema, help_text) in cls.config_sections.items():
        register_section(section, schema, help_text)
    METHODS[cls.name] = cls()
    return cls


def reported_order() -> list[str]:
    """Every reported variant in registry order, each method's composed variant first: the
    report's row order (``variants`` themselves are in evaluation order)."""
    return [variant.name for method in METHODS.values()
            for variant in sorted(method.variants, key=lambda v: not v.with_language)]


def swept_variants() -> list[str]:
    """The variants the sparsity sweep scores at every K (the sparsity plot's lines)."""
    return [v.name for m in METHODS.values() if m.swept for v in sorted(m.variants, key=lambda v: not v.with_language)]


def interference_pairs() -> list[tuple[str, str, str]]:
    """(label, composed variant, task-only variant) of every method in the interference plot."""
    pairs = []
    for method in METHODS.values():
        if method.interference:
            composed = [v.name for v in method.variants if v.with_language]
            alone = [v.name for v in method.variants if not v.with_language]
            pairs.append((method.interference, composed[0], alone[0]))
    return pairs


def language_methods() -> list[str]:
    """Methods whose language stage trains a language component (`ltsft train-lang --method`)."""
    return [name for name, method in METHODS.items() if method.trains_language]


def task_methods() -> list[str]:
    """Methods that train a task component (`ltsft train-task --method`)."""
    return [name for name, method in METHODS.items() if not method.imported]


# Registration: one line per method family, in report order.
from pipeline.methods import lt_sft  # noqa: E402,F401  lt-sft, lt-sft-published, rand-sft
from pipeline.methods import madx  # noqa: E402,F401
from pipeline.methods import mad_g  # noqa: E402,F401  mad-g, mad-g-ls
from pipeline.methods import dense  # noqa: E402,F401  full-ft, dense-composed, head-only
from pipeline.methods import bitfit  # noqa: E402,F401

__all__ = ["METHODS", "Method", "Variant", "register", "reported_order", "swept_variants", "interference_pairs",
           "language_methods", "task_methods"]
