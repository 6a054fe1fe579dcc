"""Training throughput side by side: plain transformers fine-tuning against LT-SFT's phases.

Both sides run through transformers' Trainer on the same model, the same batches and in
the same process, taking turns (interleaved rounds, the order alternating), so a machine
that slows down for a while (other jobs on shared cores) slows both:
- plain: ``Trainer`` with its defaults (its own AdamW, fused where available, its own
  gradient clipping) training every parameter, the model's own loss; for masked LM,
  ``BertForMaskedLM`` with its tied decoder scoring every position over the full vocabulary;
- LT-SFT: ``train_lt_sft`` (pipeline/methods/lt_sft/lottery.py), i.e. run_trainer and
  SparseAdamW exactly as `ltsft train-task` / `train-lang` run them; for masked LM the
  model is prepared as pipeline/tasks/mlm.py prepares it (decoder untied and frozen,
  logits only at masked positions).

A step's time is measured between the ends of consecutive optimizer steps (a global torch
optimizer hook: no change to the Trainer or to run_trainer), so it covers loading the batch,
forward, backward, clipping, the update and the Trainer's own bookkeeping. Each run's
first ``warmup`` steps are dropped; the median of the rest is reported, as tokens/s.
Every example has ``seq_len`` tokens, so no padding differs between the sides.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForTokenClassification,
    DataCollatorForLanguageModeling,
    DataCollatorForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from pipeline.core.budget import PhaseBudget
from pipeline.core.models import untie_output_embeddings
from pipeline.core.parameters import maskable_parameter_names
from pipeline.core.sparse_adamw import SparseAdamW
from pipeline.methods.lt_sft.lottery import LotteryConfig, train_lt_sft
from pipeline.tasks.mlm import MASK_PROBABILITY, score_masked_positions_only

# mBERT's vocabulary (the decoder's cost at masked LM) with a short, narrow body so that a
# CPU can time tens of steps per side in minutes. gpu_check.sh passes mBERT's full geometry.
THROUGHPUT_CONFIG: dict[str, Any] = {
    "vocab_size": 119_547, "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 1024, "max_position_embeddings": 512, "type_vocab_size": 2,
}
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TAGGING_LABELS = 17  # UPOS


# --------------------------------------------------------------------------- data
def synthetic_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with ``vocab_size`` entries: what the collators need (padding,
    the mask token, the vocabulary's size) without a trained vocabulary."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), vocab_size)})
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="[UNK]")), pad_token="[PAD]", unk_token="[UNK]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )


def synthetic_features(kind: str, count: int, seq_len: int, vocab_size: int, seed: int) -> list[dict[str, list[int]]]:
    """``count`` examples of exactly ``seq_len`` tokens ([CLS] … [SEP]), as the tasks featurize:
    tagging with a label on every inner token, masked LM with its special-tokens mask."""
    generator = torch.Generator().manual_seed(seed)
    features = []
    for _ in range(count):
        inner = torch.randint(len(SPECIALS), vocab_size, (seq_len - 2,), generator=generator).tolist()
        ids = [SPECIALS.index("[CLS]"), *inner, SPECIALS.index("[SEP]")]
        feature = {"input_ids": ids, "attention_mask": [1] * seq_len}
        if kind == "tagging":
            tags = torch.randint(0, TAGGING_LABELS, (seq_len - 2,), generator=generator).tolist()
            feature["labels"] = [-100, *tags, -100]
        else:
            feature["special_tokens_mask"] = [1, *[0] * (seq_len - 2), 1]
        features.append(feature)
    return features


# --------------------------------------------------------------------------- timing
class StepClock:
    """When each ``step()`` of the optimizers ``accept`` picks ended, per optimizer instance
    (one per phase), in the order they first stepped. Installed as a global torch optimizer
    hook; durations are the differences of consecutive marks, so a phase's set-up, before
    its first step ends, never counts."""

    def __init__(self, accept: Callable[[torch.optim.Optimizer], bool], device: str) -> None:
        self.accept = accept
        self.device = device
        self.marks: dict[int, list[tuple[float, float]]] = {}
        self.order: list[int] = []

    def _hook(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        if not self.accept(optimizer):
            return
        if self.device == "cuda":
            torch.cuda.synchronize()
        key = id(optimizer)
        if key not in self.marks:
            self.marks[key] = []
            self.order.append(key)
        # Wall time, and this process's CPU time: on a machine shared with other jobs the
        # latter barely sees their load (a second view; the wall time is the figure).
        self.marks[key].append((time.perf_counter(), time.process_time()))

    @contextlib.contextmanager
    def running(self) -> Iterator[StepClock]:
        handle = register_optimizer_step_post_hook(self._hook)
        try:
            yield self
        finally:
            handle.remove()


# --------------------------------------------------------------------------- the two sides
def _precision_context(bf16: bool) -> contextlib.AbstractContextManager:
    # LT-SFT's side takes its precision the way a stage gives it (runtime.precision), so that
    # both sides run the Trainer's own bf16 switch.
    from pipeline.core.runtime import Runtime, using

    return using(Runtime(precision="bf16")) if bf16 else contextlib.nullcontext()


def run_plain(model: PreTrainedModel, features: list[dict], collator: Callable, steps: int, batch_size: int,
              seed: int, device: str, bf16: bool) -> list[tuple[float, float]]:
    """Plain transformers fine-tuning: every parameter, Trainer's default optimizer and clipping."""
    clock = StepClock(lambda opt: not isinstance(opt, SparseAdamW), device)
    with tempfile.TemporaryDirectory(prefix="ltsft-bench-") as out_dir:
        args = TrainingArguments(
            output_dir=out_dir, per_device_train_batch_size=batch_size, max_steps=steps, learning_rate=5e-5,
            lr_scheduler_type="linear", seed=seed, data_seed=seed, save_strategy="no", report_to="none",
            logging_strategy="steps", logging_steps=max(1, steps // 5), disable_tqdm=True,
            dataloader_num_workers=0, dataloader_pin_memory=device == "cuda", remove_unused_columns=False,
            use_cpu=device == "cpu", bf16=bf16,
        )
        trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=collator)
        with clock.running():
            trainer.train()
    return clock.marks[clock.order[0]]


def run_lt_sft(model: PreTrainedModel, features: list[dict], collator: Callable, steps: int, batch_size: int,
               density: float, l1_lambda: float, seed: int, device: str, bf16: bool) -> list[list[tuple[float, float]]]:
    """LT-SFT's two phases through train_lt_sft (run_trainer + SparseAdamW), K = density × maskable."""
    names = set(maskable_parameter_names(model))
    maskable = sum(p.numel() for n, p in model.named_parameters() if n in names)
    config = LotteryConfig(k=max(1, int(density * maskable)), phase1=PhaseBudget(steps=steps),
                           phase2=PhaseBudget(steps=steps), batch_size=batch_size, l1_lambda=l1_lambda, seed=seed,
                           progress=False)
    clock = StepClock(lambda opt: isinstance(opt, SparseAdamW), device)
    with clock.running(), _precision_context(bf16):
        train_lt_sft(model, features, collator, config)
    return [clock.marks[key] for key in clock.order]


# --------------------------------------------------------------------------- the comparison
def build_models(kind: str, config: Mapping[str, Any], seed: int) -> tuple[PreTrainedModel, PreTrainedModel]:
    """(plain model, LT-SFT model) from the same random initialisation."""
    torch.manual_seed(seed)
    if kind == "tagging":
        base = BertForTokenClassification(BertConfig(**config, num_labels=TAGGING_LABELS))
        return base, copy.deepcopy(base)
    base = BertForMaskedLM(BertConfig(**config))  # tied decoder, stock loss over every position
    ours = copy.deepcopy(base)
    untie_output_embeddings(ours)
    return base, score_masked_positions_only(ours)


# The paper's K over mBERT's 177,815,040 maskable entries: task diffs, language diffs.
PAPER_DENSITY = {"tagging": 14_155_776 / 177_815_040, "mlm": 7_667_712 / 177_815_040}
PAPER_L1 = {"tagging": 0.0, "mlm": 0.1}  # presets/paper.yaml: task_sft / lang_sft l1_lambda


def _round(kind: str, config: Mapping[str, Any], features: list[dict], collator: Callable, steps: int,
           batch_size: int, density: float, l1_lambda: float, seed: int, device: str, bf16: bool,
           plain_first: bool, progress: Callable[[str], None]) -> dict[str, list[tuple[float, float]]]:
    """One round: plain and LT-SFT from the same initial weights; each side's step marks."""
    plain_model, ours_model = build_models(kind, config, seed)
    marks: dict[str, list[tuple[float, float]]] = {}
    for side in (("plain", "lt-sft") if plain_first else ("lt-sft", "plain")):
        progress(side)
        # The Trainer prints its log lines when progress bars are off; the bench prints a table.
        with contextlib.redirect_stdout(io.StringIO()):
            if side == "plain":
                marks["plain"] = run_plain(plain_model.to(device), features, collator, steps, batch_size, seed,
                                           device, bf16)
            else:
                marks["phase1"], marks["phase2"] = run_lt_sft(
                    ours_model.to(device), features, collator, steps, batch_size, density, l1_lambda, seed,
                    device, bf16)
    return marks


def bench_throughput(
    kind: str = "tagging",
    config: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    seq_len: int = 128,
    warmup: int = 2,
    timed: int = 8,
    rounds: int = 4,
    density: float | None = None,
    l1_lambda: float | None = None,
    seed: int = 0,
    device: str | None = None,
    bf16: bool = False,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Tokens/s of plain fine-tuning, LT-SFT phase 1 and phase 2 (``kind``: tagging or mlm);
    the keys carry an ``mlm_`` prefix for masked LM. Ratios are of median step times.

    ``density`` (K over the maskable entries) and ``l1_lambda`` default to the paper's values
    for the kind: task diffs 8.0% and no L1, language diffs 4.3% and λ = 0.1."""
    if kind not in PAPER_DENSITY:
        raise ValueError(f"kind must be tagging or mlm, got {kind!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = dict(THROUGHPUT_CONFIG if config is None else config)
    density = PAPER_DENSITY[kind] if density is None else density
    l1_lambda = PAPER_L1[kind] if l1_lambda is None else l1_lambda
    steps = warmup + timed + 1  # the first interval starts at the first step's end
    tokenizer = synthetic_tokenizer(config["vocab_size"])
    features = synthetic_features(kind, steps * batch_size, seq_len, config["vocab_size"], seed)
    if kind == "tagging":
        collator: Callable = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=-100)
    else:
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=MASK_PROBABILITY, seed=seed)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    walls: dict[str, list[float]] = {"plain": [], "phase1": [], "phase2": []}
    cpus: dict[str, list[float]] = {"plain": [], "phase1": [], "phase2": []}
    per_round: list[dict[str, float]] = []
    for round_ in range(rounds):
        marks = _round(kind, config, features, collator, steps, batch_size, density, l1_lambda, seed, device, bf16,
                       plain_first=round_ % 2 == 0,
                       progress=lambda side, r=round_: progress(f"{kind} round {r + 1}/{rounds}: {side}"))
        medians = {}
        for arm, arm_marks in marks.items():
            pairs = list(itertools.pairwise(arm_marks))[warmup:]
            durations = [b[0] - a[0] for a, b in pairs]
            walls[arm] += durations
            cpus[arm] += [b[1] - a[1] for a, b in pairs]
            medians[arm] = statistics.median(durations)
        per_round.append(medians)
    tokens = batch_size * seq_len
    median = {arm: statistics.median(values) for arm, values in walls.items()}
    cpu = {arm: statistics.median(values) for arm, values in cpus.items()}
    prefix = "" if kind == "tagging" else "mlm_"
    model = "BertForTokenClassification" if kind == "tagging" else "BertForMaskedLM"
    shrunk = config["vocab_size"] == 119_547 and config["num_hidden_layers"] < 12
    return {
        f"{prefix}throughput_setup": (
            f"{model} hidden={config['hidden_size']} layers={config['num_hidden_layers']} "
            f"vocab={config['vocab_size']:,}{' (mBERT vocabulary, fewer/narrower layers)' if shrunk else ''}, "
            f"batch {batch_size}x{seq_len} (no padding), {device}, {'bf16' if bf16 else 'fp32'}, "
            f"{rounds} interleaved rounds x {timed} timed steps after {warmup} warm-up, median step; "
            f"K = {density:.2%} of the maskable entries, L1 {l1_lambda}"
        ),
        f"{prefix}plain_tokens_per_second": tokens / median["plain"],
        f"{prefix}phase1_tokens_per_second": tokens / median["phase1"],
        f"{prefix}phase2_tokens_per_second": tokens / median["phase2"],
        f"{prefix}phase1_throughput_over_plain": median["plain"] / median["phase1"],
        f"{prefix}phase2_throughput_over_plain": median["plain"] / median["phase2"],
        # Per-round ratios: how steady the machine was.
        f"{prefix}phase1_throughput_over_plain_rounds": [r["plain"] / r["phase1"] for r in per_round],
        f"{prefix}phase2_throughput_over_plain_rounds": [r["plain"] / r["phase2"] for r in per_round],
        f"{prefix}phase1_throughput_over_plain_cpu_time": cpu["plain"] / cpu["phase1"],
        f"{prefix}phase2_throughput_over_plain_cpu_time": cpu["plain"] / cpu["phase2"],
        f"{prefix}plain_step_seconds": median["plain"],
        # The larger of the two sides (plain MLM's full-vocabulary logits, usually).
        f"{prefix}peak_gpu_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
    }
