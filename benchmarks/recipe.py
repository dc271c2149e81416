"""How the default was chosen: variants of a data set's spec, each probed on repeated
splits beside the raw baselines (figures only; nothing is asserted).

    .venv/bin/python benchmarks/recipe.py --spec specs/emoji.yaml [--repeats 5] \
        [--variants mmeda2,mmfuse,...] [--out /tmp/recipe]

A variant already finished under ``--out`` with the same resolved spec is read back, not
retrained, and an interrupted one continues from its checkpoint.

Each variant is the spec with ``--set`` overrides (``VARIANTS`` below); every one trains
with the spec's own seed and is evaluated by ``mmfuse``'s evaluation with
``evaluate.split.repeats`` splits (the same splits for every variant and for the raw
baselines).  Prints one markdown table per target: the main metric's mean ± std for each
variant, then the raw baselines (each view alone, their concatenation and its PCA; scored
with the first variant only), the best in bold.  A view weight the spec sets for the
paper's presets (emoji's ``text.weight: 10``) is reset to 1 for the ``mmfuse`` variants,
whose scale-free terms already weigh views alike (``--keep-weights`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mmfuse.api import train
from mmfuse.spec import load_spec

#: name → overrides of the spec (the recipe's switches, one at a time)
VARIANTS: dict[str, list[str]] = {
    "mmeda2": ["model.preset=mmeda2"],
    "mmfuse": ["model.preset=mmfuse"],
    "mmfuse-cross": ["model.preset=mmfuse", "model.terms.cross=false"],
    "mmfuse+cross": ["model.preset=mmfuse", "model.terms.cross=true"],
    "mmfuse-dropout": ["model.preset=mmfuse", "model.view_dropout=0"],
    "mmfuse+dropout0.5": ["model.preset=mmfuse", "model.view_dropout=0.5"],
    "mmfuse-scale_free": ["model.preset=mmfuse", "model.scale_free=false"],
    "mmfuse+validation": ["model.preset=mmfuse", "train.validation=0.1"],
}
#: each task's headline metric
MAIN = {"classification": "accuracy", "regression": "r2", "multilabel": "auprc_macro"}


def cell(mean: float | None, std: float | None, best: bool) -> str:
    if mean is None:
        return "–"
    text = f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
    return f"**{text}**" if best else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated names of VARIANTS")
    parser.add_argument("--set", action="append", default=[], dest="sets",
                        help="an override for every variant (e.g. train.epochs=10)")
    parser.add_argument("--keep-weights", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("/tmp/mmfuse-recipe"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    base = load_spec(args.spec)
    common = [f"evaluate.split.repeats={args.repeats}", "evaluate.ablation=false", *args.sets]
    results: dict[str, dict] = {}
    for i, name in enumerate(names):
        # the raw baselines are the same for every variant: scored with the first only
        sets = [*VARIANTS[name], *common, *(["evaluate.baselines=none"] if i else [])]
        if "model.preset=mmfuse" in sets and not args.keep_weights:
            sets += [f"views.{v}.weight=1" for v, s in base.views.items() if s.weight != 1]
        out = args.out / base.name / name
        spec = load_spec(args.spec, sets)
        done, manifest = out / "variant.json", out / "manifest.json"
        if done.exists() and json.loads(manifest.read_text())["spec_digest"] == spec.digest():
            # a finished variant of the same resolved spec is kept: rerun to resume
            print(f"kept {name} ({out})", file=sys.stderr, flush=True)
            results[name] = json.loads((out / "evaluation.json").read_text())
            continue
        print(f"training {name}: --set {' --set '.join(sets)}", file=sys.stderr, flush=True)
        # an interrupted variant continues from its last checkpoint
        result = train(spec, out,
                       resume=(out / "checkpoint.pt").exists())
        results[name] = result.evaluation
        (out / "variant.json").write_text(json.dumps({"name": name, "sets": sets}))
    first = results[names[0]]
    for target, info in first["targets"].items():
        metric = MAIN[info["task"]]
        rows = [(name, r["targets"][target]["metrics"].get(metric),
                 r["targets"][target].get("metrics_std", {}).get(metric))
                for name, r in results.items()]
        shown = {"concat": "raw concat", "pca": "PCA of raw concat"}
        rows += [(shown.get(view, f"raw {view}"), values.get(metric),
                  info.get("baselines_std", {}).get(view, {}).get(metric))
                 for view, values in info.get("baselines", {}).items()]
        best = max((m for _, m, _ in rows if m is not None), default=None)
        print(f"\n{target} ({info['probe']}, {metric}; mean ± std over {args.repeats} "
              f"splits, {info['n_test']} test instances each)\n")
        print("| features | " + metric + " |\n| --- | --- |")
        for name, mean, std in rows:
            print(f"| {name} | {cell(mean, std, mean == best)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
