"""MAD-X adapters (Pfeiffer et al., 2020) in plain PyTorch: ``adapters.py`` has the modules
and how they enter a model's computation; ``method.py`` the registered `madx` method. Their
files are checked directories (pipeline/formats/adapter.py)."""

from pipeline.methods.madx import method  # noqa: F401  (registers madx)
