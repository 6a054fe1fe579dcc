"""Dense methods, each stored as a diff from its starting point: full fine-tuning
(`full-ft`), the interference ablation (`dense-composed`) and the floor (`head-only`).
They train through pipeline/core/training.py's ``train_as_diff``, shared with BitFit."""

from pipeline.methods.dense import method  # noqa: F401  (registers full-ft, dense-composed, head-only)
