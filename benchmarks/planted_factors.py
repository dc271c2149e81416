"""Which planted factors of the synthetic Goodreads sample a run's book embedding holds.

    .venv/bin/python benchmarks/planted_factors.py RUN [RUN ...] [--data data/goodreads] \
        [--spec specs/goodreads.yaml]

The sample (``plugins/mmfuse_goodreads/sample.py``) draws every book's latent ``u ~ N(0, I_8)``
right after the book ids, from ``numpy.random.default_rng(seed)``; this replays that draw
(and checks it against ``book_ids.txt``), then prints, per run, the 5-fold cross-validated R²
of a ridge regression from the embedding to each factor (u0 hue, u1 stripes, u4
brightness, u5 disk size: the cover; u2, u3, u6, u7: the text; u4 both), beside the PCA-50
of the raw covers (and, with ``--spec``, the raw description).  Figures only; nothing is
asserted.

With ``--spec specs/goodreads.yaml`` it also prints the genre's ceiling under the spec's
logistic probe (``genre_logistic``, on its 5 repeated splits): what the probe scores on the
exact planted factors, on the exact cover factors beside the raw description (all a
representation of these two views could hold, if it read the covers perfectly and used
the word2vec means linearly), and on the raw description alone, beside each run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import cross_val_predict

FACTORS = ("u0 hue", "u1 stripes", "u2 text", "u3 text", "u4 both", "u5 disk", "u6 text",
           "u7 text")


def planted(root: Path) -> np.ndarray:
    manifest = json.loads((root / "manifest.json").read_text())
    if manifest.get("source") != "synthetic":
        sys.exit(f"{root} holds real data: no planted factors to compare with")
    n, seed = manifest["n_books"], manifest["seed"]
    rng = np.random.default_rng(seed)
    ids = rng.choice(99_900_000, size=n, replace=False) + 100_000
    latent = rng.standard_normal((n, manifest["latent_dim"]))
    stored = np.array([int(x) for x in (root / "book_ids.txt").read_text().split()])
    if not np.array_equal(stored, ids):
        sys.exit(f"{root}/book_ids.txt is not the sample's draw: the generator changed")
    return latent


def r2(x: np.ndarray, latent: np.ndarray) -> list[float]:
    out = []
    for j in range(latent.shape[1]):
        y = latent[:, j]
        pred = cross_val_predict(RidgeCV(alphas=np.logspace(-3, 3, 7)), x, y, cv=5)
        out.append(1 - float(((pred - y) ** 2).mean() / y.var()))
    return out


def raw_description(spec) -> np.ndarray:
    """The description view's raw features (the word2vec means the baselines use)."""
    from mmfuse.baselines import raw_features
    from mmfuse.data import load_data
    from mmfuse.plugins import get_plugins

    data = load_data(spec, get_plugins())
    return np.asarray(raw_features(spec, data, "description", "book"), dtype=np.float32)


def ceiling(spec, description: np.ndarray, latent: np.ndarray,
            embeddings: dict[str, np.ndarray]) -> None:
    """The genre's logistic accuracy on the planted factors, the raw description and each
    run's embedding (``embeddings``: run → its book embedding)."""
    from mmfuse.evaluate import evaluate_target

    target = spec.evaluate.targets["genre_logistic"]
    split = spec.evaluate.split.model_copy(update={"repeats": 5})
    rows = {"exact genre factors u0-u4": latent[:, :5],
            "exact cover factors (u0, u1, u4) + raw description":
                np.hstack([latent[:, [0, 1, 4]], description]),
            "raw description": description,
            **embeddings}
    print(f"\ngenre ({target.probe} probe, accuracy, mean ± std over 5 splits)\n")
    print("| features | accuracy |\n| --- | --- |")
    for name, x in rows.items():
        m = evaluate_target("genre_logistic", target, x.astype(np.float32), split, spec)
        print(f"| {name} | {m['metrics']['accuracy']:.3f} ± "
              f"{m['metrics_std']['accuracy']:.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=Path("data/goodreads"))
    parser.add_argument("--spec", type=Path, help="also the genre's ceiling (goodreads.yaml)")
    args = parser.parse_args(argv)
    latent = planted(args.data)
    print("| features | " + " | ".join(FACTORS) + " |")
    print("|" + " --- |" * (len(FACTORS) + 1))
    embeddings = {str(run): np.load(run / "embeddings" / "book.npy") for run in args.runs}
    rows = list(embeddings.items())
    covers = np.load(args.data / "covers.npy", mmap_mode="r")
    flat = np.asarray(covers).reshape(len(covers), -1).astype(np.float32) / 255
    rows.append(("PCA-50 of raw covers", PCA(50, random_state=0).fit_transform(flat)))
    if args.spec is not None:
        from mmfuse.spec import load_spec

        spec = load_spec(args.spec)
        description = raw_description(spec)
        rows.append(("raw description", description))
    for name, x in rows:
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in r2(x, latent)) + " |")
    if args.spec is not None:
        ceiling(spec, description, latent, embeddings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
