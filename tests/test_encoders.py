"""Every registered encoder: forward, backward, shapes, no NaN, state_dict round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfuse.batching import sparse_to_device
from mmfuse.data import SparseRows
from mmfuse.plugin_api import Autoencoder, SparseBatch, accepted_inputs
from mmfuse.plugins import get_plugins

SHAPES = {"dense": [(12,), (3, 16, 16)], "conv": [(3, 16, 16), (1, 21, 17)]}


def cases():
    for name in get_plugins().encoders.names():
        for shape in SHAPES.get(name, [(12,)]):
            yield pytest.param(name, shape, id=f"{name}-{'x'.join(map(str, shape))}")


def sparse_rows(b: int, width: int) -> SparseBatch:
    """A sparse batch: row k stores k + 1 cells."""
    crow = np.array([0, *np.cumsum(np.arange(1, b + 1))])
    cols = np.concatenate([np.random.default_rng(k).permutation(width)[: k + 1]
                           for k in range(b)])
    values = np.random.default_rng(b).random(len(cols)).astype(np.float32)
    return sparse_to_device(SparseRows(crow, cols, values, width), torch.device("cpu"))


@pytest.mark.parametrize(("name", "shape"), list(cases()))
def test_encoder_contract(name, shape):
    torch.manual_seed(0)
    factory = get_plugins().encoders.get(name)
    ae = factory(shape, 5, decode=True)
    assert isinstance(ae, Autoencoder) and isinstance(ae, torch.nn.Module)
    if "dense" in accepted_inputs(factory):
        x = torch.rand(4, *shape)
        h = ae.encode(x)
        assert h.shape == (4, 5)
        y = ae.decode(h)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()
        loss = torch.nn.functional.mse_loss(y, x)
    else:  # sparse rows in, decoded at the stored cells
        x = sparse_rows(4, shape[0])
        h = ae.encode(x)
        assert h.shape == (4, 5)
        which = torch.repeat_interleave(torch.arange(4), x.counts())
        y = ae.decode_at(h, which, x.col)
        assert y.shape == x.values.shape and torch.isfinite(y).all()
        assert torch.allclose(y, ae.decode(h)[which, x.col], atol=1e-5)
        loss = torch.nn.functional.mse_loss(y, x.values)
    loss.backward()
    grads = [p.grad for p in ae.parameters()]
    assert all(g is not None for g in grads)
    assert all(torch.isfinite(g.coalesce().values() if g.is_sparse else g).all() for g in grads)
    clone = factory(shape, 5, decode=True)
    clone.load_state_dict(ae.state_dict())
    assert torch.equal(clone.encode(x), ae.encode(x))


def test_sparse_encoder_reads_only_stored_cells_and_scales_by_their_count():
    """A row's code is the sum of its stored cells' weight vectors times their values,
    divided by the square root of its stored cells (so it does not grow with the row)."""
    torch.manual_seed(0)
    ae = get_plugins().encoders.get("sparse")((50,), 4, decode=False)
    x = sparse_rows(3, 50)
    dense_equivalent = x.to_dense()
    with torch.no_grad():
        code = ae.encode(x)
        counts = x.counts().float()
        expected = (dense_equivalent @ ae.first.weight) / counts.sqrt()[:, None] + ae.first_bias
    assert torch.allclose(code, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["dense", "conv"])
def test_encoder_without_decoder_has_fewer_parameters_and_refuses_to_decode(name):
    factory = get_plugins().encoders.get(name)
    shape = (3, 16, 16)
    full, enc_only = factory(shape, 5, decode=True), factory(shape, 5, decode=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(enc_only) < count(full)
    with pytest.raises(RuntimeError, match="without a decoder"):
        enc_only.decode(torch.zeros(1, 5))


def test_conv_matches_the_paper_encoder_at_224():
    """The paper's MMEDA conv encoder: 3×224×224 → Conv16 → Conv4 → 12544 → 512 → 50."""
    ae = get_plugins().encoders.get("conv")((3, 224, 224), 50, decode=False)
    linears = [m for m in ae.encoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12544, 512), (512, 50)]


@pytest.mark.parametrize("shape", [(3, 8, 8), (16, 16), (3, 15, 40)])
def test_conv_rejects_small_or_non_image_shapes(shape):
    with pytest.raises(ValueError, match="H, W ≥ 16"):
        get_plugins().encoders.get("conv")(shape, 5)


def test_sparse_product_and_its_gradient_match_the_dense_ones_on_both_kernels():
    """``X @ W`` and ``Xᵀ @ G``: scipy's kernel (CPU) and torch's (other devices) agree with
    the dense product, rows scaled or not."""
    from mmfuse import sparse_mm

    x = sparse_rows(6, 40)
    scale = torch.rand(6)
    table = torch.randn(40, 3, requires_grad=True)
    dense = x.to_dense() * scale[:, None]
    expected = dense @ table
    grad = torch.randn(6, 3)
    (expected_grad,) = torch.autograd.grad(expected, table, grad)
    out = x.mm(table, scale)
    (got_grad,) = torch.autograd.grad(out, table, grad)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(got_grad, expected_grad, atol=1e-5)
    weights = x.values * scale.repeat_interleave(x.counts())
    as_torch = sparse_mm.forward(x, weights.double(), table.detach())  # dtype → torch path
    assert torch.allclose(as_torch, expected, atol=1e-5)
    assert torch.allclose(sparse_mm.backward(x, weights.double(), grad, 40),
                          expected_grad, atol=1e-5)


@pytest.mark.parametrize(("b", "width"), [(4, 200), (6, 40)])
def test_sparse_encoder_gradients_are_the_touched_rows_where_few_and_match_dense(b, width):
    """With ``sparse_grad: all``, a step touching few rows of the sparse encoder's tables gives
    them row-sparse gradients of those rows (the optimiser then moves those rows alone); a
    step with cells for most rows gives every row; either way the gradient is the
    product's.  By default only the output table's gradient is sparse; ``none``: neither."""
    from mmfuse.sparse_mm import few_rows

    torch.manual_seed(0)
    ae = get_plugins().encoders.get("sparse")((width,), 3, decode=True, sparse_grad="all")
    x = sparse_rows(b, width)
    which, at = x.cell_rows(), x.col
    h = ae.encode(x)
    loss = ae.decode_at(h, which, at).square().sum()
    loss.backward()
    few = few_rows(len(x.col), width)
    assert few == (width == 200)  # 10 cells of 200 rows; 21 of 40
    grads = {"first": ae.first.weight.grad, "out": ae.out.weight.grad}
    assert all(g.is_sparse for g in grads.values())  # the layout DDP expects, always
    # the same loss through dense tables
    first, out = ae.first.weight.detach().requires_grad_(), ae.out.weight.detach().requires_grad_()
    dense = x.to_dense() * x.totals.clamp_min(1).float().rsqrt()[:, None]
    h2 = ae.rest(dense @ first + ae.first_bias)
    w = out[at]
    expected = ((ae._trunk(h2)[which] * w[:, :-1]).sum(-1) + w[:, -1]).square().sum()
    expected.backward()
    assert torch.allclose(grads["first"].to_dense(), first.grad, atol=1e-5)
    assert torch.allclose(grads["out"].to_dense(), out.grad, atol=1e-5)
    touched = torch.zeros(width, dtype=torch.bool)
    touched[x.col] = True
    rows = touched.nonzero().squeeze(1) if few else torch.arange(width)
    assert torch.equal(grads["first"]._indices()[0], rows)
    for mode, sparse_out in (("output", True), ("none", False)):  # "output": the default
        other = get_plugins().encoders.get("sparse")(
            (width,), 3, decode=True, **({} if mode == "output" else {"sparse_grad": mode}))
        other.decode_at(other.encode(x), which, at).sum().backward()
        assert not other.first.weight.grad.is_sparse
        assert other.out.weight.grad.is_sparse == sparse_out


def test_conv_channels_last_is_a_layout_not_another_model():
    """The default NHWC layout computes what NCHW does (to float rounding), and the weights of
    either load into the other."""
    from mmfuse_encoders.conv import build_conv

    torch.manual_seed(0)
    nhwc = build_conv((3, 32, 32), 8)
    nchw = build_conv((3, 32, 32), 8, channels_last=False)
    nchw.load_state_dict(nhwc.state_dict())
    assert nhwc.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert nchw.encoder[0].weight.is_contiguous()
    x = torch.rand(5, 3, 32, 32)
    torch.testing.assert_close(nhwc.encode(x), nchw.encode(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(nhwc.decode(nhwc.encode(x)), nchw.decode(nchw.encode(x)),
                               rtol=1e-4, atol=1e-5)


def test_conv_pools_before_its_relu_and_computes_what_relu_then_pool_does():
    """The encoder max-pools before each ReLU (cheaper: the ReLU sees a quarter of the cells);
    the paper's order, ReLU then max-pool, gives the same values and the same gradients, to
    the bit, on inputs with ties and all-negative windows."""
    from mmfuse_encoders.conv import build_conv
    from torch import nn

    torch.manual_seed(0)
    ae = build_conv((3, 17, 16), 6, channels=(5, 3), hidden=7, channels_last=False)
    kinds = [type(m) for m in ae.encoder[:6]]
    assert kinds == [nn.Conv2d, nn.MaxPool2d, nn.ReLU] * 2
    paper = nn.Sequential(*[ae.encoder[i] for i in (0, 2, 1, 3, 5, 4, *range(6, 10))])
    x = torch.randn(4, 3, 17, 16)
    x[:, :, :4, :4] = 0.5  # ties within pooling windows
    x[:, :, 8:, 8:] = -3.0  # windows whose every cell the ReLU zeroes
    grads = []
    for net in (ae.encoder, paper):
        ae.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = net(xi)
        out.square().sum().backward()
        grads.append((out.detach(), xi.grad, *(p.grad.clone() for p in ae.parameters()
                                                if p.grad is not None)))
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
