"""LT-SFT and Rand-SFT (sparse fine-tuning), and the authors' released LT-SFT diffs.

- ``lottery.py``: the two-phase algorithm (train_lt_sft);
- ``selection.py``: one global top-K threshold over all maskable tensors, and random masks;
- ``method.py``: the registered methods.
The optimizer (pipeline/core/sparse_adamw.py) is shared with every other method.
"""

from pipeline.methods.lt_sft import method  # noqa: F401  (registers lt-sft-published, lt-sft, rand-sft)
