"""What a plugin's registered objects look like: the types hooks receive and return.

Built-in plugins in ``plugins/`` implement exactly these; a third-party plugin does the same.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    import scipy.sparse
    import torch

    from mmfuse.spec import ViewSpec


@dataclass(frozen=True)
class ViewSide:
    """One side of one view, as seen by an encoder: what ``mmfuse_default_encoder`` receives.

    ``side`` is ``"row"`` (a matrix row: one instance of the row entity), ``"col"`` (a matrix
    column), ``"tensor"`` (the tensor of one row instance) or ``"entity"`` (the concatenation
    of all matrix sides of an entity, preset ``dcmf``).  ``in_shape`` excludes the batch axis.
    """

    view: str
    side: str
    in_shape: tuple[int, ...]
    spec: ViewSpec | None = None
    #: ``"dense"`` (a float tensor) or ``"sparse"`` (the stored cells of a sparse view's rows,
    #: a :class:`SparseBatch`); pick an encoder that accepts it (:func:`accepts`)
    input: str = "dense"


@dataclass
class ViewArray:
    """What a reader returns.

    ``data`` is a dense array (memory-mapped where possible, any dtype; NaN cells of a float
    array are missing) or a ``scipy.sparse`` matrix (cells not stored are missing).
    ``mask`` (bool, True = observed, same shape as a dense ``data``) is optional.
    ``row_ids`` / ``col_ids``, when the source knows them, are checked against the ids of the
    view's entities, so that views can never be silently misaligned.
    ``info`` is recorded in the run manifest (featurizer parameters, cache file, ...).
    ``state`` (a featurizer's): what its :func:`featurizer` needs to featurize new raw input
    as it featurized this one (a vocabulary, word vectors, idf weights, ...): numpy arrays of
    numbers, bools or str (never objects) and JSON values (str, numbers, bools, lists,
    dicts).  mmfuse keeps it in the run folder (arrays in ``inputs/VIEW.npz``, the rest in
    ``inputs.json``), so that a run embeds new raw instances without its training data.
    """

    data: np.ndarray | scipy.sparse.spmatrix | scipy.sparse.sparray
    mask: np.ndarray | None = None
    row_ids: list[str] | None = None
    col_ids: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = None


@dataclass(frozen=True)
class ReadContext:
    """What a reader may need besides its path and params."""

    view: str
    row_ids: list[str] | None
    col_ids: list[str] | None
    spec_dir: Path


#: ``reader(path, params, context) -> ViewArray``; raise ``ValueError``/``OSError`` with a
#: clear message on bad input: mmfuse reports it at the view's ``source`` field, naming the
#: file (whatever else a reader raises is reported there too, its cause kept for ``--debug``).
#: Declare its params with :func:`reader_params`.
Reader = Callable[[Path | None, Mapping[str, Any], ReadContext], ViewArray]


class ReaderParams(BaseModel):
    """Base of a reader's params model (:func:`reader_params`): types are strict (a YAML
    ``true`` is a bool, ``"5"`` is no number), numbers finite; a field's default is the
    param's default."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


#: Where a problem with a params mapping is (keys under ``params``) and what it is.
ParamProblem = tuple[tuple[str | int, ...], str]


def check_params(model: type[BaseModel], params: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], list[ParamProblem]]:
    """``params`` validated by ``model``: the values with every default filled in (a plain
    dict), and every problem at its key: an unknown param (with the closest known one), a
    wrong type, a value out of range."""
    known = sorted(model.model_fields)
    problems: list[ParamProblem] = []
    for key in params:
        if key not in model.model_fields:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(((key,), f"unknown params [{key!r}]; known: {known}{hint}"))
    given = {k: v for k, v in params.items() if k in model.model_fields}
    try:
        values = model.model_validate(given)
    except ValidationError as exc:
        by_key: dict[tuple[str | int, ...], list[str]] = {}
        for err in exc.errors():
            loc = tuple(err["loc"][:1])  # () : the params as a whole
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] != "value_error" and loc:
                msg += f"; got {err['input']!r}"
            if msg not in by_key.setdefault(loc, []):
                by_key[loc].append(msg)
        problems += [(loc, " or ".join(msgs)) for loc, msgs in by_key.items()]
        return dict(given), problems
    return values.model_dump(), problems


def reader_params(model: type[BaseModel]) -> Callable[[Reader], Reader]:
    """Declare a reader's params: ``@reader_params(NpyParams)`` above ``def read_npy(path,
    params, ctx)``, ``NpyParams`` a pydantic model (subclass :class:`ReaderParams`).  mmfuse
    checks a spec's ``source.params`` against it with the rest of the spec: an unknown param
    (with "did you mean") or a wrong type is a spec error at its line.  The reader receives
    the params validated, every default filled in, as a plain dict; called directly with bad
    params, it raises a ``ValueError`` naming every problem."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"reader_params() takes a pydantic model class; got {model!r}")

    def mark(reader: Reader) -> Reader:
        @functools.wraps(reader)
        def checked(path: Path | None, params: Mapping[str, Any], ctx: ReadContext
                    ) -> ViewArray:
            values, problems = check_params(model, params)
            if problems:
                raise ValueError("; ".join(
                    f"{'.'.join(map(str, ('params', *loc)))}: {msg}" for loc, msg in problems))
            return reader(path, values, ctx)

        checked.params = model  # type: ignore[attr-defined]
        return checked

    return mark


def declared_params(reader: Any) -> type[BaseModel] | None:
    """The params model a reader declared with :func:`reader_params` (None: undeclared; it
    then receives its params as written and checks them itself)."""
    model = getattr(reader, "params", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


#: ``featurize(path, params, state, context) -> ViewArray`` (or an array): new raw input
#: (a file or folder of the kind the reader reads: new documents, one a line, for a text
#: featurizer) featurized with what the reader learnt in training — ``state``, its
#: :attr:`ViewArray.state` as the run folder kept it (arrays and JSON values; ``{}`` when it
#: kept none) — and ``params``, the view's validated ``source.params``.  One row per new
#: instance, in the input's order, in the reader's output space; ``context.row_ids`` are the
#: new instances' ids where the user gave them (``--ids``), else None.  Raise ``ValueError``
#: with a clear message on bad input.  Declare it with :func:`featurizer`.
Featurize = Callable[[Path, Mapping[str, Any], Mapping[str, Any], ReadContext],
                     "ViewArray | np.ndarray"]


def featurizer(featurize: Featurize) -> Callable[[Reader], Reader]:
    """Declare how a reader featurizes new raw input: ``@featurizer(featurize_word2vec)``
    above ``def read_word2vec(path, params, ctx)`` (with or without :func:`reader_params`,
    in either order).  ``mmfuse embed RUN --data VIEW=FILE`` (and ``predict --data``,
    ``Run.embed``) then takes for such a view a raw FILE (any file but a ``.npy``/``.npz``,
    which stays an array in the view's input space), featurized by ``featurize`` with the
    ``state`` the reader returned in training.  A reader without it takes new data as
    arrays only."""
    if not callable(featurize):
        raise TypeError(f"featurizer() takes a function; got {featurize!r}")

    def mark(reader: Reader) -> Reader:
        reader.featurize = featurize  # type: ignore[attr-defined]
        return reader

    return mark


def declared_featurizer(reader: Any) -> Featurize | None:
    """The function a reader declared with :func:`featurizer` (None: it featurizes no new
    raw input)."""
    featurize = getattr(reader, "featurize", None)
    return featurize if callable(featurize) else None


@dataclass
class SparseBatch:
    """What an encoder that accepts sparse inputs receives: the stored cells of ``b`` rows of
    a sparse view (or columns, as rows of its transpose) in CSR parts: the cells of row
    ``k`` are ``col[crow[k]:crow[k + 1]]`` with ``values`` alike.  ``x.mm(table)`` is the
    product ``X @ table``, differentiable in the table, at the cost of the stored cells.

    In training, a row with more stored cells than its view's ``encoder_cells`` holds a
    uniform sample of them (with replacement), each value multiplied by
    ``totals / sampled``, so that a sum over the row's cells is an unbiased estimate of the
    sum over all of them; ``totals`` is the row's true number of stored cells (normalise by
    it, not by ``counts()``).  When embedding, every row holds all its cells.
    """

    crow: torch.Tensor  # (b + 1,) long
    col: torch.Tensor  # (nnz,) long
    values: torch.Tensor  # (nnz,) float
    shape: tuple[int, int]  # (b, width)
    totals: torch.Tensor  # (b,) long: stored cells of each row (sampled or not)

    def __len__(self) -> int:
        return self.shape[0]

    def to(self, device: torch.device | str) -> SparseBatch:
        moved = {k: getattr(self, k).to(device, non_blocking=True)
                 for k in ("crow", "col", "values", "totals")}
        return SparseBatch(**moved, shape=self.shape)

    def counts(self) -> torch.Tensor:
        """Cells held per row (b,) (a sample's size for a sampled row; see ``totals``)."""
        return self.crow.diff()

    def cell_rows(self) -> torch.Tensor:
        """The row of each held cell (nnz,)."""
        import torch

        return torch.arange(len(self), device=self.crow.device).repeat_interleave(
            self.counts(), output_size=len(self.values))

    def mm(self, table: torch.Tensor, row_scale: torch.Tensor | None = None,
           sparse_grad: bool = False) -> torch.Tensor:
        """``X @ table``: (b, k) for a (width, k) table, each row's cells times its
        ``row_scale`` where given; differentiable in ``table``; costs the stored cells.
        ``sparse_grad``: the table's gradient is the batch's columns only, as sparse rows
        (for a table declared sparse, e.g. ``nn.EmbeddingBag(..., sparse=True)``, whose
        optimiser then moves only those rows)."""
        from mmfuse.sparse_mm import sparse_mm

        return sparse_mm(self, table, row_scale, sparse_grad)

    def to_dense(self) -> torch.Tensor:
        import torch

        out = torch.zeros(self.shape, dtype=self.values.dtype, device=self.values.device)
        out[self.cell_rows(), self.col] = self.values
        return out


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` whose gradient is the touched rows only, as sparse rows: the
    gather for a table declared ``sparse=True`` (e.g. a per-column output layer read at a
    step's cells), as :meth:`SparseBatch.mm` with ``sparse_grad`` is its product."""
    from mmfuse.sparse_mm import gather_rows as gather

    return gather(table, index)


@runtime_checkable
class Autoencoder(Protocol):
    """What an encoder factory returns: an ``nn.Module`` with these methods.

    ``encode(x)``: ``(b, *in_shape)`` float → ``(b, code_dim)``; for an encoder that accepts
    sparse inputs, ``x`` is a :class:`SparseBatch` of the rows' stored cells.
    ``decode(h)``: ``(b, code_dim)`` → ``(b, *in_shape)`` in the likelihood's natural
    parameter (pre-link: the likelihood applies its own link).
    ``decode_at(h, which, at)`` (encoders that accept sparse inputs): the decoded values of
    cells only, ``(m,)``: output coordinate ``at[k]`` of instance ``which[k]``; its cost is
    the m cells, not ``m × width``.
    """

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, h: torch.Tensor) -> torch.Tensor: ...


#: ``factory(in_shape, code_dim, *, decode, **params) -> Autoencoder``; raise ``ValueError``
#: for an input shape or params it cannot handle.  Decorate it with :func:`accepts` to say
#: which inputs it takes (default: dense only).
EncoderFactory = Callable[..., Autoencoder]

INPUT_KINDS = ("dense", "sparse")


def accepts(*kinds: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Declare the inputs an encoder factory takes: ``@accepts("sparse")``, ``@accepts("dense",
    "sparse")``.  mmfuse gives a sparse view's sides to an encoder that accepts ``sparse``
    (densifying them for a dense-only encoder when they are narrow enough)."""
    unknown = set(kinds) - set(INPUT_KINDS)
    if not kinds or unknown:
        raise ValueError(f"accepts() takes some of {INPUT_KINDS}; got {kinds}")

    def mark(factory: EncoderFactory) -> EncoderFactory:
        factory.inputs = tuple(kinds)  # type: ignore[attr-defined]
        return factory

    return mark


def accepted_inputs(factory: EncoderFactory) -> tuple[str, ...]:
    """The inputs a factory declared with :func:`accepts` (default ``("dense",)``)."""
    return tuple(getattr(factory, "inputs", ("dense",)))


@runtime_checkable
class Likelihood(Protocol):
    """Per-view loss on observed cells and the link from natural parameter to data scale.

    A plugin registers a factory (a class): ``factory(**params)`` makes the likelihood of
    one view from its spec's ``likelihood.params`` (a ``TypeError`` or ``ValueError`` is a
    spec error at that view).  Where it is a :class:`torch.nn.Module`, its parameters (a
    noise scale, a dispersion) are trained with the model and saved in its checkpoint.
    Optional attributes: ``metrics``, the held-out metrics that judge it (default
    ``("rmse", "mae", "r2")``; ``"roc_auc"`` among them makes it a 0/1 likelihood, scored
    against drawn non-links and ranked per row; known: rmse, mae, r2, poisson_deviance,
    roc_auc, auprc); ``learnt() -> dict[str, float]``, its learnt parameters in data units
    (reported after training)."""

    def loss(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Mean negative log-likelihood over observed cells (``mask`` True); a scalar."""
        ...

    def link(self, pred: torch.Tensor) -> torch.Tensor:
        """Map a prediction to the data scale (identity, sigmoid, exp, ...)."""
        ...

    # Optional: ``inverse_link(mean: float) -> float``, the natural parameter of a data-scale
    # mean; mmfuse starts each factor term's intercept there.
    # Optional: ``null_deviance(values: np.ndarray) -> float``, the loss (less that of a
    # perfect fit) of predicting the mean of ``values`` (a sample of the cells a view's terms
    # score); ``model.scale_free`` divides the view's terms by it, so they start near 1.


@runtime_checkable
class Dataset(Protocol):
    """A dataset that prepares a folder of files that specs point at."""

    def ensure(self, root: Path, params: Mapping[str, Any]) -> str:
        """Make sure ``root`` holds the prepared files (preparing them if needed) and return
        one line that tells the user which data this is (real, or a synthetic substitute)."""
        ...


class Callback:
    """Training-loop observer: subclass it and override what you need.  ``trainer`` is a
    :class:`mmfuse.training.Trainer`; ``terms``/``metrics`` map loss term names (``loss``,
    ``view.row``, ``view.factor``, ...) to the step's value / the epoch's mean.  In a job of
    several processes (``train.strategy: ddp``) only rank 0's observers are called: a step's
    terms are rank 0's, an epoch's metrics the mean over every process.  A step's ``terms``
    are read from the device when first looked at (all at once); on an accelerator each
    read waits for the device, so an observer that runs every step should look at them
    only now and then (the progress bar: twice a second)."""

    def on_train_start(self, trainer: Any) -> None:
        pass

    def on_epoch_start(self, trainer: Any, epoch: int, steps: int) -> None:
        pass

    def on_step_end(self, trainer: Any, step: int, terms: Mapping[str, float]) -> None:
        pass

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: Mapping[str, float]) -> None:
        pass

    def on_train_end(self, trainer: Any) -> None:
        pass
