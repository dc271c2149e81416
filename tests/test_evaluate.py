"""Evaluation: multilabel metrics and floors by hand, raw-view baselines, splits, the table."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from mmfuse.cli.render import evaluation_table
from mmfuse.data import load_data
from mmfuse.errors import SpecError
from mmfuse.evaluate import evaluate_embeddings, split_indices
from mmfuse.plugins import get_plugins
from mmfuse.probes import floor_scores, multilabel_scores
from mmfuse.spec import SplitSpec, load_spec

# ----------------------------------------------------------------------- metrics by hand

Y_TEST = np.array([[1, 0, 0],
                   [0, 1, 0],
                   [1, 1, 0],
                   [0, 0, 0]])  # label 2 has no test positive: not scored
Y_PRED = np.array([[1, 0, 1],
                   [0, 0, 0],
                   [1, 1, 0],
                   [1, 0, 0]])
Y_SCORE = np.array([[0.9, 0.2, 0.5],
                    [0.1, 0.8, 0.5],
                    [0.4, 0.7, 0.5],
                    [0.6, 0.1, 0.5]])


def test_multilabel_metrics_match_hand_computed_values():
    m = multilabel_scores(Y_TEST, Y_PRED, Y_SCORE)
    # label 0: TP 2, FP 1, FN 0 → F1 4/5; label 1: TP 1, FP 0, FN 1 → F1 2/3
    assert m["macro_f1"] == pytest.approx((4 / 5 + 2 / 3) / 2)
    # pooled over the scored labels: TP 3, FP 1, FN 1 (label 2's false positive not counted)
    assert m["micro_f1"] == pytest.approx(6 / 8)
    # label 0 ranks +,-,+,- → AP (1 + 2/3) / 2; label 1 ranks +,+ first → AP 1
    assert m["auprc_macro"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    # pooled ranking 0.9+ 0.8+ 0.7+ 0.6- 0.4+ … → AP (1 + 1 + 1 + 4/5) / 4
    assert m["auprc_micro"] == pytest.approx(3.8 / 4)


def test_multilabel_floor_is_train_prevalence():
    y_train = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]])  # prevalence .75 .25 .25
    floor = floor_scores("multilabel", y_train, Y_TEST)
    # predicts label 0 (majority positive) for everyone, labels 1 and 2 for no one
    assert floor["macro_f1"] == pytest.approx((2 * 2 / (2 * 2 + 2) + 0) / 2)
    assert floor["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
    # constant scores per label: average precision = the label's test prevalence
    assert floor["auprc_macro"] == pytest.approx((0.5 + 0.5) / 2)


def test_no_scored_label_is_a_clear_error():
    with pytest.raises(ValueError, match="no label has a positive"):
        multilabel_scores(np.zeros((3, 2), int), np.zeros((3, 2), int), np.zeros((3, 2)))


# ----------------------------------------------------------------------- a tiny spec


def write_spec(root: Path, *, n=120, baselines="auto", extra_targets="", seed=0) -> Path:
    """Entity ``item`` (n) in three views: ``signal`` (item × 12, the targets are functions
    of it), ``noise`` (item × 70, unrelated, wider than baseline_dim) and ``other`` (user ×
    item: item is its COLUMN entity, its columns are a second signal)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    signal = rng.standard_normal((n, 12)).astype(np.float32)
    np.save(root / "signal.npy", signal)
    np.save(root / "noise.npy", rng.standard_normal((n, 70)).astype(np.float32))
    other = rng.standard_normal((8, n)).astype(np.float32)
    np.save(root / "other.npy", other)
    w = rng.standard_normal(12)
    np.save(root / "linear.npy", signal @ w)
    np.save(root / "from_cols.npy", other.T @ rng.standard_normal(8))
    labels = np.stack([signal[:, 0] > 0, signal[:, 1] > 0.5, signal[:, 2] < -0.8], axis=1)
    np.save(root / "labels.npy", labels.astype(np.int64))
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: tiny_eval
        entities:
          item: {{size: {n}}}
          feat: {{size: 12}}
          junk: {{size: 70}}
          user: {{size: 8}}
        views:
          signal: {{rows: item, cols: feat, source: {{reader: npy, path: signal.npy}}}}
          noise: {{rows: item, cols: junk, source: {{reader: npy, path: noise.npy}}}}
          other: {{rows: user, cols: item, source: {{reader: npy, path: other.npy}}}}
        evaluate:
          split: {{test_fraction: 0.25, seed: 0}}
          baselines: {baselines}
          baseline_dim: 12
          targets:
            linear: {{entity: item, path: linear.npy, task: regression, probe: linear}}
            from_cols: {{entity: item, path: from_cols.npy, task: regression, probe: linear}}
            labels: {{entity: item, path: labels.npy, task: multilabel, probe: logistic}}
        """) + textwrap.indent(textwrap.dedent(extra_targets), "    "))
    return spec


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_spec(tmp_path / "d")


def random_embeddings(n=120, d=6, seed=1) -> dict[str, np.ndarray]:
    return {"item": np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)}


def test_a_target_linear_in_a_view_is_predicted_by_that_views_baseline(tiny):
    result = evaluate_embeddings(load_spec(tiny), random_embeddings())
    linear = result["targets"]["linear"]
    assert set(linear["baselines"]) == {"signal", "noise", "other", "concat", "pca"}
    assert linear["baselines"]["signal"]["r2"] > 0.99
    assert linear["baselines"]["noise"]["r2"] < 0.3
    assert linear["metrics"]["r2"] < 0.3  # random "embeddings" know nothing
    assert linear["baselines"]["concat"]["r2"] > linear["baselines"]["noise"]["r2"] + 0.2
    # item is the column entity of `other`: its baseline features are the columns X[:, i]
    from_cols = result["targets"]["from_cols"]
    assert from_cols["baseline_features"]["other"] == {"sides": ["col"], "width": 8, "dim": 8,
                                                       "pca": False, "reduction": "none"}
    assert from_cols["baselines"]["other"]["r2"] > 0.99
    assert from_cols["baselines"]["signal"]["r2"] < 0.3
    # each view and their concatenation raw; `pca`: the concatenation reduced by PCA
    assert linear["baseline_features"]["noise"] == {"sides": ["row"], "width": 70, "dim": 70,
                                                    "pca": False, "reduction": "none"}
    assert linear["baseline_features"]["concat"]["width"] == 12 + 70 + 8
    assert linear["baseline_features"]["pca"] == {"views": ["signal", "noise", "other"],
                                                  "width": 90, "dim": 12, "pca": True,
                                                  "reduction": "pca"}


def test_multilabel_target_with_baselines_and_floor(tiny):
    labels = evaluate_embeddings(load_spec(tiny), random_embeddings())["targets"]["labels"]
    assert set(labels["metrics"]) == set(labels["floor"]) == {
        "micro_f1", "macro_f1", "auprc_micro", "auprc_macro"}
    assert labels["labels"]["n_labels"] == 3
    signal = labels["baselines"]["signal"]
    assert signal["auprc_macro"] > 0.9 > labels["floor"]["auprc_macro"]
    assert signal["auprc_macro"] > labels["baselines"]["noise"]["auprc_macro"] + 0.3


def test_pca_is_fit_on_the_train_split_only(tiny, monkeypatch):
    fitted: list[np.ndarray] = []

    import sklearn.decomposition

    class SpyPCA(sklearn.decomposition.PCA):
        def fit(self, x, y=None):
            fitted.append(np.array(x))
            return super().fit(x, y)

    monkeypatch.setattr(sklearn.decomposition, "PCA", SpyPCA)  # imported when baselines fit
    spec = load_spec(tiny, ["evaluate.baselines=[noise]"])
    result = evaluate_embeddings(spec, random_embeddings())
    assert set(result["targets"]["linear"]["baselines"]) == {"noise", "pca"}
    noise = np.load(tiny.parent / "noise.npy")
    train, _ = split_indices(np.load(tiny.parent / "linear.npy"), spec.evaluate.split,
                             "regression")
    assert result["targets"]["linear"]["n_train"] == len(train) == 90
    assert fitted, "the 70-wide view must go through PCA"
    assert fitted[0].shape == (90, 70)
    np.testing.assert_array_equal(fitted[0], noise[train])


def test_baselines_none_list_and_errors(tiny):
    result = evaluate_embeddings(load_spec(tiny, ["evaluate.baselines=none"]), random_embeddings())
    assert all("baselines" not in t for t in result["targets"].values())
    one = evaluate_embeddings(load_spec(tiny, ["evaluate.baselines=[signal]"]),
                              random_embeddings())
    # no concat of one view, nor a PCA of a view no wider than baseline_dim
    assert set(one["targets"]["linear"]["baselines"]) == {"signal"}
    with pytest.raises(SpecError, match=r"evaluate.baselines.0: unknown view 'signl'; known"):
        evaluate_embeddings(load_spec(tiny, ["evaluate.baselines=[signl]"]), random_embeddings())


def test_given_data_and_loaded_data_give_the_same_result(tiny):
    spec = load_spec(tiny)
    loaded = evaluate_embeddings(spec, random_embeddings())
    given = evaluate_embeddings(spec, random_embeddings(), data=load_data(spec, get_plugins()))
    assert loaded == given


def test_label_absent_from_the_train_split_does_not_crash(tmp_path):
    spec_path = write_spec(tmp_path / "d", extra_targets="""\
        late: {entity: item, path: late.npy, task: multilabel, probe: random_forest,
               params: {n_estimators: 10, random_state: 0}}
        late_lr: {entity: item, path: late.npy, task: multilabel, probe: logistic}
        """)
    late = np.zeros((120, 3), np.int64)
    late[::2, 0] = 1
    late[::3, 1] = 1
    late[-5:, 2] = 1  # only in the last 30 instances: the test split of a position split
    np.save(tmp_path / "d" / "late.npy", late)
    spec = load_spec(spec_path, ["evaluate.split.method=position", "evaluate.baselines=none"])
    result = evaluate_embeddings(spec, random_embeddings())
    for name in ("late", "late_lr"):
        r = result["targets"][name]
        assert r["labels"] == {"n_labels": 3, "n_scored": 3, "n_without_train_positive": 1}
        assert 0 <= r["metrics"]["macro_f1"] <= 1


def test_multilabel_target_file_is_checked(tmp_path):
    spec_path = write_spec(tmp_path / "d")
    np.save(tmp_path / "d" / "labels.npy", np.full((120, 3), 2))
    with pytest.raises(SpecError, match="labels.path: multilabel values must be 0 or 1"):
        evaluate_embeddings(load_spec(spec_path), random_embeddings())
    np.save(tmp_path / "d" / "labels.npy", np.zeros(120))
    with pytest.raises(SpecError, match="n × L"):
        evaluate_embeddings(load_spec(spec_path), random_embeddings())


def test_a_probe_that_cannot_do_multilabel_is_a_spec_error(tiny):
    with pytest.raises(SpecError, match="probe 'ridge' does not do multilabel"):
        load_spec(tiny, ["evaluate.targets.labels.probe=ridge"])


# ----------------------------------------------------------------------- splits


def test_position_split_takes_the_last_instances_as_test():
    train, test = split_indices(np.zeros(10), SplitSpec(test_fraction=0.3, method="position"),
                                "regression")
    assert train.tolist() == list(range(7)) and test.tolist() == [7, 8, 9]


def test_stratified_split_keeps_class_proportions_and_survives_singletons():
    y = np.array([0] * 80 + [1] * 20 + [2])  # class 2 has one member
    train, test = split_indices(y, SplitSpec(test_fraction=0.2, seed=3, method="stratified"))
    assert len(test) == 21 and (y[test] == 1).sum() == 4
    assert np.intersect1d(train, test).size == 0


@pytest.mark.parametrize("seed", range(5))
def test_stratified_multilabel_split_puts_a_rare_label_on_both_sides(seed):
    y = np.zeros((40, 3), np.int64)
    y[:, 0] = 1
    y[::4, 1] = 1
    y[[5, 17], 2] = 1  # two instances only
    split = SplitSpec(test_fraction=0.5, seed=seed, method="stratified")
    train, test = split_indices(y, split, "multilabel")
    assert y[train, 2].sum() == 1 and y[test, 2].sum() == 1


# ----------------------------------------------------------------------- the table


def test_table_shows_learnt_floor_and_baselines_in_100_columns(tiny):
    result = evaluate_embeddings(load_spec(tiny), random_embeddings())
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(evaluation_table(result))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 100
    for word in ("learnt", "trivial floor", "raw signal", "raw noise", "raw other",
                 "raw concat", "auprc_macro", "micro_f1", "r2", "labels scored", "90 train"):
        assert word in text, word


# ----------------------------------------------------------------------- repeated splits


def _std_keys(result) -> set[str]:
    return {k for t in result["targets"].values() for k in t if k.endswith("_std")}


def test_repeats_give_the_mean_and_std_of_single_split_evaluations(tiny):
    spec = load_spec(tiny, ["evaluate.split.seed=4", "evaluate.split.repeats=3"])
    repeated = evaluate_embeddings(spec, random_embeddings())
    singles = [evaluate_embeddings(load_spec(tiny, [f"evaluate.split.seed={s}"]),
                                   random_embeddings()) for s in (4, 5, 6)]
    assert repeated["split"]["repeats"] == 3
    for name, r in repeated["targets"].items():
        ones = [s["targets"][name] for s in singles]
        assert r["repeats"] == 3 and r["n_test"] == ones[0]["n_test"]
        for key in ("metrics", "floor"):
            for metric, mean in r[key].items():
                values = [o[key][metric] for o in ones]
                assert mean == pytest.approx(np.mean(values)), (name, key, metric)
                assert r[f"{key}_std"][metric] == pytest.approx(np.std(values, ddof=1))
        assert set(r["baselines"]) == set(r["baselines_std"]) == set(ones[0]["baselines"])
        for base, metrics in r["baselines"].items():
            for metric, mean in metrics.items():
                values = [o["baselines"][base][metric] for o in ones]
                assert mean == pytest.approx(np.mean(values)), (name, base, metric)
                assert r["baselines_std"][base][metric] == pytest.approx(
                    np.std(values, ddof=1))
    # the splits differ, so the spread is not zero
    assert repeated["targets"]["linear"]["baselines_std"]["noise"]["r2"] > 0


def test_one_split_keeps_the_output_without_spread(tiny):
    result = evaluate_embeddings(load_spec(tiny), random_embeddings())
    assert not _std_keys(result)
    assert all("repeats" not in t for t in result["targets"].values())
    assert "repeats" not in result["split"]
    assert set(result["targets"]["linear"]) == {
        "entity", "task", "probe", "params", "n_train", "n_test", "n_missing", "metrics",
        "floor", "baselines", "baseline_features"}
    assert _std_keys(evaluate_embeddings(load_spec(tiny, ["evaluate.split.repeats=2"]),
                                         random_embeddings())) == {
        "metrics_std", "floor_std", "baselines_std"}


def test_repeats_of_a_position_split_is_a_spec_error(tiny):
    with pytest.raises(SpecError, match=r"evaluate\.split\.repeats: .*position"):
        load_spec(tiny, ["evaluate.split.method=position", "evaluate.split.repeats=2"])
    with pytest.raises(SpecError, match=r"evaluate\.split\.repeats"):
        load_spec(tiny, ["evaluate.split.repeats=0"])
    assert load_spec(tiny, ["evaluate.split.method=position"]).evaluate.split.repeats == 1


def test_table_shows_mean_and_std_over_the_splits(tiny):
    result = evaluate_embeddings(load_spec(tiny, ["evaluate.split.repeats=3"]),
                                 random_embeddings())
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(evaluation_table(result))
    text = out.getvalue()
    assert "mean ± std over 3 splits (seeds 0–2)" in text
    r2 = result["targets"]["linear"]["baselines"]["signal"]["r2"]
    std = result["targets"]["linear"]["baselines_std"]["signal"]["r2"]
    assert f"{r2:.3f} ± {std:.3f}" in text
