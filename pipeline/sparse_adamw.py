"""AdamW that can update only chosen entries of a parameter (LT-SFT phase 2).

Masking by zeroing gradients is not enough: AdamW's decoupled weight decay, and momentum
from earlier steps, would still move masked entries. This optimizer instead gathers the
chosen entries of each parameter, runs the AdamW update on that short vector only, and
scatters the result back. Entries outside the selection are never written, so they stay
bit-exactly at θ0, and the optimizer state is K-sized instead of model-sized.

It also owns two things that must see exactly the trainable entries:
- gradient-norm clipping (pass ``max_grad_norm=0`` to the Trainer and set it here), so the
  norm is that of the gradient of what is actually trained;
- the L1 penalty towards θ0, λ·Σ|θ − θ0| / N, added as its subgradient λ·sign(θ − θ0)/N
  before clipping: the same update as adding the term to the loss, without building a
  model-sized autograd graph for it.
Parameters without an index set are updated densely (the task head, or every parameter
in LT-SFT's phase 1), with the same arithmetic as ``torch.optim.AdamW``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch


class SparseAdamW(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 5e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        trainable_indices: Mapping[torch.nn.Parameter, torch.Tensor] | None = None,
        max_grad_norm: float | None = None,
        l1_lambda: float = 0.0,
        l1_reference: Mapping[torch.nn.Parameter, torch.Tensor] | None = None,
        l1_normaliser: int = 1,
    ) -> None:
        """``trainable_indices`` maps a parameter to the sorted int64 flat indices it may
        change; ``l1_reference`` maps a parameter to its θ0 (whole, even when indexed)."""
        params = list(params)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.max_grad_norm = max_grad_norm
        self.l1_scale = l1_lambda / max(l1_normaliser, 1)
        self._indices: dict[int, torch.Tensor] = {}
        self._l1_reference: dict[int, torch.Tensor] = {}
        for p in params:
            idx = (trainable_indices or {}).get(p)
            if idx is not None:
                self._indices[id(p)] = idx.to(p.device, torch.int64)
            ref = (l1_reference or {}).get(p) if self.l1_scale else None
            if ref is not None:
                ref = ref.to(p.device).reshape(-1)
                # Keep only what is needed: θ0 at the trainable entries.
                self._l1_reference[id(p)] = ref.index_select(0, idx.to(p.device)) if idx is not None else ref

    def _trainable_view(self, p: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        idx = self._indices.get(id(p))
        return flat if idx is None else flat.index_select(0, idx)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        # 1. Gather the gradient of every trainable entry (plus the L1 subgradient).
        work: list[tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or (id(p) in self._indices and not self._indices[id(p)].numel()):
                    continue
                value = self._trainable_view(p, p.data.view(-1))
                grad = self._trainable_view(p, p.grad.reshape(-1))
                ref = self._l1_reference.get(id(p))
                if ref is not None:
                    grad = grad + self.l1_scale * torch.sign(value - ref)
                work.append((group, p, value, grad))

        # 2. Clip the global norm of exactly those gradients.
        if self.max_grad_norm and work:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for *_, g in work]))
            coef = self.max_grad_norm / (float(norm) + 1e-6)
            if coef < 1.0:
                for *_, g in work:
                    g.mul_(coef)

        # 3. AdamW on the gathered entries, then scatter back.
        for group, p, value, grad in work:
            beta1, beta2 = group["betas"]
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(value)
                state["exp_avg_sq"] = torch.zeros_like(value)
            state["step"] += 1
            step = state["step"]
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            if group["weight_decay"]:
                value.mul_(1 - group["lr"] * group["weight_decay"])
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias1 = 1 - beta1**step
            bias2 = 1 - beta2**step
            denom = (exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(group["eps"])
            value.addcdiv_(exp_avg, denom, value=-group["lr"] / bias1)
            idx = self._indices.get(id(p))
            if idx is not None:
                p.data.view(-1).index_copy_(0, idx, value)
            # Dense parameters were updated in place through the view.
        return loss
