"""Probes, metrics and trivial floors for the three target tasks.

``classification`` (one label per instance), ``regression`` (one number) and ``multilabel``
(an ``n × L`` 0/1 matrix: any number of labels per instance, e.g. GO terms of a gene).

Multilabel metrics are computed over the *scored* labels: those with at least one positive
in the test split (recall and average precision are undefined for the others):

- ``micro_f1`` / ``macro_f1``: F1 of the probe's 0/1 predictions, pooled over all scored
  cells / averaged over scored labels (a label never predicted scores 0);
- ``auprc_micro`` / ``auprc_macro``: average precision of the probe's scores (positive-class
  probabilities), pooled / averaged over scored labels.

The multilabel floor knows only each label's prevalence in the train split: its score for
every instance is that prevalence (so its macro AUPRC is the test prevalence), and it predicts
a label for every instance iff the label is positive in more than half of the train split
(the per-label majority class, as the classification floor).  A label with no positive in the
train split is never predicted by any probe (a constant predictor), and still counts if it has
test positives.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.compose import TransformedTargetRegressor
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmfuse.spec import TargetSpec


def make_probe(target: TargetSpec) -> BaseEstimator:
    """The spec's probe with its params; logistic, ridge and mlp see standardised inputs.

    ``mlp`` is scikit-learn's multi-layer perceptron: the paper's supervised baseline when its
    inputs are raw features (``mmfuse bench``), a non-linear probe on embeddings otherwise.

    Multilabel: ``logistic`` is one-vs-rest logistic regression (one binary model per label;
    solver ``liblinear`` unless params say otherwise: ~15× faster than lbfgs on a hundred small
    binary problems), ``random_forest`` one forest over all labels (native multi-output).
    """
    p = dict(target.params)
    classify = target.task in ("classification", "multilabel")
    try:
        if target.probe == "random_forest":
            return (RandomForestClassifier if classify else RandomForestRegressor)(**p)
        if target.probe == "logistic" and target.task == "multilabel":
            logistic = LogisticRegression(**{"max_iter": 2000, "solver": "liblinear", **p})
            return make_pipeline(StandardScaler(), OneVsRestClassifier(logistic))
        if target.probe == "logistic":
            return make_pipeline(StandardScaler(), LogisticRegression(**{"max_iter": 2000, **p}))
        if target.probe == "ridge":
            return make_pipeline(StandardScaler(), Ridge(**p))
        if target.probe == "mlp" and classify:
            return make_pipeline(StandardScaler(), MLPClassifier(**{"max_iter": 500, **p}))
        if target.probe == "mlp":  # the regression target is standardised too
            mlp = make_pipeline(StandardScaler(), MLPRegressor(**{"max_iter": 500, **p}))
            return TransformedTargetRegressor(regressor=mlp, transformer=StandardScaler())
        return LinearRegression(**p)
    except TypeError as exc:
        raise ValueError(f"probe {target.probe!r}: {exc}") from None


def fit_probe(probe: BaseEstimator, x: np.ndarray, y: np.ndarray) -> BaseEstimator:
    """Fit, silencing the one-vs-rest warning about labels constant in the train split."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Label .* is present in all training")
        warnings.filterwarnings("ignore", message="Label not .* is present in all training")
        return probe.fit(x, y)


def positive_scores(model: BaseEstimator, x: np.ndarray, n_labels: int) -> np.ndarray:
    """``n × L`` probability of each label being 1 from a fitted multilabel probe."""
    proba = model.predict_proba(x)
    if not isinstance(proba, list):  # one-vs-rest: already n × L
        return np.asarray(proba, dtype=np.float64).reshape(len(x), n_labels)
    out = np.empty((len(x), n_labels))
    for j, (p, classes) in enumerate(zip(proba, model.classes_, strict=True)):
        hit = np.flatnonzero(np.asarray(classes) == 1)
        out[:, j] = p[:, hit[0]] if len(hit) else 0.0  # label never 1 in the train split
    return out


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {"mse": float(mean_squared_error(y_true, y_pred)),
            "r2": float(r2_score(y_true, y_pred))}


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray,
                          y_score: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy and macro-F1 always; F1, precision, recall: of class 1 for 0/1 labels, else
    macro.  0/1 labels add each class's F1 and, given ``y_score`` (probability of class 1),
    ROC-AUC and AUPRC (undefined, so left out, when the test split holds one class)."""
    labels = np.unique(y_true)
    binary = len(labels) <= 2 and set(labels.tolist()) <= {0, 1}
    kw: dict[str, Any] = {"zero_division": 0}
    kw.update({"pos_label": 1, "average": "binary"} if binary else {"average": "macro"})
    out = {
        "f1": float(f1_score(y_true, y_pred, **kw)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred, **kw)),
        "recall": float(recall_score(y_true, y_pred, **kw)),
    }
    if binary:
        per_class = f1_score(y_true, y_pred, labels=[0, 1], average=None, zero_division=0)
        out.update({"f1_class_0": float(per_class[0]), "f1_class_1": float(per_class[1])})
        if y_score is not None and len(labels) == 2:
            out.update({"roc_auc": float(roc_auc_score(y_true, y_score)),
                        "auprc": float(average_precision_score(y_true, y_score))})
    return out


def class_one_scores(model: BaseEstimator, x: np.ndarray) -> np.ndarray | None:
    """Probability of class 1 from a fitted binary probe (None: not a 0/1 probe, or no
    probabilities)."""
    classes = list(getattr(model, "classes_", []))
    if not hasattr(model, "predict_proba") or 1 not in classes or len(classes) > 2:
        return None
    return np.asarray(model.predict_proba(x))[:, classes.index(1)]


def scored_labels(y_test: np.ndarray) -> np.ndarray:
    """Indices of the labels with at least one positive in the test split."""
    return np.flatnonzero(y_test.sum(axis=0) > 0)


def multilabel_scores(y_true: np.ndarray, y_pred: np.ndarray,
                      y_score: np.ndarray) -> dict[str, float]:
    """micro/macro F1 of 0/1 predictions and micro/macro AUPRC of scores, over scored labels."""
    keep = scored_labels(y_true)
    if len(keep) == 0:
        raise ValueError("no label has a positive instance in the test split")
    t, p, s = y_true[:, keep], y_pred[:, keep], y_score[:, keep]
    return {
        "micro_f1": float(f1_score(t, p, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(t, p, average="macro", zero_division=0)),
        "auprc_micro": float(average_precision_score(t, s, average="micro")),
        "auprc_macro": float(average_precision_score(t, s, average="macro")),
    }


def multilabel_floor(y_train: np.ndarray, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """The floor's (0/1 predictions, scores) for ``n_test`` instances: train prevalence."""
    prevalence = y_train.mean(axis=0)
    scores = np.tile(prevalence, (n_test, 1))
    return (scores > 0.5).astype(np.int64), scores


def evaluate_probe(target: TargetSpec, x_train: np.ndarray, y_train: np.ndarray,
                   x_test: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    """Fit the target's probe on the train split; its metrics on the test split."""
    model = fit_probe(make_probe(target), x_train, y_train)
    if target.task == "multilabel":
        scores = positive_scores(model, x_test, y_test.shape[1])
        return multilabel_scores(y_test, np.asarray(model.predict(x_test)), scores)
    if target.task == "classification":
        return classification_scores(y_test, model.predict(x_test),
                                     class_one_scores(model, x_test))
    return task_scores(target.task, y_test, model.predict(x_test))


def task_scores(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The metrics of a classification or regression task."""
    if task == "regression":
        return regression_scores(y_true, y_pred)
    return classification_scores(y_true, y_pred)


def floor_scores(task: str, y_train: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    """The trivial floor: majority class / mean of train / per-label train prevalence."""
    if task == "multilabel":
        pred, scores = multilabel_floor(y_train, len(y_test))
        return multilabel_scores(y_test, pred, scores)
    dummy = (DummyClassifier(strategy="most_frequent") if task == "classification"
             else DummyRegressor(strategy="mean"))
    dummy.fit(np.zeros((len(y_train), 1)), y_train)
    x_test = np.zeros((len(y_test), 1))
    if task == "classification":
        return classification_scores(y_test, dummy.predict(x_test),
                                     class_one_scores(dummy, x_test))
    return task_scores(task, y_test, dummy.predict(x_test))
