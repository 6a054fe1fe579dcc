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
The update itself is torch's own (fused where available) AdamW, run on the parameter for
dense parameters (the task head, or everything in LT-SFT's phase 1) and on a K-sized copy
of the selected entries for masked ones.
"""

from __future__ import annotations

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
        # Parameters may come as a flat list or as torch-style groups (e.g. a head with its own lr).
        params = [p for group in self.param_groups for p in group["params"]]
        self.max_grad_norm = max_grad_norm
        self.grad_norm: torch.Tensor | None = None  # the last step's pre-clip norm (see step)
        self.l1_scale = l1_lambda / max(l1_normaliser, 1)
        self._params_by_id = {id(p): p for p in params}
        self._indices: dict[int, torch.Tensor] = {}
        self._l1_reference: dict[int, torch.Tensor] = {}
        # What torch's AdamW updates: the parameter itself when dense; for an indexed one,
        # a K-sized "shadow" holding its selected entries. The shadow is the master copy for
        # the phase (gathered once here, scattered back after every step): nothing else may
        # write those entries while this optimizer trains them.
        self._targets: dict[int, torch.Tensor] = {}
        for p in params:
            idx = (trainable_indices or {}).get(p)
            if idx is not None:
                idx = idx.to(p.device, torch.int64)
                self._indices[id(p)] = idx
            if idx is None:
                self._targets[id(p)] = p
            elif idx.numel():
                self._targets[id(p)] = p.detach().reshape(-1).index_select(0, idx)
            ref = (l1_reference or {}).get(p) if self.l1_scale else None
            if ref is not None and id(p) in self._targets:
                ref = ref.detach().to(p.device).reshape(-1)
                # Keep only what is needed: θ0 at the trainable entries.
                self._l1_reference[id(p)] = ref.index_select(0, idx) if idx is not None else ref
        # torch's fused AdamW (Trainer's default) where the device supports it.
        inner_groups = [
            {"params": [self._targets[id(p)] for p in group["params"] if id(p) in self._targets], "lr": group["lr"]}
            for group in self.param_groups
        ]
        # Which outer groups have an inner one, in order (the schedule writes their lr). Kept as
        # positions, not the group dicts: accelerate's prepare reloads the optimizer's state
        # dict, which replaces every param_groups dict, so stored dicts would miss the schedule.
        self._outer_positions = [i for i, inner in enumerate(inner_groups) if inner["params"]]
        inner_groups = [g for g in inner_groups if g["params"]] or [{"params": [torch.zeros(1)]}]
        self._grad_buffers: dict[int, torch.Tensor] = {}
        self._scratch: dict[int, torch.Tensor] = {}
        try:
            self._inner = torch.optim.AdamW(inner_groups, lr=lr, betas=betas, eps=eps,
                                            weight_decay=weight_decay, fused=True)
        except RuntimeError:
            self._inner = torch.optim.AdamW(inner_groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _follow_devices(self) -> None:
        """Move the K-sized state to where each parameter is now.

        The optimizer is built before the Trainer moves the model to its device (a GPU): the
        indices, the shadows, their AdamW moments and the L1 references then have to follow,
        or phase 2 would index a GPU gradient with CPU indices. ``.data`` is reassigned so the
        inner AdamW keeps the same tensor objects (its param_groups and state keys)."""
        for p_id, idx in self._indices.items():
            device = self._params_by_id[p_id].device
            if idx.device == device:
                continue
            self._indices[p_id] = idx.to(device)
            target = self._targets.get(p_id)
            if target is not None:
                target.data = target.data.to(device)
                for key, value in self._inner.state.get(target, {}).items():
                    # AdamW keeps "step" on the CPU unless fused/capturable put it on the device.
                    if torch.is_tensor(value) and (key != "step" or value.device.type != "cpu"):
                        self._inner.state[target][key] = value.to(device)
        for p_id, ref in self._l1_reference.items():
            device = self._params_by_id[p_id].device
            if ref.device != device:
                self._l1_reference[p_id] = ref.to(device)

    def _buffer(self, store: dict[int, torch.Tensor], key: int, like: torch.Tensor, numel: int) -> torch.Tensor:
        """A scratch tensor kept between steps (allocating K-sized tensors every step costs
        time on every device and fragments a GPU's memory)."""
        buffer = store.get(key)
        if buffer is None or buffer.device != like.device or buffer.dtype != like.dtype or buffer.numel() < numel:
            buffer = store[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buffer[:numel]

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._follow_devices()

        # 1. Gather the gradient of every trainable entry (plus the L1 subgradient).
        grads: list[torch.Tensor] = []
        holders: list[torch.Tensor] = []  # the tensors whose .grad those are, for clipping
        for group in self.param_groups:
            for p in group["params"]:
                target = self._targets.get(id(p))
                if target is None:
                    continue
                idx = self._indices.get(id(p))
                if p.grad is None:
                    target.grad = None
                    continue
                if idx is None:
                    grad, holder = p.grad, p
                else:
                    grad = torch.index_select(p.grad.reshape(-1), 0, idx,
                                              out=self._buffer(self._grad_buffers, id(p), p.grad, idx.numel()))
                    target.grad, holder = grad, target
                ref = self._l1_reference.get(id(p))
                if ref is not None:
                    # One scratch for all parameters: the L1 term never needs two at once.
                    moved = self._buffer(self._scratch, 0, grad, ref.numel())
                    torch.sub(target.detach().reshape(-1), ref, out=moved)
                    grad.reshape(-1).add_(torch.sign(moved, out=moved), alpha=self.l1_scale)
                grads.append(grad)
                holders.append(holder)

        # 2. Clip the global norm of exactly those gradients (as clip_grad_norm_ does:
        # coefficient max_norm / (norm + 1e-6), at most 1, one foreach multiply). The pre-clip
        # norm is kept for the training curves, as a tensor: reading it here would sync a GPU.
        self.grad_norm = torch.nn.utils.get_total_norm(grads) if grads else None
        if self.max_grad_norm and self.grad_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(holders, self.max_grad_norm, self.grad_norm)

        # 3. torch's AdamW on the targets (the schedule's lr copied in), then scatter back.
        for outer, inner in zip((self.param_groups[i] for i in self._outer_positions), self._inner.param_groups):
            for key in ("lr", "betas", "eps", "weight_decay"):
                inner[key] = outer[key]
        self._inner.step()
        for p_id, target in self._targets.items():
            # Expose the update's state under the model's parameter, as any optimizer does.
            if target in self._inner.state:
                self.state[self._params_by_id[p_id]] = self._inner.state[target]
        for p_id, idx in self._indices.items():
            target = self._targets.get(p_id)
            if target is not None and target.grad is not None:
                self._params_by_id[p_id].data.view(-1).index_copy_(0, idx, target)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        self._inner.zero_grad(set_to_none)

    # ------------------------------------------------------------------ resumable state
    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything a resumed run needs, as tensors (safetensors) and JSON: torch AdamW's
        state of each trained target (K-sized for indexed parameters), the groups' current
        rates, and the selection (checked on restore: a checkpoint of another mask is refused).
        The shadows themselves are not stored: they equal the parameters at their indices
        (scattered back after every step), so ``restore_checkpoint_state`` gathers them again."""
        tensors: dict[str, torch.Tensor] = {}
        ordered = self._ordered_params()
        for i, p in enumerate(ordered):
            target = self._targets.get(id(p))
            for name, value in (self._inner.state.get(target, {}) if target is not None else {}).items():
                tensors[f"state.{i}.{name}"] = value.detach().cpu().contiguous()
            idx = self._indices.get(id(p))
            if idx is not None:
                tensors[f"indices.{i}"] = idx.detach().cpu().contiguous()
        meta = {"groups": [{key: group[key] for key in ("lr", "initial_lr") if key in group}
                           for group in self.param_groups],
                "params": len(ordered)}
        return tensors, meta

    def restore_checkpoint_state(self, tensors: Mapping[str, torch.Tensor], meta: dict) -> None:
        """Put back what ``checkpoint_state`` saved, after the parameters themselves are restored."""
        ordered = self._ordered_params()
        if meta.get("params") != len(ordered) or not self.same_selection(tensors):
            raise ValueError("the checkpoint's optimizer has other parameters or another selection")
        for group, saved in zip(self.param_groups, meta["groups"], strict=True):
            group.update(saved)
        for i, p in enumerate(ordered):
            target = self._targets.get(id(p))
            if target is None:
                continue
            idx = self._indices.get(id(p))
            if idx is not None:
                with torch.no_grad():
                    target.copy_(p.detach().reshape(-1).index_select(0, idx))
            prefix = f"state.{i}."
            state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
            if state:
                # torch keeps AdamW's step counter on the CPU unless fused (then beside the parameter).
                fused = bool(self._inner.defaults.get("fused"))
                self._inner.state[target] = {
                    name: value.to(target.device if name != "step" or fused else torch.device("cpu"))
                    for name, value in state.items()}
                self.state[p] = self._inner.state[target]

    def same_selection(self, tensors: Mapping[str, torch.Tensor]) -> bool:
        """Whether ``tensors`` (from ``checkpoint_state``) hold this optimizer's selection."""
        ordered = self._ordered_params()
        for i, p in enumerate(ordered):
            idx, saved = self._indices.get(id(p)), tensors.get(f"indices.{i}")
            if (idx is None) != (saved is None) or (idx is not None and not torch.equal(idx.cpu(), saved)):
                return False
        return True

    def _ordered_params(self) -> list[torch.nn.Parameter]:
        return [p for group in self.param_groups for p in group["params"]]
