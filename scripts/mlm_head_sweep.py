"""Dev MLM loss of the demo's MLM-head warm-up against steps, learning rate and decoder.

Run in a checkout where `ltsft preset demo && dvc repro download` has run (it reads
params.yaml and data/text/), e.g.::

    python scripts/mlm_head_sweep.py --steps 2000 --lr 1e-3 3e-3 --decoder tied untied

The warm-up trains only the MLM head on a frozen encoder, so this sweep runs the encoder
ONCE (stages.prepare_model.rebuild_e5: the demo's encoder and its fresh head, exactly as
prepare_model builds them) and caches its output at the masked positions; each setting
then trains a copy of the real head (``model.cls``) on those cached states with
prepare_model's optimizer (SparseAdamW, dense, weight decay 0, clipping at
``max_grad_norm``) and schedule (linear decay to 0 over the run), batch size and max length
from params.yaml's ``model.warmup``. Two differences from pipeline.tasks.mlm.warm_up_head,
the price of a sweep that fits a shared 2-core CPU (the encoder is ~95% of a step there):

- each training sentence is masked once (with ``seed``) and keeps that mask for every
  epoch, where the Trainer masks afresh each epoch (over 2000 steps of 16: 2.7 epochs);
- the cached encoder runs without dropout (the Trainer's warm-up runs it in train mode).

The dev loss is exactly ``MaskedLM.evaluate``'s (same masks, EVAL_MASK_SEED); step 0 is the
fresh head. ``--budgets`` runs one complete run per budget (each decays to 0 at its own
end) instead of reading a budget off the longest run, where the learning rate at step N
is still high.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch


def masked_states(body, batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per sequence of the collated ``batches``: the encoder's states at its masked positions, and their labels."""
    rows = []
    with torch.no_grad():
        for batch in batches:
            hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            for states, labels in zip(hidden, batch["labels"]):
                scored = labels != -100
                rows.append((states[scored], labels[scored]))
    return rows


def dev_loss(head, states: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(head(states), labels))


def train(head, sentences: list[tuple[torch.Tensor, torch.Tensor]], dev: tuple[torch.Tensor, torch.Tensor],
          decoder: str, lr: float, steps: int, batch_size: int, max_grad_norm: float, seed: int,
          evaluate_at: set[int]) -> dict[int, float]:
    from pipeline.core.sparse_adamw import SparseAdamW

    if decoder == "untied":  # as pipeline.core.models.untie_output_embeddings, but trainable
        head.predictions.decoder.weight = torch.nn.Parameter(head.predictions.decoder.weight.detach().clone())
    else:
        head.predictions.decoder.weight.requires_grad_(False)  # the tied input embeddings: frozen
    trained = [p for p in head.parameters() if p.requires_grad]
    optimizer = SparseAdamW(trained, lr=lr, weight_decay=0.0, max_grad_norm=max_grad_norm)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    curve = {0: dev_loss(head, *dev)}
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            order += torch.randperm(len(sentences), generator=generator).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        states = torch.cat([sentences[i][0] for i in chosen])
        labels = torch.cat([sentences[i][1] for i in chosen])
        if not len(labels):
            continue
        loss = torch.nn.functional.cross_entropy(head(states), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step in evaluate_at:
            curve[step] = dev_loss(head, *dev)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps of each (long) run")
    parser.add_argument("--eval-at", type=int, nargs="+", default=[50, 100, 200, 300, 400, 600, 800, 1000, 1500, 2000],
                        help="steps at which a long run scores the dev set")
    parser.add_argument("--budgets", type=int, nargs="*", default=[],
                        help="instead of long runs: one complete run per budget, scored at its end")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3, 3e-3], help="learning rates")
    parser.add_argument("--decoder", nargs="+", default=["tied", "untied"], choices=["tied", "untied"])
    parser.add_argument("--limit", type=int, default=None, help="first N training/dev sentences only (a smoke run)")
    parser.add_argument("--out", type=Path, default=Path("mlm_head_sweep.json"), help="results (JSON)")
    args = parser.parse_args()

    from pipeline.core.config import load_params
    from pipeline.tasks import get_task
    from pipeline.tasks.base import eval_batches
    from pipeline.tasks.mlm import EVAL_MASK_SEED
    from stages.prepare_model import rebuild_e5, warmup_text

    params = load_params()
    spec = params.model_warmup
    mlm = get_task("mlm")
    started = time.perf_counter()
    train_text, dev_text = (text[:args.limit] for text in warmup_text(params))
    model, tokenizer, _ = rebuild_e5(params)
    model.eval()
    # Each training sentence masked once, in length-sorted batches (little padding).
    features = sorted(mlm.featurize(train_text, tokenizer, spec.max_length), key=lambda f: len(f["input_ids"]))
    collator = mlm.collator(tokenizer, seed=params.seed)
    sentences = masked_states(model.base_model, (collator(features[i:i + 64]) for i in range(0, len(features), 64)))
    dev_rows = masked_states(model.base_model, eval_batches(
        model, mlm.featurize(dev_text, tokenizer, spec.max_length), mlm.collator(tokenizer, seed=EVAL_MASK_SEED),
        params.eval_batch_size))
    dev = (torch.cat([s for s, _ in dev_rows]), torch.cat([y for _, y in dev_rows]))
    print(f"cached {sum(len(y) for _, y in sentences)} masked training tokens, {len(dev[1])} dev tokens "
          f"in {time.perf_counter() - started:.0f} s", flush=True)
    cache_seconds = time.perf_counter() - started
    results = []
    runs = [(budget, {budget}) for budget in args.budgets] or [(args.steps, set(args.eval_at) | {args.steps})]
    for decoder in args.decoder:
        for lr in args.lr:
            for steps, evaluate_at in runs:
                started = time.perf_counter()
                curve = train(copy.deepcopy(model.cls), sentences, dev, decoder, lr, steps, spec.batch_size,
                              spec.max_grad_norm, params.seed, evaluate_at)
                results.append({"decoder": decoder, "learning_rate": lr, "steps": steps,
                                "seconds": round(time.perf_counter() - started, 1), "dev_loss": curve})
                print(json.dumps(results[-1]), flush=True)
                args.out.write_text(json.dumps({"cache_seconds": round(cache_seconds, 1), "runs": results},
                                               indent=2) + "\n")  # after each run: partial results survive


if __name__ == "__main__":
    main()
