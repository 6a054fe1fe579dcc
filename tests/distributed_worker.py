"""Run `ltsft` commands in one process, alone or as one rank of `torchrun` (tests/test_distributed.py).

Usage: python tests/distributed_worker.py WORKDIR 'train-lang en --method lt-sft' [...]

Each process works in ``WORKDIR/rank<RANK>`` (a copy of the same prepared project), so what a
process writes lands in its own copy: the test can see that only rank 0 wrote anything.

Masked-LM masks are made batch-independent here (and only here): the stock collator draws
them from the global RNG over the whole batch, so a batch split over two processes would get
other masks than the same batch in one process, and the runs could not be compared entry by
entry. Each example's masks instead depend only on its own tokens and positions. The base
model is saved without dropout by the test, for the same reason.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import torch

MASK_EVERY = 5  # about one scored position in five, like the stock 15%


class FixedMasks:
    """An MLM collator whose masks are a function of each example alone."""

    def __init__(self, tokenizer, seed: int | None = None) -> None:
        self.mask_id, self.pad_id = tokenizer.mask_token_id, tokenizer.pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows = []
        for feature in features:
            ids, special = feature["input_ids"], feature["special_tokens_mask"]
            labels = [t if not s and (7 * i + t) % MASK_EVERY == 0 else -100
                      for i, (t, s) in enumerate(zip(ids, special))]
            rows.append(([self.mask_id if label != -100 else t for t, label in zip(ids, labels)], labels))
        width = max(len(ids) for ids, _ in rows)
        pad = [width - len(ids) for ids, _ in rows]
        return {
            "input_ids": torch.tensor([ids + [self.pad_id] * n for (ids, _), n in zip(rows, pad)]),
            "attention_mask": torch.tensor([[1] * (width - n) + [0] * n for n in pad]),
            "labels": torch.tensor([labels + [-100] * n for (_, labels), n in zip(rows, pad)]),
        }


def main() -> None:
    workdir, commands = Path(sys.argv[1]), sys.argv[2:]
    os.chdir(workdir / f"rank{os.environ.get('RANK', '0')}")
    torch.set_num_threads(1)

    from pipeline.tasks.mlm import MaskedLM

    MaskedLM.collator = lambda self, tokenizer, seed=None: FixedMasks(tokenizer, seed)

    import typer

    from stages.cli import app

    command = typer.main.get_command(app)
    for line in commands:
        command.main(shlex.split(line), standalone_mode=False)


if __name__ == "__main__":
    main()
