"""The spec file: pydantic models, YAML loading with line numbers, and ``--set`` overrides.

Every problem is reported at once as ``FILE:LINE FIELD.PATH: message`` (see
:class:`mmfuse.errors.SpecIssue`).  Paths in a spec are relative to the spec file.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_serializer,
    model_validator,
)

from mmfuse.errors import SpecError, SpecIssue

Loc = tuple[str | int, ...]


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if value.is_absolute() or base is None:
        return value
    return (Path(base) / value).resolve()


#: A path in a spec: relative paths are taken relative to the spec file's folder.
SpecPath = Annotated[Path, AfterValidator(_resolve_path)]
Params = Annotated[dict[str, Any], Field(default_factory=dict)]


class _Model(BaseModel):
    # allow_inf_nan=False: `lr: .inf`, `weight: .nan` are errors at their field, not a run
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


#: A seed: what numpy, torch and scikit-learn all take.
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class EntitySpec(_Model):
    """A kind of thing; its instances are the rows of its views.  With neither ``ids`` nor
    ``size`` (``{}``), the size is taken from the data of the first view that touches it."""

    ids: SpecPath | None = Field(None, description="text file, one instance id per line")
    size: int | None = Field(None, gt=0, description="number of instances (when no ids file)")


class TensorSpec(_Model):
    shape: list[Annotated[int, Field(gt=0)]] = Field(
        ..., min_length=1, description="trailing shape of one instance, e.g. [3, 64, 64]"
    )


class SourceSpec(_Model):
    reader: str = Field(..., description="a registered reader (`mmfuse plugins`)")
    path: SpecPath | None = Field(None, description="input file or folder")
    params: Params


class EncoderSpec(_Model):
    type: str = Field("auto", description="a registered encoder, or auto (plugins choose)")
    params: Params


class LikelihoodSpec(_Model):
    """A view's likelihood: ``gaussian``, or ``{type: gaussian, params: {noise: learn}}``."""

    type: str = Field("gaussian", description="a registered likelihood (`mmfuse plugins`)")
    params: Params

    @model_serializer(mode="wrap")
    def _bare_name(self, handler: Any) -> Any:
        """Written as its bare name when it has no params (as most specs give it, and as
        checkpoints of runs before likelihoods had params identify it)."""
        out = handler(self)
        return out["type"] if isinstance(out, dict) and not out.get("params") else out


def _likelihood(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


class TermsSpec(_Model):
    """Switch loss terms on or off; None keeps the preset's choice."""

    row: bool | None = Field(None, description="row autoencoder reconstruction X'")
    col: bool | None = Field(None, description="column autoencoder reconstruction X2'")
    factor: bool | None = Field(None, description="factor reconstruction link(z_r · z_cᵀ)")
    tensor: bool | None = Field(None, description="tensor autoencoder reconstruction T'")
    cross: bool | None = Field(
        None, description="every side of the view also decoded from its entity's fused "
        "representation z, through the side's own decoder (`VIEW.ROLE.fused`): the fusion "
        "must carry what each view says, and under view dropout predict it from the others; "
        "preset mmfuse: on for tensor and feature views (no factor term decodes them from z)")


class ViewSpec(_Model):
    """One block of data: a matrix (rows × cols entities) or a tensor on the rows entity."""

    rows: str = Field(..., description="row entity")
    cols: str | None = Field(None, description="column entity (matrix views)")
    features: bool = Field(
        False, description="a matrix whose columns are attributes of the rows (word vectors, "
        "measurements), not an entity: no column entity, column code or factor term; implied "
        "when neither `cols` nor `tensor` is given; a 1-D array is one feature")
    tensor: TensorSpec | None = Field(None, description="trailing shape (tensor views)")
    source: SourceSpec
    encoder: EncoderSpec = Field(default_factory=EncoderSpec, description="rows / tensor side")
    col_encoder: EncoderSpec = Field(default_factory=EncoderSpec, description="column side")
    likelihood: Annotated[LikelihoodSpec, BeforeValidator(_likelihood), WithJsonSchema({"anyOf": [
        {"type": "string"},
        {"type": "object", "additionalProperties": False, "required": ["type"],
         "properties": {"type": {"type": "string"}, "params": {"type": "object"}}}]})] = Field(
        default_factory=LikelihoodSpec, description="a registered likelihood by name, or "
        "{type, params} (e.g. gaussian with params {noise: learn})")
    columns: Literal["autoencoder", "sketch", "embedding", "none"] = Field(
        "autoencoder", description="how column factors are made (matrix views)"
    )
    sketch_dim: int = Field(256, gt=0, description="width of the random sketch (columns: sketch)")
    weight: float = Field(1.0, ge=0, description="weight of this view's loss terms")
    missing: Literal["nan", "forbid", "zero"] = Field(
        "nan", description="nan: NaN cells are missing; forbid: NaN is an error; zero: NaN "
        "and 0 cells are missing (a dense ratings matrix with 0 for 'not rated'; a sparse "
        "one's stored zeros are dropped)")
    scale: Literal["auto", "none", "standard"] = Field(
        "auto", description="matrix views: standard scales each column to mean 0, std 1 over "
        "its observed cells (views on very different scales then weigh alike in the loss); "
        "auto: standard for a dense gaussian view under the mmfuse preset, else none")
    decode_from: Literal["code", "fused"] | None = Field(
        None, description="tensor views: decode from own code (MMEDA-II) or fused z (MMEDA-I)"
    )
    negatives: float | None = Field(
        None, ge=0, description="sparse matrix views: unobserved cells sampled per observed "
        "cell of a step and scored as 0 (implicit 0/1 data, networks); default 1 for "
        "bernoulli views, 0 otherwise")
    encoder_cells: int | None = Field(
        None, ge=1, description="sparse matrix views: stored cells of a row (or column) that "
        "its encoder reads per training step, a uniform sample rescaled so sums stay "
        "unbiased (neighbour sampling; embedding reads all of them); null: all")
    terms: TermsSpec = Field(default_factory=lambda: TermsSpec(),
                             description="this view's loss terms on/off (over model.terms)")
    instances: SpecPath | None = Field(
        None, description="tensor views held by some instances only: an ids file of the rows "
        "entity's instances the data's rows belong to, one id a line in the data's order; the "
        "others have no such view and are trained and embedded from their other views (a "
        "matrix view marks such an instance by a row with no observed cell)")

    @model_validator(mode="after")
    def _matrix_or_tensor(self) -> ViewSpec:
        if self.instances is not None and self.tensor is None:
            raise ValueError("`instances` is for tensor views; a matrix view marks an instance "
                             "without it by a row with no observed cell (all NaN, or no "
                             "stored cell in a sparse file)")
        if self.cols is not None and self.tensor is not None:
            raise ValueError("a view has either `cols` (a matrix view) or `tensor` (a tensor view)")
        if self.features and (self.cols is not None or self.tensor is not None):
            other = "cols" if self.cols is not None else "tensor"
            raise ValueError(f"a feature view (`features: true`) has no `{other}`: its columns "
                             "are attributes of the rows; drop one of the two")
        if self.cols is None and self.tensor is None:
            self.features = True
        if self.features:
            defaults = {"columns": "none", "col_encoder": EncoderSpec()}
            for name, default in defaults.items():
                if name in self.model_fields_set and getattr(self, name) != default:
                    raise ValueError(f"`{name}` is for a column entity, and a feature view "
                                     "has none (declare `cols: ENTITY` to factorise it)")
            self.columns = "none"
        return self

    @property
    def is_tensor(self) -> bool:
        return self.tensor is not None


class ModelSpec(_Model):
    preset: Literal["mmfuse", "mmeda2", "mmeda1", "dcmf", "cmf"] = Field(
        "mmfuse", description="mmfuse: mmfuse's own recipe (scale-free terms, "
        "standardised dense views, view dropout); mmeda2, mmeda1: the paper's models; "
        "dcmf: Deep Collective Matrix Factorization; cmf: free factors")
    dim: int = Field(50, gt=0, description="width d of every entity representation")
    code_dim: int | None = Field(None, gt=0, description="width of each view code (default d)")
    fusion_hidden: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=list, description="hidden widths of the fusion MLP"
    )
    entity_encoder: EncoderSpec = Field(
        default_factory=lambda: EncoderSpec(type="dense", params={"hidden": [128]}),
        description="preset dcmf: the per-entity autoencoder",
    )
    terms: TermsSpec = Field(default_factory=TermsSpec)
    view_dropout: float | None = Field(
        None, ge=0, lt=1, description="share of an instance's views whose codes are dropped "
        "before fusion at each training step (at least one is kept), so the representation "
        "learns to stand without any one view; null: the preset's (mmfuse 0.25, others 0)")
    scale_free: bool | None = Field(
        None, description="divide each view's loss terms by the view's null deviance (the "
        "loss of predicting its mean: the variance for gaussian), so every term starts near "
        "1 whatever the view's units and the weights mean what they say; null: the preset's")
    align: float = Field(
        0.0, ge=0, description="weight of a contrastive term per entity (ENTITY.align): in "
        "each step, InfoNCE between every two of its views' codes (an instance's codes from "
        "two views against the step's other instances; cosine similarity, temperature "
        "0.1), so each view's code learns what the others hold of the instance; 0: off")


class OptimizerSpec(_Model):
    type: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float | None = Field(
        None, gt=0, description="null: 1e-3, times the square root of how many times 5,000 "
        "cells a step of a sparse primary holds (over every process of a job), where it holds "
        "more (2e-3 for a default step of 20,000 cells; square-root scaling for Adam's "
        "larger steps)")
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0)


class TrainSpec(_Model):
    epochs: int = Field(50, ge=1)
    batch_size: int | None = Field(
        None, ge=1, description="instances a step; null: 50, and for a primary entity that "
        "a sparse view gives every cell of its instances, as many as hold about cell_batch "
        "cells")
    entity_batch: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="per-entity batch sizes overriding batch_size"
    )
    primary: str | None = Field(
        None, description="what an epoch runs over: an entity (its instances; a sparse view "
        "on it gives a step every cell of them) or a sparse matrix view (its observed cells, "
        "`cell_batch` a step); default: the entity of the largest sparse view whose rows are "
        "longest, else the entity taking the most steps")
    cell_batch: int | None = Field(
        None, ge=1, description="observed cells a step of a sparse primary takes: a primary "
        "view's cells, or a primary entity's instances enough to hold about this many; "
        "null: 20,000, fewer where an epoch would then take under 50 steps (not under "
        "4,096 cells or 50 instances)")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    tol: float = Field(1e-4, ge=0, description="relative loss change counted as converged")
    patience: int = Field(3, ge=1, description="epochs under tol before stopping")
    validation: float = Field(
        0.0, ge=0, lt=1, description="share of the observed cells of every matrix view with a "
        "factor term kept out of training (after evaluate.holdout's, seeded by `seed`) and "
        "scored after every epoch by the factor term (`val_loss`, `val.VIEW`); tol and "
        "patience then read it (an epoch counts towards patience when it does not improve "
        "the best val_loss by a relative tol), the best epoch's weights are kept "
        "(checkpoint.best.pt) and the embeddings written from them; 0: off")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    strategy: Literal["auto", "single", "ddp"] = Field(
        "auto", description="single: this process; ddp: one of the processes a launcher "
        "started (`mmfuse train --nproc N`, torchrun), gradients averaged by "
        "DistributedDataParallel, gloo on the CPU, nccl on CUDA; auto: ddp when started by "
        "a launcher, else single")
    balance: bool = Field(
        False, description="divide each loss term by its running mean, so views on very "
        "different scales pull alike (the reported loss stays the plain sum)")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for torch (default: torch's choice); results are "
        "repeatable to the bit only for the same thread count")
    callbacks: list[str] = Field(default_factory=list)


def _repeats_can_vary(value: int, info: ValidationInfo) -> int:
    if value > 1 and info.data.get("method") == "position":
        raise ValueError(f"repeats: {value} with `method: position`: a position split is the "
                         "same whatever its seed; use method random or stratified, or repeats: 1")
    return value


class SplitSpec(_Model):
    """How instances with a target value are split into train and test."""

    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of instances in test")
    seed: Seed = Field(0, description="seed of the random / stratified split")
    method: Literal["random", "stratified", "position"] | None = Field(
        None, description="random | stratified (class proportions kept; multilabel: "
        "by each instance's rarest label) | position (the last instances are the test split); "
        "default: stratified for classification and multilabel targets, random for regression")
    repeats: Annotated[int, Field(ge=1), AfterValidator(_repeats_can_vary)] = Field(
        1, description="splits every target is scored on (split r seeded seed + r): the "
        "evaluation gives each metric's mean over them, and with 2 or more its sample std "
        "(`metrics_std`, `floor_std`, `baselines_std`); not with method position")


#: Which probe does which task.
PROBE_TASKS = {
    "random_forest": {"classification", "regression", "multilabel"},
    "logistic": {"classification", "multilabel"},
    "linear": {"regression"},
    "ridge": {"regression"},
    "mlp": {"classification", "regression"},
}


class TargetSpec(_Model):
    """A downstream target: values of one entity predicted by a probe from its features."""

    entity: str = Field(..., description="entity whose instances carry the values")
    path: SpecPath = Field(..., description=".npy or text file, one value per instance; "
                           "multilabel: an n × L 0/1 .npy (a row with NaN is missing)")
    task: Literal["classification", "regression", "multilabel"]
    probe: Literal["random_forest", "logistic", "linear", "ridge", "mlp"]
    params: Params

    @model_validator(mode="after")
    def _probe_fits_task(self) -> TargetSpec:
        if self.task not in PROBE_TASKS[self.probe]:
            raise ValueError(f"probe {self.probe!r} does not do {self.task}")
        return self


class HoldoutSpec(_Model):
    """Cells of matrix views kept out of training, to measure how well they are predicted."""

    views: list[str] = Field(..., min_length=1, description="matrix views with a factor term "
                             "whose cells are held out")
    fraction: float = Field(0.2, gt=0, lt=1, description="share of each view's observed cells "
                            "(or of its rows with cells, `by: rows`) held out")
    seed: Seed = Field(0, description="seed of the split")
    by: Literal["cells", "rows"] = Field(
        "cells", description="cells: observed cells at random; rows: every cell of a random "
        "share of rows (new rows: the cold-start case)")
    k: int = Field(10, ge=1, description="cut-off of the ranking metrics (bernoulli views)")


class EvaluateSpec(_Model):
    """Probes on the learnt representations, beside the trivial floor and raw-view baselines;
    held-out cells of matrix views, beside the classic completion baselines."""

    split: SplitSpec = Field(default_factory=SplitSpec)
    targets: dict[str, TargetSpec] = Field(default_factory=dict)
    holdout: HoldoutSpec | None = None
    baselines: Literal["auto", "none"] | list[str] = Field(
        "auto", description="views whose raw data is probed too, as a baseline: auto (every "
        "view touching the target's entity), none, or a list of view names; with two or more, "
        "also `concat` (all of them joined)")
    baseline_dim: int = Field(
        50, gt=0, description="baseline features wider than this are reduced by a PCA fit on "
        "the train split")
    ablation: bool = Field(
        True, description="per target whose entity gets codes from two or more views, the "
        "embedding recomputed without each view (its codes zeroed in the fusion) and probed "
        "again, beside the raw baseline of the other views unless baselines is none "
        "(`targets.T.ablation`)")

    @model_validator(mode="after")
    def _something_to_evaluate(self) -> EvaluateSpec:
        if not self.targets and self.holdout is None:
            raise ValueError("give `targets` (probes on the embeddings) or `holdout` (held-out "
                             "cells), or both")
        return self


class DatasetSpec(_Model):
    name: str = Field(..., description="a registered dataset (`mmfuse plugins`)")
    root: SpecPath
    params: Params


Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")]


class Spec(_Model):
    # a name, not a path: its default run folder is runs/NAME
    name: str = Field(..., pattern=r"^[^/\\\x00-\x1f.][^/\\\x00-\x1f]*$",
                      description="the run's name (its default folder: runs/NAME); no path "
                      "separators, not starting with a dot")
    seed: Seed = 0
    base_dir: SpecPath | None = Field(
        None, description="folder that readers resolve relative params against "
        "(default: the spec's folder; recorded so a run's resolved spec finds them)")
    dataset: DatasetSpec | None = None
    entities: dict[Name, EntitySpec] = Field(..., min_length=1)
    views: dict[Name, ViewSpec] = Field(..., min_length=1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec | None = None

    _source: SpecSource | None = PrivateAttr(default=None)

    @classmethod
    def from_dict(cls, data: Any, base_dir: Path | str | None = None, *,
                  source: str = "<dict>") -> Spec:
        """A spec from plain data (what a spec file holds), relative paths taken against
        ``base_dir`` (default: the working directory).  Raises :class:`SpecError` listing
        every problem at its field, ``<dict> views.cover.rows: ...`` (``source`` names
        where the data came from)."""
        return validate(data, SpecSource(source), Path(base_dir or Path.cwd()).resolve())

    def issue(self, loc: Loc, message: str) -> SpecIssue:
        """A :class:`SpecIssue` at ``loc``, with the file and line it came from."""
        return (self._source or SpecSource("<spec>")).issue(loc, message)

    def shown(self, path: Path | str) -> str:
        """``path`` as a message shows it: relative to the spec's folder when it lies
        there (``m.npy``), else as it is."""
        return _relative(str(path), str(self.base_dir or ""))

    def scale_of(self, view: str, sparse: bool) -> Literal["none", "standard"]:
        """The view's ``scale`` with ``auto`` resolved: standard for a dense gaussian matrix
        view under a preset that standardises (mmfuse), else none."""
        from mmfuse.presets import PRESETS

        v = self.views[view]
        if v.scale != "auto":
            return v.scale
        standard = (PRESETS[self.model.preset].scale == "standard" and not v.is_tensor
                    and not sparse and v.likelihood.type == "gaussian")
        return "standard" if standard else "none"

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """Hash of the whole resolved spec."""
        return _hash(self.dump())

    def digest_model(self) -> str:
        """Hash of what a checkpoint depends on: not what a resume may change (epochs, the
        stopping rule, the learning rate, device, evaluation), nor where the project folder
        lies (paths are taken relative to ``base_dir``)."""
        d = _relative(self.dump(), str(self.base_dir or ""))
        evaluate = d.pop("evaluate", None) or {}
        if evaluate.get("holdout"):  # held-out cells change the training data
            d["holdout"] = evaluate["holdout"]
        d.pop("base_dir", None)
        for key in ("epochs", "tol", "patience", "device", "precision", "compile", "callbacks",
                    "threads", "strategy"):
            d["train"].pop(key, None)
        d["train"]["optimizer"].pop("lr", None)
        return _hash(d)


def _relative(data: Any, base: str) -> Any:
    """``data`` with every path under ``base`` written relative to it."""
    if isinstance(data, dict):
        return {k: _relative(v, base) for k, v in data.items()}
    if isinstance(data, list):
        return [_relative(v, base) for v in data]
    if base and isinstance(data, str) and data.startswith(base.rstrip("/") + "/"):
        return data[len(base.rstrip("/")) + 1:]
    return data


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SpecSource:
    """Where each field of a spec came from: file lines, or a ``--set`` override."""

    file: str
    lines: dict[Loc, int] = field(default_factory=dict)
    overrides: set[Loc] = field(default_factory=set)
    #: problems found while parsing (duplicate keys, ...), reported with validation's
    pending: list[SpecIssue] = field(default_factory=list)

    def issue(self, loc: Loc, message: str) -> SpecIssue:
        if any(loc[:n] in self.overrides for n in range(len(loc) + 1)):
            return SpecIssue(loc, message, file="--set")
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return SpecIssue(loc, message, file=self.file, line=self.lines[loc[:n]])
        return SpecIssue(loc, message, file=self.file)


# --------------------------------------------------------------------------- YAML → dict

#: A spec is a small file: anything larger is a mistake (a data file given as the spec).
MAX_BYTES = 1 << 20
#: Values a spec may expand to, aliases counted at every use (a "billion laughs" bomb stops
#: here in well under a second), and how deeply they may nest.
MAX_NODES = 100_000
MAX_DEPTH = 64
_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0


class _TooBig(Exception):
    def __init__(self, message: str, line: int):
        self.message, self.line = message, line


def _construct(node: yaml.Node, loc: Loc, src: SpecSource, parents: frozenset[int],
               budget: _Budget) -> Any:
    """Plain data from a YAML node, recording the line of every key and list item."""
    line = node.start_mark.line + 1
    if id(node) in parents:
        src.pending.append(SpecIssue(loc, "recursive YAML alias", src.file, line))
        return None
    budget.nodes += 1
    if budget.nodes > MAX_NODES:
        raise _TooBig(f"the spec expands to more than {MAX_NODES:,} values (an alias used "
                      "many times over?); a spec is a small file", line)
    if len(parents) >= MAX_DEPTH:
        raise _TooBig(f"values nested more than {MAX_DEPTH} levels deep", line)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        src.pending.append(SpecIssue(loc, f"malformed YAML: tag {node.tag!r} is not allowed "
                                     "in a spec", src.file, line))
        return None
    parents = parents | {id(node)}
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                msg = "keys must be plain names, not lists or mappings"
                src.pending.append(SpecIssue(loc, msg, src.file, key_node.start_mark.line + 1))
                continue
            key = key_node.value
            src.lines[(*loc, key)] = key_node.start_mark.line + 1
            if key in out:
                src.pending.append(src.issue((*loc, key), "duplicate key"))
            out[key] = _construct(value_node, (*loc, key), src, parents, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            src.lines[(*loc, i)] = item.start_mark.line + 1
            items.append(_construct(item, (*loc, i), src, parents, budget))
        return items
    try:
        return _LOADER.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        src.pending.append(SpecIssue(loc, f"malformed YAML: {problem}", src.file, line))
        return None


_LOADER = yaml.SafeLoader("")


def parse_yaml(text: str, file: str) -> tuple[Any, SpecSource]:
    """Parse YAML into plain data plus the line of every field."""
    src = SpecSource(file)
    if len(text) > MAX_BYTES:
        raise SpecError([SpecIssue((), f"{len(text):,} characters: too large for a spec "
                                   f"(at most {MAX_BYTES:,}); is it a data file?", file)])
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise SpecError([SpecIssue((), "malformed YAML: values nested too deeply", file)]
                        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None:
            problem += f" ({context} at line {context_mark.line + 1})"
        issue = SpecIssue((), f"malformed YAML: {problem}", file=file, line=line)
        raise SpecError([issue]) from None
    if node is None:
        return {}, src
    try:
        return _construct(node, (), src, frozenset(), _Budget()), src
    except _TooBig as exc:
        raise SpecError([SpecIssue((), exc.message, file, exc.line)]) from None


def apply_override(data: dict[str, Any], assignment: str, src: SpecSource) -> None:
    """Apply one ``--set key.path=value`` (the value is parsed as YAML)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise SpecError([SpecIssue((), f"--set {assignment!r}: expected key.path=value", "--set")])
    loc = tuple(key.strip().split("."))
    if not all(part.strip() for part in loc):
        raise SpecError([SpecIssue((), f"--set {assignment!r}: an empty name in the key "
                                   "path (expected key.path=value)", "--set")])
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node: Any = data
    for i, part in enumerate(loc[:-1]):
        nxt = node.get(part) if isinstance(node, dict) else None
        if not isinstance(nxt, dict):
            if nxt is not None:
                raise SpecError([SpecIssue(loc[: i + 1], "--set: not a mapping", "--set")])
            nxt = node[part] = {}
        node = nxt
    node[loc[-1]] = value
    src.overrides.add(loc)


# --------------------------------------------------------------------------- validation


def _unwrap(tp: Any) -> Any:
    """Strip Optional/Annotated to reach the model or container type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
            if len(args) != 1:
                return tp
        else:
            return tp


def _fields_at(loc: Loc) -> list[str] | None:
    """Field names of the spec model found at ``loc`` (for 'unknown key' messages)."""
    tp: Any = Spec
    parts = list(loc)
    while parts:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            f = tp.model_fields.get(str(parts.pop(0)))
            if f is None:
                return None
            tp = f.annotation
        elif typing.get_origin(tp) is dict:
            parts.pop(0)
            tp = typing.get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return None


def _issue_from_pydantic(err: Any, src: SpecSource) -> SpecIssue:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        known = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known or [], n=1, cutoff=0.6)
        msg = "unknown key" + (f"; did you mean {close[0]!r}?" if close else "")
        msg += f"{';' * (not close)} known: {', '.join(known)}" if known else ""
        return src.issue(loc, msg)
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return src.issue(loc, msg)


def _without(data: Any, locs: list[Loc]) -> Any:
    """A copy of ``data`` without the keys at ``locs``; None where that would drop a whole
    entity or view, or a loc is not a key path of ``data``."""
    data = copy.deepcopy(data)
    for loc in locs:
        if not loc or (loc[0] in ("entities", "views") and len(loc) < 3):
            return None
        node = data
        for part in loc[:-1]:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        if not isinstance(node, dict) or loc[-1] not in node:
            return None
        del node[loc[-1]]
    return data


def validate(data: Any, src: SpecSource, base_dir: Path) -> Spec:
    """Validate parsed data; raise one :class:`SpecError` with every parse and field issue."""
    if not isinstance(data, dict):
        msg = "a spec is a YAML mapping (name:, entities:, views:, ...)"
        raise SpecError([*src.pending, src.issue((), msg)])
    try:
        spec = Spec.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        issues = [_issue_from_pydantic(e, src) for e in exc.errors()]
        error = SpecError([*src.pending, *issues])
        if all(e["type"] != "missing" for e in exc.errors()):
            rest = _without(data, [tuple(e["loc"]) for e in exc.errors()])
            if rest is not None:
                error.attempt = lambda: validate(rest, replace(src, pending=[]), base_dir)
        raise error from None
    if src.pending:
        raise SpecError(src.pending)
    if spec.base_dir is None:
        spec.base_dir = base_dir.resolve()
    spec._source = src
    return spec


def load_spec(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read, override and validate a spec file; raise :class:`SpecError` listing every issue."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        issue = SpecIssue((), f"cannot read spec: {exc.strerror or exc}", str(path))
        raise SpecError([issue]) from None
    if len(raw) > MAX_BYTES:
        raise SpecError([SpecIssue((), f"larger than {MAX_BYTES:,} bytes: too large for a "
                                   "spec; is it a data file?", str(path))])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        issue = SpecIssue((), f"not UTF-8 text (byte {raw[exc.start:exc.start + 1]!r}); a "
                          "spec is UTF-8: save it as UTF-8", str(path), line)
        raise SpecError([issue]) from None
    data, src = parse_yaml(text, str(path))
    if isinstance(data, dict):
        for assignment in overrides:
            apply_override(data, assignment, src)
    return validate(data, src, path.resolve().parent)
