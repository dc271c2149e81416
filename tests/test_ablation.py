"""The view ablation: each view of a fused entity left out of its embedding, probed again
beside the raw data of the other views."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from mmfuse.api import train
from mmfuse.cli import app
from mmfuse.cli.render import evaluation_table
from mmfuse.evaluate import Ablation, ablation_wanted, evaluate_embeddings
from mmfuse.spec import load_spec


def write_two_views(root: Path, n: int = 300, seed: int = 0) -> Path:
    """Entity ``item`` in two feature views: ``signal`` (a noisy image of a 2-d latent
    factor whose first coordinate's sign is ``label``) and ``noise`` (unrelated numbers)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    latent = rng.standard_normal((n, 2))
    np.save(root / "signal.npy", (latent @ rng.standard_normal((2, 10))
                                  + 0.1 * rng.standard_normal((n, 10))).astype(np.float32))
    np.save(root / "noise.npy", rng.standard_normal((n, 10)).astype(np.float32))
    np.save(root / "label.npy", (latent[:, 0] > 0).astype(np.int64))
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: ablation
        entities:
          item: {{size: {n}}}
        views:
          signal: {{rows: item, source: {{reader: npy, path: signal.npy}}}}
          noise: {{rows: item, source: {{reader: npy, path: noise.npy}}}}
        model: {{dim: 8}}
        train: {{epochs: 8, batch_size: 32, device: cpu, threads: 1}}
        evaluate:
          split: {{test_fraction: 0.3, seed: 0, repeats: 2}}
          targets:
            label: {{entity: item, path: label.npy, task: classification, probe: logistic}}
        """))
    return spec


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    spec = write_two_views(tmp_path_factory.mktemp("two") / "d")
    return spec, train(load_spec(spec), spec.parent / "run")


def test_leaving_out_the_view_with_the_signal_costs_more_than_the_noise(trained):
    _, result = trained
    label = result.evaluation["targets"]["label"]
    ablation = label["ablation"]
    assert set(ablation) == {"signal", "noise"}
    without_signal, without_noise = ablation["signal"], ablation["noise"]
    assert without_signal["absence_views"] == ["noise"]
    assert without_noise["absence_views"] == ["signal"]
    # the embedding carries the signal view's label; without it next to nothing is left
    assert label["metrics"]["accuracy"] > 0.8
    assert without_noise["metrics"]["accuracy"] > without_signal["metrics"]["accuracy"] + 0.2
    assert without_signal["metrics"]["accuracy"] < 0.7
    # the absence baselines are the other view's raw data, probed on the same splits
    assert without_signal["absence_baseline"] == label["baselines"]["noise"]
    assert without_noise["absence_baseline"] == label["baselines"]["signal"]
    assert without_noise["absence_baseline"]["accuracy"] > 0.9
    # two splits: a spread beside every mean
    for entry in ablation.values():
        assert set(entry["metrics_std"]) == set(entry["metrics"])
        assert set(entry["absence_baseline_std"]) == set(entry["absence_baseline"])


def test_the_ablation_is_the_embedding_without_the_view(trained):
    spec_path, result = trained
    spec = load_spec(spec_path)
    z = result.run.read_embeddings("item")[0]
    ablation = Ablation.of(result.built)
    assert ablation.views == {"item": ["signal", "noise"]}
    # nothing left out: the run's own embeddings
    np.testing.assert_allclose(ablation.embed("item", frozenset()), z, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ablation.without("item", "noise"), z)
    by_hand = evaluate_embeddings(spec, {"item": ablation.without("item", "noise")})
    label = result.evaluation["targets"]["label"]
    assert label["ablation"]["noise"]["metrics"] == pytest.approx(
        by_hand["targets"]["label"]["metrics"])


def test_ablation_off_and_without_a_model(trained):
    spec_path, result = trained
    z = {"item": result.run.read_embeddings("item")[0]}
    assert ablation_wanted(load_spec(spec_path))
    off = load_spec(spec_path, ["evaluate.ablation=false"])
    assert not ablation_wanted(off)
    ablation = Ablation.of(result.built)
    assert "ablation" not in evaluate_embeddings(off, z, ablation=ablation)["targets"]["label"]
    assert "ablation" not in evaluate_embeddings(load_spec(spec_path), z)["targets"]["label"]
    # baselines: none — the ablation still runs, without the absence baselines
    none = load_spec(spec_path, ["evaluate.baselines=none"])
    entry = evaluate_embeddings(none, z, ablation=ablation)["targets"]["label"]["ablation"]
    assert set(entry["signal"]) == {"metrics", "metrics_std", "absence_views"}


def test_evaluate_command_reloads_the_model_for_the_ablation(trained):
    _, result = trained
    run = result.run
    before = result.evaluation["targets"]["label"]["ablation"]
    run.evaluation_file.unlink()
    out = CliRunner().invoke(app, ["evaluate", str(run.root)])
    assert out.exit_code == 0, out.output
    after = json.loads(run.evaluation_file.read_text())["targets"]["label"]["ablation"]
    for view in ("signal", "noise"):
        assert after[view]["metrics"] == pytest.approx(before[view]["metrics"], abs=1e-6)
    assert "label: view ablation" in out.output  # the table (80 columns here: cells wrap)


def test_ablation_table(trained):
    _, result = trained
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(evaluation_table(result.evaluation))
    text = out.getvalue()
    for words in ("label: view ablation, probe logistic", "learnt (all views)",
                  "without signal", "without noise", "raw noise", "raw signal",
                  "mean ± std over 2 splits"):
        assert words in text, words
    acc = result.evaluation["targets"]["label"]["ablation"]["signal"]["metrics"]["accuracy"]
    assert f"{acc:.3f} ±" in text
