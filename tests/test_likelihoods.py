"""Likelihoods with parameters: ``likelihood: {type, params}``, a module per view whose
parameters (gaussian noise scale, negative binomial dispersion) are learnt, checked against
the densities they claim and against planted data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from mmfuse_likelihoods.likelihoods import Gaussian, NegativeBinomial, Poisson
from scipy import stats

from mmfuse.api import train
from mmfuse.errors import SpecError
from mmfuse.predict import CellModel
from mmfuse.run import RunDir
from mmfuse.spec import load_spec

# --------------------------------------------------------------------------- the densities


def test_gaussian_with_fixed_noise_is_the_mean_squared_error():
    pred, y = torch.randn(50), torch.randn(50)
    assert float(Gaussian().loss(pred, y, None)) == pytest.approx(float(((pred - y) ** 2).mean()))
    learn = Gaussian(noise="learn")
    mse = float(((pred - y) ** 2).mean())
    assert float(learn.loss(pred, y, None).detach()) == pytest.approx(mse)
    with torch.no_grad():
        learn.log_scale.fill_(math.log(0.5))
    want = (((pred - y) / 0.5) ** 2 + 2 * math.log(0.5)).mean()  # 2 × NLL − log 2π
    assert float(learn.loss(pred, y, None).detach()) == pytest.approx(float(want), rel=1e-5)
    assert learn.learnt() == {"noise_scale": pytest.approx(0.5)}


def test_negative_binomial_is_scipys_density():
    rng = np.random.default_rng(0)
    y = rng.negative_binomial(2.0, 0.3, size=200).astype(np.float32)
    log_mu = rng.normal(1.0, 0.5, size=200).astype(np.float32)
    nb = NegativeBinomial(dispersion=2.0)
    mu = np.exp(log_mu.astype(np.float64))
    want = -stats.nbinom.logpmf(y, 2.0, 2.0 / (2.0 + mu)).mean()
    got = float(nb.loss(torch.from_numpy(log_mu), torch.from_numpy(y), None))
    assert got == pytest.approx(want, rel=1e-5)
    assert nb.learnt() == {}  # fixed, not learnt
    # many times less dispersed: the Poisson (up to its constant log y!)
    log_mu64, y64 = torch.from_numpy(log_mu).double(), torch.from_numpy(y).double()
    big = float(NegativeBinomial(dispersion=1e6).loss(log_mu64, y64, None))
    poisson = float(Poisson().loss(log_mu64, y64, None))
    assert big == pytest.approx(poisson + float(torch.lgamma(y64 + 1).mean()), rel=1e-4)


def test_a_mask_keeps_missing_cells_out():
    pred, y = torch.zeros(4), torch.tensor([1.0, 1.0, 100.0, 100.0])
    mask = torch.tensor([True, True, False, False])
    for lk in (Gaussian(noise="learn"), NegativeBinomial()):
        assert float(lk.loss(pred, y, mask).detach()) == pytest.approx(
            float(lk.loss(pred[:2], y[:2], None).detach()))


# --------------------------------------------------------------------------- spec


def write_counts(root: Path, likelihood: str, *, kind: str, epochs: int = 40,
                 lr: float = 0.05) -> Path:
    """A sparse users × items matrix from planted rank-3 factors: gaussian values with noise
    σ = 0.5, or negative binomial counts of dispersion 2; a fifth of the cells held out."""
    rng = np.random.default_rng(0)
    n_u, n_i = 300, 200
    u, v = rng.standard_normal((n_u, 3)) * 0.6, rng.standard_normal((n_i, 3)) * 0.6
    rows, cols = np.nonzero(rng.random((n_u, n_i)) < 0.2)
    eta = (u[rows] * v[cols]).sum(1)
    if kind == "gaussian":
        values = eta + 0.5 * rng.standard_normal(len(rows))
    else:
        mu = np.exp(eta + 1.0)
        values = rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(float)
    root.mkdir(parents=True, exist_ok=True)
    sp.save_npz(root / "m.npz", sp.csr_array((values.astype(np.float32), (rows, cols)),
                                             shape=(n_u, n_i)))
    spec = root / "spec.yaml"
    spec.write_text(
        "name: lk\nseed: 0\n"
        f"entities: {{user: {{size: {n_u}}}, item: {{size: {n_i}}}}}\n"
        "views:\n"
        "  m:\n"
        "    rows: user\n"
        "    cols: item\n"
        f"    likelihood: {likelihood}\n"
        "    source: {reader: npz, path: m.npz}\n"
        "model: {preset: cmf, dim: 3}\n"
        "evaluate: {holdout: {views: [m], fraction: 0.2, seed: 0}}\n"
        f"train: {{epochs: {epochs}, batch_size: 256, device: cpu, tol: 0.0, threads: 1, "
        f"optimizer: {{lr: {lr}}}}}\n")
    return spec


@pytest.mark.parametrize(("likelihood", "message"), [
    ("{type: gaussian, params: {nosie: learn}}", "unexpected keyword argument 'nosie'"),
    ("{type: gaussian, params: {noise: always}}", "params.noise 'always': fixed or learn"),
    ("{type: negbinomial, params: {dispersion: -1}}", "params.dispersion -1: learn, or a "
                                                      "positive number"),
    ("{type: negbinomal}", "unknown likelihood 'negbinomal'"),
])
def test_likelihood_params_are_checked_at_their_view(tmp_path, likelihood, message):
    spec = write_counts(tmp_path, likelihood, kind="gaussian")
    from mmfuse.build import build
    from mmfuse.plugins import get_plugins

    with pytest.raises(SpecError) as caught:
        build(load_spec(spec), get_plugins())
    [issue] = caught.value.issues
    assert issue.field.startswith("views.m.likelihood") and issue.line == 8
    assert message in issue.message


def test_a_bare_name_and_no_params_are_the_same_model(tmp_path):
    a = load_spec(write_counts(tmp_path / "a", "gaussian", kind="gaussian"))
    b = load_spec(write_counts(tmp_path / "b", "{type: gaussian}", kind="gaussian"))
    assert a.digest_model() == b.digest_model()  # runs before params existed still resume
    assert a.dump()["views"]["m"]["likelihood"] == "gaussian"
    c = load_spec(write_counts(tmp_path / "c", "{type: gaussian, params: {noise: learn}}",
                               kind="gaussian"))
    assert c.digest_model() != a.digest_model()


# --------------------------------------------------------------------------- planted data


def test_a_learnt_noise_scale_finds_the_planted_one(tmp_path):
    spec = write_counts(tmp_path, "{type: gaussian, params: {noise: learn}}", kind="gaussian")
    result = train(load_spec(spec), tmp_path / "run")
    sigma = result.built.model.likelihoods["m"].learnt()["noise_scale"]
    assert sigma == pytest.approx(0.5, rel=0.15)
    held = result.evaluation["holdout"]["m"]
    assert held["mmfuse"]["rmse"] < 0.85 * held["biases"]["rmse"]
    # saved with the model: the run's predictions use it (and it is in the checkpoint)
    state = RunDir(tmp_path / "run").load_checkpoint()["model"]
    assert float(state["likelihood_modules.m.log_scale"].exp()) == pytest.approx(sigma)


def test_a_learnt_dispersion_finds_the_planted_one(tmp_path):
    spec = write_counts(tmp_path, "negbinomial", kind="counts", epochs=30)
    result = train(load_spec(spec), tmp_path / "run")
    r = result.built.model.likelihoods["m"].learnt()["dispersion"]
    assert r == pytest.approx(2.0, rel=0.2)
    held = result.evaluation["holdout"]["m"]
    assert set(held["mmfuse"]) == {"rmse", "mae", "poisson_deviance"}  # what it declares
    model = CellModel.from_run(RunDir(tmp_path / "run"))
    rows, cols = np.array([0, 1]), np.array([0, 1])
    assert (model.cells("m", rows, cols) > 0).all()  # counts: rates through exp
