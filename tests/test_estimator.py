"""FusionEmbedder: mmfuse as a scikit-learn transformer, in a Pipeline and a grid search, on
tiny planted data (a label that shows in two views), 1–2 epochs."""

from __future__ import annotations

import pickle
import textwrap

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import mmfuse
from mmfuse import FusionEmbedder
from mmfuse.errors import DataError

FAST = {"train__device": "cpu", "train__batch_size": 16, "train__tol": 0.0}


def planted(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 10-column text view and a 6-column image view both showing two latent factors;
    the label is the sign of the first."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n, 2))
    text = u @ rng.standard_normal((2, 10)) + 0.3 * rng.standard_normal((n, 10))
    image = np.tanh(u @ rng.standard_normal((2, 6))) + 0.3 * rng.standard_normal((n, 6))
    return np.hstack([text, image]).astype(np.float32), (u[:, 0] > 0).astype(int)


VIEWS = {"text": range(10), "image": range(10, 16)}


def test_pipeline_in_grid_search_scores_above_the_floor():
    X, y = planted()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    pipe = Pipeline([("fuse", FusionEmbedder(views=VIEWS, epochs=4, random_state=0, **FAST)),
                     ("clf", LogisticRegression())])
    grid = {"fuse__dim": [2, 4], "fuse__train__optimizer__lr": [0.01]}
    search = GridSearchCV(pipe, grid, cv=2).fit(X_train, y_train)
    assert len(search.cv_results_["params"]) == 2
    floor = max(np.mean(y_test), 1 - np.mean(y_test))  # always the majority class: 0.5
    assert search.best_score_ > 0.85  # measured 0.956 (logistic on the raw columns: 1.0)
    assert search.score(X_test, y_test) > floor + 0.3  # measured 1.0 against 0.567
    fuse = search.best_estimator_.named_steps["fuse"]
    assert fuse.spec_.train.optimizer.lr == 0.01 and fuse.spec_.model.dim in (2, 4)
    assert fuse.embedding_.shape == (len(X_train), fuse.spec_.model.dim)


def test_pandas_output_is_indexed_by_ids_and_new_rows_go_through_the_encoders():
    X, _ = planted(60)
    columns = [f"text_{i}" for i in range(10)] + [f"img_{i}" for i in range(6)]
    frame = pd.DataFrame(X, columns=columns, index=[f"e{i}" for i in range(60)])
    fuse = FusionEmbedder(views={"text": "text_", "image": "img_"}, dim=3, epochs=1,
                          random_state=0, **FAST).set_output(transform="pandas")
    z = fuse.fit_transform(frame)
    assert isinstance(z, pd.DataFrame) and list(z.index) == list(frame.index)
    assert list(z.columns) == ["fusionembedder0", "fusionembedder1", "fusionembedder2"]
    assert fuse.ids_ == list(frame.index) and list(fuse.feature_names_in_) == columns
    assert {v: list(c) for v, c in fuse.views_.items()} == {"text": list(range(10)),
                                                            "image": list(range(10, 16))}
    again = fuse.transform(frame.iloc[[7, 3]])
    assert list(again.index) == ["e7", "e3"]
    np.testing.assert_allclose(again.to_numpy(), z.loc[["e7", "e3"]].to_numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="feature names"):
        fuse.transform(frame.rename(columns={"img_0": "other"}))


def test_a_mapping_of_tensor_sparse_and_feature_views():
    rng = np.random.default_rng(0)
    n = 40
    X = {"image": rng.integers(0, 255, (n, 1, 4, 4), dtype=np.uint8),
         "ratings": sp.random_array((n, 15), density=0.3, random_state=0, format="csr"),
         "year": rng.standard_normal(n)}
    fuse = FusionEmbedder(dim=2, epochs=1, random_state=0,
                          spec={"views": {"image": {"encoder": {"type": "dense"}}}}, **FAST)
    z = fuse.fit_transform(X)
    views = fuse.spec_.views
    assert views["image"].tensor.shape == [1, 4, 4] and views["year"].features
    assert views["ratings"].cols == "ratings_columns"
    assert fuse.model_.data.sizes == {"sample": n, "ratings_columns": 15}
    np.testing.assert_allclose(fuse.transform(X), z, atol=1e-6)
    new = {k: v[:3] for k, v in X.items()}
    assert fuse.transform(new).shape == (3, 2)
    with pytest.raises(ValueError, match=r"views \['year'\] are not in X"):
        fuse.transform({k: v for k, v in new.items() if k != "year"})
    with pytest.raises(DataError, match=r"view 'image': X has rows of shape \[1, 2, 8\]"):
        fuse.transform({**new, "image": new["image"].reshape(3, 1, 2, 8)})


def test_the_same_embeddings_as_a_spec_trained_on_npy_files(tmp_path):
    X, _ = planted(50)
    fuse = FusionEmbedder(views=VIEWS, dim=3, epochs=2, random_state=7,
                          views__image__weight=2.0, **FAST).fit(X)
    np.save(tmp_path / "text.npy", X[:, :10])
    np.save(tmp_path / "image.npy", X[:, 10:])
    (tmp_path / "spec.yaml").write_text(textwrap.dedent("""\
        name: same
        seed: 7
        entities: {sample: {}, text_columns: {}, image_columns: {}}
        views:
          text: {rows: sample, cols: text_columns, source: {reader: npy, path: text.npy}}
          image: {rows: sample, cols: image_columns, source: {reader: npy, path: image.npy},
                  weight: 2.0}
        model: {dim: 3}
        train: {epochs: 2, batch_size: 16, tol: 0.0, device: cpu}
        """))
    run = mmfuse.train(tmp_path / "spec.yaml", tmp_path / "run")
    np.testing.assert_array_equal(run.embeddings("sample").to_numpy(), fuse.embedding_)


def test_params_clone_overrides_and_pickle():
    X, _ = planted(40)
    fuse = FusionEmbedder(views=VIEWS, dim=2, epochs=1, random_state=0, **FAST)
    params = fuse.get_params()
    assert params["train__batch_size"] == 16 and params["dim"] == 2
    twin = clone(fuse)
    assert twin.get_params() == params and twin is not fuse
    twin.set_params(dim=3, model__preset="mmeda1", train__epochs=1)
    assert fuse.get_params()["dim"] == 2 and "model__preset" not in fuse.get_params()
    twin.fit(X)
    assert twin.spec_.model.preset == "mmeda1" and twin.spec_.model.dim == 3
    assert not hasattr(fuse, "spec_")  # clone never fits the original
    restored = pickle.loads(pickle.dumps(twin))
    np.testing.assert_array_equal(restored.transform(X[:5]), twin.transform(X[:5]))
    with pytest.raises(ValueError, match="invalid parameter 'trian__epochs'"):
        clone(fuse).set_params(trian__epochs=2).fit(X)


@pytest.mark.parametrize("kwargs, message", [
    ({"views": {"a": range(8), "b": range(6, 16)}}, "column 6 is in views 'a' and 'b'"),
    ({"views": {"a": range(8)}}, r"8 columns of X are in no view \(first: \[8, 9"),
    ({"views": {"a": "text_"}}, "a name prefix needs a DataFrame X"),
    ({"views": VIEWS, "spec": {"seed": 1}}, r"`seed` is not for FusionEmbedder \(use "
     "random_state\\)"),
    ({"views": VIEWS, "spec": {"views": {"sound": {}}}}, r"views \['sound'\] have no data"),
    ({"views": VIEWS, "spec": {"views": {"text": {"source": {"reader": "npy"}}}}},
     "views.text.source: the data comes from X"),
    ({"views": VIEWS, "spec": {"views": {"image": {"tensor": {"shape": [4, 4]}}}}},
     r"view 'image': 6 columns cannot be a tensor of shape \[4, 4\]"),
    ({"views": VIEWS, "train__optimizer__type": "adagrad"},
     r"FusionEmbedder train\.optimizer\.type: Input should be 'adam', 'adamw' or 'sgd'"),
])
def test_bad_input_is_a_clear_error(kwargs, message):
    X, _ = planted(20)
    with pytest.raises((ValueError, mmfuse.SpecError), match=message):
        FusionEmbedder(epochs=1, **kwargs).fit(X)


def test_a_mudata_is_a_mapping_of_its_modalities():
    ad = pytest.importorskip("anndata")
    md = pytest.importorskip("mudata")
    X, _ = planted(40)
    ids = [f"c{i}" for i in range(40)]
    order = np.random.default_rng(0).permutation(40)
    text = ad.AnnData(X[:, :10], obs=pd.DataFrame(index=ids))
    image = ad.AnnData(X[order, 10:], obs=pd.DataFrame(index=np.array(ids)[order]))
    mdata = md.MuData({"text": text, "image": image})  # its obs: the first modality's
    z = FusionEmbedder(dim=2, epochs=1, random_state=0, **FAST).fit_transform(mdata)
    reference = FusionEmbedder(dim=2, epochs=1, random_state=0, **FAST).fit_transform(
        {"text": X[:, :10], "image": X[:, 10:]})
    np.testing.assert_array_equal(z, reference)  # the image rows were put back in order

    # a modality with some of the observations: the others are trained and embedded from
    # their other views, in fit as in transform
    partial = md.MuData({"text": text, "image": image[:30]})
    lacking = np.sort(order[30:])  # rows of the MuData (in `ids` order) without an image
    fuse = FusionEmbedder(dim=2, epochs=1, random_state=0, **FAST)
    z = fuse.fit_transform(partial)
    assert z.shape == (40, 2) and np.isfinite(z).all()
    np.testing.assert_allclose(fuse.transform(partial), z, rtol=1e-5, atol=1e-6)
    from mmfuse.api import embed_new

    text_only = embed_new(fuse.model_, fuse.entity_, {"text": X[lacking, :10]})
    np.testing.assert_allclose(z[lacking], text_only, rtol=1e-5, atol=1e-6)
    with_image = embed_new(fuse.model_, fuse.entity_, {"text": X[lacking, :10],
                                                       "image": X[lacking, 10:]})
    assert np.abs(with_image - text_only).max() > 1e-3  # the image does count where given


# scikit-learn's own checks, every one that applies: all pass on this version (1.9), except
# check_array_api_input, which scikit-learn skips unless SCIPY_ARRAY_API=1 (mmfuse trains
# with torch on NumPy arrays; it takes no array-API namespaces).  About 15–30 s: slow.
@pytest.mark.slow
@parametrize_with_checks([FusionEmbedder(dim=2, epochs=1, random_state=0, **FAST)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_readme_python_examples_compile():
    """The README's API and Pipeline examples are valid Python (the Pipeline needs the
    emoji files, so it is compiled here; the tests above run the same calls)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### 5. Python API and scikit-learn"):]
    blocks = re.findall(r"```python\n(.*?)```", section[:section.index("\n## ")], re.S)
    assert len(blocks) == 2 and "GridSearchCV(pipe" in blocks[1]
    for block in blocks:
        compile(block, "README.md", "exec")
