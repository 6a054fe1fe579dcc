"""SparseAdamW (pipeline/core/sparse_adamw.py) against torch.optim.AdamW."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.sparse_adamw import SparseAdamW

SHAPES = [(6, 5), (7,), (3, 2, 4)]
HYPER = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)


def make_params(seed: int, shapes=SHAPES) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]


def clone_params(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def random_grads(params, generator: torch.Generator, scale: float = 1.0) -> list[torch.Tensor]:
    return [scale * torch.randn(p.shape, generator=generator) for p in params]


def set_grads(params, grads) -> None:
    for p, g in zip(params, grads):
        p.grad = g.clone()


def random_indices(numel: int, generator: torch.Generator, share: float) -> torch.Tensor:
    return torch.nonzero(torch.rand(numel, generator=generator) < share, as_tuple=True)[0]


# --------------------------------------------------------------------------- dense = AdamW
@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    lr=st.sampled_from([1e-3, 5e-2]),
    weight_decay=st.sampled_from([0.0, 0.01, 0.3]),
    steps=st.integers(1, 8),
)
def test_dense_matches_torch_adamw(seed, lr, weight_decay, steps):
    ours, reference = make_params(seed), make_params(seed)
    hyper = dict(lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    opt = SparseAdamW(ours, **hyper)
    ref = torch.optim.AdamW(reference, **hyper)
    generator = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        grads = random_grads(ours, generator)
        set_grads(ours, grads)
        set_grads(reference, grads)
        opt.step()
        ref.step()
        for p, q in zip(ours, reference):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-6)


def test_dense_matches_torch_adamw_with_lr_changes():
    """The Trainer's scheduler rewrites group["lr"] between steps; we must follow it."""
    ours, reference = make_params(0), make_params(0)
    opt, ref = SparseAdamW(ours, **HYPER), torch.optim.AdamW(reference, **HYPER)
    opt_sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.1, total_iters=5)
    ref_sched = torch.optim.lr_scheduler.LinearLR(ref, 1.0, 0.1, total_iters=5)
    generator = torch.Generator().manual_seed(1)
    for _ in range(6):
        grads = random_grads(ours, generator)
        set_grads(ours, grads)
        set_grads(reference, grads)
        opt.step(), ref.step(), opt_sched.step(), ref_sched.step()
    for p, q in zip(ours, reference):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-6)


def test_parameters_without_grad_are_skipped():
    params = make_params(0)
    before = [p.detach().clone() for p in params]
    opt = SparseAdamW(params, **HYPER)
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    assert not torch.equal(params[0].detach(), before[0])
    for p, b in zip(params[1:], before[1:]):
        assert torch.equal(p.detach(), b)  # not even weight decay touches them


# --------------------------------------------------------------------------- sparse
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), share=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_unselected_entries_stay_bit_exact(seed, share):
    params = make_params(seed)
    theta0 = [p.detach().clone() for p in params]
    generator = torch.Generator().manual_seed(seed + 1)
    indices = {p: random_indices(p.numel(), generator, share) for p in params}
    opt = SparseAdamW(params, **HYPER, trainable_indices=indices)
    for _ in range(25):
        set_grads(params, random_grads(params, generator, scale=10.0))  # nonzero everywhere
        opt.step()
    for p, before in zip(params, theta0):
        idx = indices[p]
        outside = torch.ones(p.numel(), dtype=torch.bool)
        outside[idx] = False
        flat, flat0 = p.detach().reshape(-1), before.reshape(-1)
        assert torch.equal(flat[outside], flat0[outside])  # bit-exact: equal, not close
        if idx.numel():
            assert bool((flat[idx] != flat0[idx]).all())
        # Optimizer state is K-sized.
        if idx.numel():
            assert opt.state[p]["exp_avg"].numel() == idx.numel()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), steps=st.integers(1, 8))
def test_selected_entries_match_dense_adamw_on_those_entries(seed, steps):
    params = make_params(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    indices = {p: random_indices(p.numel(), generator, 0.4) for p in params}
    # A dense parameter rides along with the sparse ones.
    dense = torch.nn.Parameter(torch.randn(4, generator=generator))
    gathered = [torch.nn.Parameter(p.detach().reshape(-1)[indices[p]].clone()) for p in params]
    dense_ref = torch.nn.Parameter(dense.detach().clone())
    opt = SparseAdamW([*params, dense], **HYPER, trainable_indices=indices)
    ref = torch.optim.AdamW([*gathered, dense_ref], **HYPER)
    for _ in range(steps):
        grads = random_grads([*params, dense], generator)
        set_grads([*params, dense], grads)
        for q, p, g in zip(gathered, params, grads):
            q.grad = g.reshape(-1)[indices[p]].clone()
        dense_ref.grad = grads[-1].clone()
        opt.step()
        ref.step()
    for p, q in zip(params, gathered):
        torch.testing.assert_close(p.detach().reshape(-1)[indices[p]], q.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(dense.detach(), dense_ref.detach(), rtol=0, atol=1e-6)


def test_empty_indices_leave_parameter_untouched():
    params = make_params(0)
    before = [p.detach().clone() for p in params]
    empty = torch.empty(0, dtype=torch.int64)
    opt = SparseAdamW(params, **HYPER, trainable_indices={params[0]: empty, params[1]: torch.tensor([2, 4])},
                      max_grad_norm=1.0, l1_lambda=1.0, l1_reference={p: b for p, b in zip(params, before)})
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        set_grads(params, random_grads(params, generator))
        opt.step()
    assert torch.equal(params[0].detach(), before[0])
    assert params[0] not in opt.state or not opt.state[params[0]]
    changed = torch.nonzero(params[1].detach() != before[1], as_tuple=True)[0]
    assert changed.tolist() == [2, 4]
    assert not torch.equal(params[2].detach(), before[2])  # no index set: dense


# --------------------------------------------------------------------------- clipping
def test_max_grad_norm_clips_the_gathered_gradients():
    params = make_params(0, shapes=[(10,), (3, 3)])
    indices = {params[0]: torch.tensor([1, 3, 8]), params[1]: torch.tensor([0, 4])}
    grads = [torch.full((10,), 1e6), torch.full((3, 3), 1e6)]  # huge outside the selection
    inside = torch.tensor([3.0, 4.0, 12.0, 0.0, 0.0])  # norm 13 inside
    grads[0][indices[params[0]]] = inside[:3]
    grads[1].view(-1)[indices[params[1]]] = inside[3:]
    beta1 = HYPER["betas"][0]

    def first_moments(max_grad_norm):
        ps = clone_params(params)
        opt = SparseAdamW(ps, **HYPER, max_grad_norm=max_grad_norm,
                          trainable_indices={ps[i]: indices[params[i]] for i in range(2)})
        set_grads(ps, grads)
        opt.step()
        return torch.cat([opt.state[p]["exp_avg"] for p in ps]) / (1 - beta1)

    # Clipped to norm 1 (the norm of the trainable entries, 13, not of the whole gradient).
    clipped = first_moments(1.0)
    torch.testing.assert_close(clipped, inside / 13.0, rtol=1e-5, atol=1e-7)
    assert float(torch.linalg.vector_norm(clipped)) == pytest.approx(1.0, rel=1e-5)
    # Below the limit: untouched (the 1e6 entries outside the selection do not count).
    torch.testing.assert_close(first_moments(20.0), inside, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(first_moments(None), inside, rtol=1e-6, atol=1e-6)


def test_max_grad_norm_dense_matches_torch_clipping():
    ours, reference = make_params(0), make_params(0)
    opt = SparseAdamW(ours, **HYPER, max_grad_norm=0.5)
    ref = torch.optim.AdamW(reference, **HYPER)
    generator = torch.Generator().manual_seed(2)
    for _ in range(4):
        grads = random_grads(ours, generator, scale=3.0)
        set_grads(ours, grads)
        set_grads(reference, grads)
        torch.nn.utils.clip_grad_norm_(reference, 0.5)
        opt.step()
        ref.step()
    for p, q in zip(ours, reference):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- L1 towards θ0
@pytest.mark.parametrize("sparse", [False, True])
def test_l1_pulls_towards_reference(sparse):
    lr = 1e-3
    reference = torch.zeros(8)
    start = torch.tensor([0.5, -0.5, 0.3, -0.3, 1.0, -1.0, 0.2, -0.2])
    p = torch.nn.Parameter(start.clone())
    indices = {p: torch.tensor([0, 1, 5, 6])} if sparse else None
    opt = SparseAdamW([p], lr=lr, weight_decay=0.0, trainable_indices=indices,
                      l1_lambda=0.8, l1_reference={p: reference}, l1_normaliser=8)
    p.grad = torch.zeros(8)  # the loss says nothing: only the L1 term acts
    opt.step()
    moved = p.detach() - start
    trained = indices[p] if sparse else torch.arange(8)
    # Adam normalises the (constant-sign) subgradient: each entry moves ~lr towards θ0.
    torch.testing.assert_close(moved[trained], -torch.sign(start[trained]) * lr, rtol=1e-3, atol=0)
    others = torch.ones(8, dtype=torch.bool)
    others[trained] = False
    assert torch.equal(p.detach()[others], start[others])
    # Distance to θ0 shrinks entry by entry.
    assert bool((p.detach()[trained].abs() < start[trained].abs()).all())


def test_l1_subgradient_scale_is_lambda_over_n():
    p = torch.nn.Parameter(torch.tensor([2.0, -2.0, 0.0]))
    opt = SparseAdamW([p], lr=1e-3, betas=(0.5, 0.999), l1_lambda=3.0,
                      l1_reference={p: torch.zeros(3)}, l1_normaliser=6)
    p.grad = torch.tensor([0.1, 0.1, 0.1])
    opt.step()
    # gradient = loss grad + λ/N · sign(θ − θ0) = 0.1 + 0.5 · sign
    torch.testing.assert_close(opt.state[p]["exp_avg"] / 0.5, torch.tensor([0.6, -0.4, 0.1]))


def test_l1_zero_lambda_keeps_plain_adamw():
    ours, reference = make_params(0), make_params(0)
    opt = SparseAdamW(ours, **HYPER, l1_lambda=0.0, l1_reference={p: torch.zeros_like(p) for p in ours})
    ref = torch.optim.AdamW(reference, **HYPER)
    grads = random_grads(ours, torch.Generator().manual_seed(0))
    set_grads(ours, grads)
    set_grads(reference, grads)
    opt.step()
    ref.step()
    for p, q in zip(ours, reference):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-6)


def test_param_groups_give_the_head_its_own_rate():
    """A head in its own group moves at its own rate; masked entries still never move."""
    from pipeline.core.training import param_groups

    torch.manual_seed(0)
    body = torch.nn.Parameter(torch.randn(10))
    head = torch.nn.Parameter(torch.randn(10))
    params = {"body": body, "head": head}
    groups = param_groups(params, ["body", "head"], ["head"], 1e-3, 1e-1)
    assert [g["lr"] for g in groups] == [1e-3, 1e-1]
    before_body, before_head = body.detach().clone(), head.detach().clone()
    optimizer = SparseAdamW(groups, lr=1e-3, trainable_indices={body: torch.tensor([1, 4])})
    (body.sum() + head.sum()).backward()
    optimizer.step()
    body_step = (body.detach() - before_body).abs()
    head_step = (head.detach() - before_head).abs()
    assert torch.allclose(head_step, torch.full_like(head_step, 1e-1), rtol=1e-3)  # Adam's first step = lr
    assert torch.allclose(body_step[[1, 4]], torch.full((2,), 1e-3), rtol=1e-3)
    assert int((body_step > 0).sum()) == 2
    assert param_groups(params, ["body", "head"], ["head"], 1e-3, None) == [{"params": [body, head], "lr": 1e-3}]


# --------------------------------------------------------------------------- devices and buffers
def _sparse_setup(seed: int = 0):
    params = make_params(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    indices = {p: random_indices(p.numel(), generator, 0.3) for p in params}
    reference = {p: p.detach().clone() for p in params}
    opt = SparseAdamW(params, **HYPER, trainable_indices=indices, max_grad_norm=1.0, l1_lambda=0.5,
                      l1_reference=reference)
    return params, indices, reference, opt, generator


def test_gradient_buffers_are_reused_between_steps():
    params, _, _, opt, generator = _sparse_setup()
    pointers = []
    for _ in range(3):
        set_grads(params, random_grads(params, generator))
        opt.step()
        pointers.append([opt._targets[id(p)].grad.data_ptr() for p in params])
        opt.zero_grad()
    assert pointers[0] == pointers[1] == pointers[2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_model_moved_after_the_optimizer_was_built():
    """What run_trainer does on a GPU: the optimizer is built on CPU parameters, then the
    Trainer moves the model; unselected entries must stay bit-exactly θ0 on the device."""
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    indices = {p: random_indices(p.numel(), generator, 0.2) for p in model.parameters()}
    opt = SparseAdamW(list(model.parameters()), **HYPER, trainable_indices=indices, max_grad_norm=1.0,
                      l1_lambda=0.5, l1_reference={p: p.detach().clone() for p in model.parameters()})
    model.to("cuda")
    for _ in range(3):
        model(torch.randn(8, 16, device="cuda")).square().sum().backward()
        opt.step()
        opt.zero_grad()
    for (name, p), idx in zip(model.named_parameters(), indices.values()):
        flat, start = p.detach().cpu().reshape(-1), theta0[name].reshape(-1)
        keep = torch.ones_like(flat, dtype=torch.bool)
        keep[idx] = False
        assert torch.equal(flat[keep], start[keep])
        assert not torch.equal(flat[idx], start[idx])


def test_the_schedule_reaches_the_update_after_the_state_dict_is_reloaded():
    # accelerate's prepare reloads the optimizer's state dict, which replaces every
    # param_groups dict; the learning rate the scheduler then writes must still be the one used.
    dense = torch.nn.Parameter(torch.ones(4))
    indexed = torch.nn.Parameter(torch.ones(6))
    optimizer = SparseAdamW([{"params": [dense]}, {"params": [indexed], "lr": 1e-2}], lr=1e-2,
                            trainable_indices={indexed: torch.tensor([1, 4])})
    optimizer.load_state_dict(optimizer.state_dict())
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    dense.grad, indexed.grad = torch.ones(4), torch.ones(6)
    optimizer.step()
    assert torch.equal(dense.detach(), torch.ones(4)) and torch.equal(indexed.detach(), torch.ones(6))
    for group in optimizer.param_groups:
        group["lr"] = 1e-2
    optimizer.step()
    assert not torch.equal(dense.detach(), torch.ones(4))
    assert indexed.detach()[[1, 4]].ne(1).all() and indexed.detach()[[0, 2, 3, 5]].eq(1).all()
