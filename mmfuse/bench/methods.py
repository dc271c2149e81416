"""The rows of the benchmark, each a way to get embeddings of the evaluated entity.

Rows are spec variants (``model.preset``, tensor views swapped for CNN-feature matrix views,
two-stage ConvAE features) wherever mmfuse can express them; the supervised MLP and cmfrec
are the only rows outside the framework, and they say so.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmfuse.errors import SpecError

if TYPE_CHECKING:  # the command line lists the rows without importing torch
    from mmfuse.data import Data
    from mmfuse.plugins import Plugins
    from mmfuse.spec import Spec

log = logging.getLogger(__name__)

CNNS = ("googlenet", "inception_v3", "resnet18", "resnet50", "vgg16", "efficientnet_lite0")


class Skip(Exception):
    """This row cannot run here; the message says why (shown in the report)."""


def _quiet(stage: str, fraction: float) -> None:
    pass


@dataclass
class Context:
    spec: Spec  # the data set's spec with this seed's overrides
    seed: int
    workdir: Path
    plugins: Plugins
    histories: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    # what the row is doing now ("epoch 3/30, loss 0.12") and how far it is (0..1)
    stage: Callable[[str, float], None] = _quiet


@dataclass
class Output:
    embeddings: dict[str, np.ndarray]
    train_seconds: float
    instances: int  # instances of the primary entity seen in training (for samples/s)
    supervised: bool = False  # features for the supervised MLP, not unsupervised embeddings
    # held-out cells (``evaluate.holdout``): evaluate_holdout's result for the trained run
    holdout: dict[str, Any] | None = None


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    run: Callable[[Context], Output]
    published: str | None = None  # key into published_goodreads.json (mmfuse/bench)


def variant(spec: Spec, changes: list[str], replace: dict[str, Any] | None = None) -> Spec:
    """A copy of ``spec`` with ``--set``-style changes and whole sections replaced."""
    from mmfuse.spec import SpecSource, apply_override, validate

    data = copy.deepcopy(spec.dump())
    for key, value in (replace or {}).items():
        data[key] = value
    src = SpecSource(f"<bench variant of {spec.name}>")
    for change in changes:
        apply_override(data, change, src)
    return validate(data, src, spec.base_dir or Path.cwd())


def _skip(exc: SpecError) -> Skip:
    """A row whose spec variant cannot be built here is skipped with the spec's own words."""
    return Skip("; ".join(i.message for i in exc.issues))


def _load(ctx: Context, spec: Spec) -> Data:
    from mmfuse.data import load_data

    try:
        return load_data(spec, ctx.plugins)
    except SpecError as exc:
        raise _skip(exc) from None


def featurizing(spec: Spec) -> str:
    """What building the spec's data does, for the progress line."""
    readers = sorted({v.source.reader for v in spec.views.values()})
    return f"reading and featurizing the views ({', '.join(readers)})"


def _progress(ctx: Context, name: str, epochs: int):
    """A training observer that tells the bench's progress line the epoch and the loss."""
    from mmfuse.plugin_api import Callback

    class Progress(Callback):
        epoch, steps, loss = 0, 1, ""

        def on_epoch_start(self, trainer, epoch, steps) -> None:
            self.epoch, self.steps = epoch, max(steps, 1)
            ctx.stage(f"{name}: epoch {epoch}/{epochs}{self.loss}", (epoch - 1) / epochs)

        def on_step_end(self, trainer, step, terms) -> None:
            if step % 10 == 0 or step == self.steps:
                ctx.stage(f"{name}: epoch {self.epoch}/{epochs}{self.loss}",
                          (self.epoch - 1 + step / self.steps) / epochs)

        def on_epoch_end(self, trainer, epoch, metrics) -> None:
            self.loss = f", loss {metrics['loss']:.4g}"

    return Progress()


def _train(ctx: Context, spec: Spec, name: str) -> Output:
    """Train a spec variant in ``runs/NAME-seedS``; a folder that an interrupted bench left
    with a checkpoint continues from it (``mmfuse train --resume``: the same result)."""
    from mmfuse.api import train
    from mmfuse.run import RunDir

    folder = ctx.workdir / f"{name}-seed{ctx.seed}"
    resume = RunDir(folder).checkpoint_file.is_file() and RunDir(folder).is_run()
    ctx.stage(f"{name}: {featurizing(spec)}", 0.0)
    try:
        result = train(spec, folder, resume=resume, plugins=ctx.plugins, evaluate=False,
                       callbacks=[_progress(ctx, name, spec.train.epochs)])
    except SpecError as exc:
        raise _skip(exc) from None
    t = result.trainer
    ctx.histories[name] = t.history
    run = result.run
    entities = {e: run.read_embeddings(e)[0] for e in spec.entities}
    n = result.built.batcher.epoch_size()
    holdout = None
    if spec.evaluate is not None and spec.evaluate.holdout is not None:
        ctx.stage(f"{name}: held-out cells", 1.0)
        holdout = _holdout(spec, result)
    return Output(entities, sum(h["seconds"] for h in t.history), n * t.epoch,
                  holdout=holdout)


def _holdout(spec: Spec, result: Any) -> dict[str, Any] | None:
    """The held-out cells' metrics of a trained run, beside the completion baselines; None
    when this variant cannot predict them (e.g. no factor term on a held-out view)."""
    from mmfuse.errors import MmfuseError
    from mmfuse.holdout import evaluate_holdout
    from mmfuse.predict import CellModel

    data = result.built.data
    try:
        return evaluate_holdout(spec, data, CellModel.from_run(result.run, data, spec))
    except MmfuseError as exc:
        log.info("no held-out metrics for %s: %s", result.run.root, exc)
        return None


def tensor_views(spec: Spec) -> list[str]:
    return [v for v, s in spec.views.items() if s.is_tensor]


def cnn_variant(spec: Spec, cnn: str) -> Spec:
    """Each image tensor view becomes a matrix view of CNN features (reader ``cnn``)."""
    views = spec.dump()["views"]
    entities = spec.dump()["entities"]
    tensors = tensor_views(spec)
    if not tensors:
        raise Skip("the data set has no tensor view to featurize")
    for name in tensors:
        src = views[name]["source"]
        if src["reader"] not in ("npy", "images"):
            raise Skip(f"tensor view {name!r} is read by {src['reader']!r}; cnn reads npy/images")
        params = {"model": cnn}
        if src["reader"] == "images" and "ids" in src.get("params", {}):
            params["ids"] = src["params"]["ids"]
        entities[f"{name}_{cnn}"] = {}
        views[name] = {"rows": views[name]["rows"], "cols": f"{name}_{cnn}",
                       "source": {"reader": "cnn", "path": src["path"], "params": params},
                       "weight": views[name].get("weight", 1.0)}
    return variant(spec, [], {"views": views, "entities": entities})


def preset(name: str) -> Callable[[Context], Output]:
    def run(ctx: Context) -> Output:
        return _train(ctx, variant(ctx.spec, [f"model.preset={name}"]), name)

    return run


def mmfuse_default(ctx: Context) -> Output:
    """mmfuse's own recipe (preset ``mmfuse``) on the data set's spec, each view's weight
    back at 1: a weight a spec sets to balance the paper's presets (emoji's text, 10) is
    what the recipe's scale-free terms do already."""
    weights = [f"views.{v}.weight=1" for v, s in ctx.spec.views.items() if s.weight != 1]
    return _train(ctx, variant(ctx.spec, ["model.preset=mmfuse", *weights]), "mmfuse")


def cnn_mf(cnn: str, which: str) -> Callable[[Context], Output]:
    """``which``: dcmf (the paper's pretrained-CNN MF) or cmf, on [CNN features ‖ matrices]."""

    def run(ctx: Context) -> Output:
        spec = variant(cnn_variant(ctx.spec, cnn), [f"model.preset={which}"])
        return _train(ctx, spec, f"{which}_{cnn}")

    return run


def convae_mf(ctx: Context) -> Output:
    """The paper's ConvAE MF: a conv autoencoder on each tensor view alone (stage 1, 200-d
    codes, as in the paper), then dcmf on [its codes ‖ the matrix views] (stage 2)."""
    tensors = tensor_views(ctx.spec)
    if not tensors:
        raise Skip("the data set has no tensor view")
    views, entities = ctx.spec.dump()["views"], ctx.spec.dump()["entities"]
    seconds = instances = 0.0
    for name in tensors:
        entity = views[name]["rows"]
        train_ = {**ctx.spec.dump()["train"], "entity_batch": {}, "primary": None}
        stage1 = variant(ctx.spec, ["model.preset=mmeda2", "model.dim=200"], {
            "views": {name: views[name]}, "entities": {entity: entities[entity]},
            "train": train_, "evaluate": None})
        out = _train(ctx, stage1, f"convae_{name}")
        seconds, instances = seconds + out.train_seconds, instances + out.instances
        codes = ctx.workdir / f"convae_{name}-seed{ctx.seed}" / "embeddings" / f"{entity}.npy"
        entities[f"{name}_convae"] = {}
        views[name] = {"rows": entity, "cols": f"{name}_convae",
                       "source": {"reader": "npy", "path": str(codes)}}
    stage2 = variant(ctx.spec, ["model.preset=dcmf"], {"views": views, "entities": entities})
    out = _train(ctx, stage2, "convae_mf")
    return Output(out.embeddings, seconds + out.train_seconds, int(instances + out.instances),
                  holdout=out.holdout)


def mlp_features(cnn: str) -> Callable[[Context], Output]:
    """[matrix rows ‖ CNN features] of the evaluated entity, for the supervised MLP probe."""

    def run(ctx: Context) -> Output:
        spec = cnn_variant(ctx.spec, cnn)
        ctx.stage(f"mlp_{cnn}: {featurizing(spec)}", 0.0)
        data = _load(ctx, spec)
        feats: dict[str, np.ndarray] = {}
        for entity, n in data.sizes.items():
            parts = [data.views[v].rows(np.arange(n))[0] for v, s in spec.views.items()
                     if s.rows == entity and not s.is_tensor]
            if parts:
                feats[entity] = np.concatenate(parts, axis=1)
        return Output(feats, 0.0, 0, supervised=True)

    return run


def cmfrec_row(cnn: str) -> Callable[[Context], Output]:
    """Collective MF by ``cmfrec`` (its reference implementation): the first matrix view of
    the evaluated entity is X, the CNN features its row side information U."""

    def run(ctx: Context) -> Output:
        try:
            import cmfrec
        except ImportError:
            raise Skip("cmfrec is not installed (pip install cmfrec)") from None
        spec = cnn_variant(ctx.spec, cnn)
        ctx.stage(f"cmfrec_{cnn}: {featurizing(spec)}", 0.0)
        data = _load(ctx, spec)
        side = tensor_views(ctx.spec)  # the featurized tensor views, in spec order
        entity = spec.views[side[0]].rows
        n = data.sizes[entity]
        main = [v for v, s in spec.views.items() if s.rows == entity and v not in side]
        if not main:
            raise Skip("no matrix view besides the featurized tensor")
        x = data.views[main[0]].rows(np.arange(n))[0]
        u = np.concatenate([data.views[v].rows(np.arange(n))[0] for v in side], axis=1)
        ctx.stage(f"cmfrec_{cnn}: fitting cmfrec", 0.5)
        start = time.perf_counter()
        model = cmfrec.CMF(k=ctx.spec.model.dim, random_state=ctx.seed, verbose=False)
        model.fit(X=x, U=u)
        return Output({entity: np.asarray(model.A_, dtype=np.float32)},
                      time.perf_counter() - start, n)

    return run


def all_methods() -> list[Method]:
    """Every row, in report order (the baselines and the floor come from the evaluation)."""
    rows = [Method("mmfuse", "mmfuse's recipe (preset mmfuse)", mmfuse_default),
            Method("mmeda2", "MMEDA-II (mmfuse preset mmeda2)", preset("mmeda2"), "mmeda2"),
            Method("mmeda1", "MMEDA-I (preset mmeda1)", preset("mmeda1"), "mmeda1"),
            Method("convae_mf", "ConvAE MF (conv AE codes → dcmf)", convae_mf, "convae_mf")]
    for cnn in CNNS:
        paper = "resnet" if cnn == "resnet18" else cnn
        rows += [
            Method(f"pretrained_mf_{cnn}", f"pretrained {cnn} MF (dcmf)", cnn_mf(cnn, "dcmf"),
                   f"pretrained_mf_{paper}"),
            Method(f"cmf_{cnn}", f"CMF on {cnn} features (preset cmf)", cnn_mf(cnn, "cmf"),
                   f"cmf_{paper}"),
            Method(f"cmfrec_{cnn}", f"CMF by cmfrec on {cnn} features", cmfrec_row(cnn)),
            Method(f"mlp_{cnn}", f"supervised MLP on [text ‖ {cnn}]", mlp_features(cnn),
                   f"mlp_{paper}"),
        ]
    return rows
