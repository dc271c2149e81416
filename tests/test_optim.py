"""Row optimisers (mmfuse.optim) and the row-sparse gradients that feed them."""

from __future__ import annotations

import copy

import pytest
import torch

from mmfuse.optim import RowAdam, RowSGD
from mmfuse.sparse_mm import gather_rows


def _sparse(rows: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    return torch.sparse_coo_tensor(rows[None], values, (n, values.shape[1]),
                                   check_invariants=True)


@pytest.mark.parametrize("decoupled", [False, True])
def test_row_adam_is_lazy_adam_on_sparse_rows(decoupled):
    """Each step moves only the rows its gradient holds, by Adam's rule with the table's
    step count; duplicates in the gradient are summed."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(20, 3))
    ref, m, v = p.detach().clone(), torch.zeros(20, 3), torch.zeros(20, 3)
    lr, wd = 0.01, 0.1
    opt = RowAdam([p], lr=lr, weight_decay=wd, decoupled=decoupled)
    for t in range(1, 25):
        rows = torch.randint(0, 20, (9 if t % 2 else 3,))  # duplicates, unsorted
        g = torch.randn(len(rows), 3)
        p.grad = _sparse(rows, g, 20)
        before = p.detach().clone()
        opt.step()
        dense = torch.zeros(20, 3).index_add_(0, rows, g)
        idx = rows.unique()
        gi = dense[idx]
        if decoupled:
            ref[idx] *= 1 - lr * wd
        else:
            gi = gi + wd * ref[idx]
        m[idx] = 0.9 * m[idx] + 0.1 * gi
        v[idx] = 0.999 * v[idx] + 0.001 * gi * gi
        ref[idx] -= lr * (m[idx] / (1 - 0.9 ** t)) / ((v[idx] / (1 - 0.999 ** t)).sqrt() + 1e-8)
        untouched = torch.ones(20, dtype=torch.bool)
        untouched[idx] = False
        assert torch.equal(p.detach()[untouched], before[untouched])
    assert torch.allclose(p.detach(), ref, atol=1e-6)


def test_row_adam_on_gradients_of_every_row_is_torchs_fused_adam():
    """Dense gradients, and sparse ones holding every row, get Adam's step over the table."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(30, 4))
    b = torch.nn.Parameter(a.detach().clone())
    ours, theirs = RowAdam([a], lr=0.01), torch.optim.Adam([b], lr=0.01, fused=True)
    for step in range(10):
        g = torch.randn(30, 4)
        a.grad = g.clone() if step % 2 else _sparse(torch.arange(30), g.clone(), 30)
        b.grad = g.clone()
        ours.step()
        theirs.step()
    assert torch.equal(a.detach(), b.detach())


def test_row_sgd_keeps_a_dense_momentum_buffer_and_matches_sgd_when_every_row_is_used():
    """torch's SGD keeps a sparse momentum buffer whose entries grow every step (9,509 for
    a 1,000-row table after 200 steps); the row form keeps one dense buffer."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(12, 2))
    b = torch.nn.Parameter(a.detach().clone())
    ours = RowSGD([a], lr=0.1, momentum=0.9, weight_decay=0.01)
    theirs = torch.optim.SGD([b], lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(15):
        g = torch.randn(12, 2)
        a.grad, b.grad = _sparse(torch.arange(12), g, 12), g.clone()
        ours.step()
        theirs.step()
    assert torch.allclose(a.detach(), b.detach(), atol=1e-6)
    buf = ours.state[a]["momentum_buffer"]
    assert not buf.is_sparse and buf.shape == a.shape
    before = a.detach().clone()
    a.grad = _sparse(torch.tensor([3]), torch.ones(1, 2), 12)
    ours.step()
    moved = (a.detach() != before).any(1)
    assert moved.tolist() == [i == 3 for i in range(12)]


def test_row_optimisers_resume_from_their_state_dict():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(8, 2))
    opt = RowAdam([a], lr=0.01)
    grads = [_sparse(torch.randint(0, 8, (3,)), torch.randn(3, 2), 8) for _ in range(6)]
    for g in grads[:3]:
        a.grad = g
        opt.step()
    b = torch.nn.Parameter(a.detach().clone())
    resumed = RowAdam([b], lr=0.01)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))  # as from a checkpoint file
    for g in grads[3:]:
        a.grad, b.grad = g, g
        opt.step()
        resumed.step()
    assert torch.equal(a.detach(), b.detach())


@pytest.mark.parametrize("n_index", [3, 40])  # few: the touched rows; many: every row
def test_gather_rows_gradient_is_the_dense_one(n_index):
    torch.manual_seed(0)
    table = torch.randn(30, 3, requires_grad=True)
    index = torch.randint(0, 30, (n_index,))
    grad = torch.randn(n_index, 3)
    (expected,) = torch.autograd.grad(table[index], table, grad)
    out = gather_rows(table, index)
    assert torch.equal(out, table[index])
    (got,) = torch.autograd.grad(out, table, grad)
    assert got.is_sparse
    rows = index.unique() if n_index == 3 else torch.arange(30)
    assert torch.equal(got._indices()[0], rows)
    assert torch.allclose(got.to_dense(), expected, atol=1e-6)


def test_a_table_switched_to_dense_gradients_trains_through_the_same_encoder():
    """A strategy may turn a table's sparse flag off (DDP over nccl): the sparse encoder then
    gives dense gradients, the same values."""
    from test_encoders import sparse_rows

    from mmfuse.plugins import get_plugins

    torch.manual_seed(0)
    ae = get_plugins().encoders.get("sparse")((200,), 3, decode=True, sparse_grad="all")
    x = sparse_rows(4, 200)
    grads = []
    for sparse in (True, False):
        ae.zero_grad(set_to_none=True)
        ae.first.sparse = ae.out.sparse = sparse
        ae.decode_at(ae.encode(x), x.cell_rows(), x.col).square().sum().backward()
        grads.append((ae.first.weight.grad, ae.out.weight.grad))
    assert all(g.is_sparse for g in grads[0]) and not any(g.is_sparse for g in grads[1])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a.to_dense(), b, atol=1e-6)
