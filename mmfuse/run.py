"""The run folder: resolved spec, manifest, metrics, checkpoint, embeddings, evaluation.

Every file is written atomically (temp file + rename): a run killed at any moment leaves the
previous complete version of each file, never a torn one; a write that fails (a full disk,
no permission) names the file and leaves its previous version too.  Files take the umask's
permissions, as any other program's do.

A training holds the folder's lock (``.lock``) from start to end: a second training into the
same folder is refused while the first runs.  :meth:`RunDir.check_out` is the one place that
decides whether a folder may take a training.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import logging
import os
import pickle
import secrets
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mmfuse.errors import MmfuseError
from mmfuse.spec import Spec, parse_yaml, validate

log = logging.getLogger(__name__)

#: The manifest's ``format``: what makes a folder recognisable as an mmfuse run folder.
FORMAT = "mmfuse-run"
#: What a checkpoint mmfuse writes holds (``spec_digest``: the spec's
#: :meth:`~mmfuse.spec.Spec.digest_model`, what ``--resume`` compares).
CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "stalled", "converged", "history",
                   "world_size", "processes", "spec_digest")
#: What the best epoch's checkpoint holds (``train.validation``; its last checkpoint names
#: the epoch too: ``best_epoch``, ``best_val_loss``).
BEST_KEYS = ("model", "epoch", "val_loss", "spec_digest")
LOCK = ".lock"


class RunFolderError(MmfuseError):
    """A run folder cannot be used (not a folder, someone else's files, in use) or written."""


class RunWriteError(RunFolderError):
    """A file of the run folder could not be written (its previous version is kept)."""


class CheckpointError(MmfuseError):
    """A checkpoint cannot be read, or does not belong to the run's model."""


def _is_temp(name: str) -> bool:
    """A temp file of :func:`atomic_write` (``.NAME.RANDOM.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


def write_error(path: Path, exc: OSError) -> RunWriteError:
    """An OSError while writing ``path`` as a message that says what to do."""
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        why, fix = "the disk is full", "free some space"
    elif code in (errno.EACCES, errno.EPERM):
        why, fix = "permission denied", "make the folder writable or choose another --out"
    elif code == errno.EROFS:
        why, fix = "the file system is read-only", "choose another --out"
    else:
        why, fix = exc.strerror or str(exc), "fix the cause"
    return RunWriteError(f"cannot write {path}: {why}; its previous version, if any, is kept "
                         f"(the last good checkpoint too): {fix}, then resume the run "
                         "(--resume)")


def atomic_write(path: Path, write) -> None:
    """Call ``write(fh)`` on a temp file beside ``path``, then rename it over ``path``.

    The temp file is created with mode 0666 less the umask (as ``open`` does); an OSError
    (a full disk, no permission) becomes a :class:`RunWriteError` naming ``path``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise write_error(path, exc) from exc


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


class RunDir:
    """Paths and readers/writers of one run folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    spec_file = property(lambda self: self.root / "resolved_spec.yaml")
    manifest_file = property(lambda self: self.root / "manifest.json")
    metrics_file = property(lambda self: self.root / "metrics.csv")
    checkpoint_file = property(lambda self: self.root / "checkpoint.pt")
    #: the best epoch's weights (lowest validation loss, ``train.validation``)
    best_checkpoint_file = property(lambda self: self.root / "checkpoint.best.pt")
    evaluation_file = property(lambda self: self.root / "evaluation.json")
    embeddings_dir = property(lambda self: self.root / "embeddings")
    holdout_dir = property(lambda self: self.root / "holdout")
    inputs_file = property(lambda self: self.root / "inputs.json")
    inputs_dir = property(lambda self: self.root / "inputs")
    lock_file = property(lambda self: self.root / LOCK)

    def holdout_file(self, view: str) -> Path:
        """A view's held-out cells (``evaluate.holdout``): rows, cols, values (.npz)."""
        return self.holdout_dir / f"{view}.npz"

    def write_holdout(self, view: str, cells) -> None:
        """A view's held-out cells (:class:`mmfuse.holdout.HeldCells`), written atomically."""
        atomic_write(self.holdout_file(view), lambda fh: np.savez(
            fh, rows=cells.rows, cols=cells.cols, values=cells.values))

    def exists(self) -> bool:
        return self.spec_file.is_file()

    # ------------------------------------------------------------------ taking the folder

    def is_run(self) -> bool:
        """Whether mmfuse wrote this folder: its manifest says so (``format``; before that
        field, the ``versions`` of mmfuse that every manifest records)."""
        try:
            manifest = json.loads(self.manifest_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(manifest, dict) and (
            manifest.get("format") == FORMAT
            or isinstance(manifest.get("versions"), dict) and "mmfuse" in manifest["versions"])

    def check_out(self, resume: bool) -> None:
        """Whether a training may write here (the one place that decides): a new or empty
        folder, or a run folder of mmfuse — with a checkpoint to resume (``resume``), or
        without one (a run stopped before its first epoch ended).  Anything else is refused
        before a file is written."""
        root = self.root
        existing = next(p for p in (root, *root.parents) if p.exists() or p == p.parent)
        if existing.exists() and not existing.is_dir():
            if existing == root:
                raise RunFolderError(f"--out {root} is not a folder (it is a file): choose a "
                                     "new or empty folder")
            raise RunFolderError(f"--out {root} cannot be made: {existing} is a file, not a "
                                 "folder")
        if resume:
            if not self.checkpoint_file.is_file():
                raise RunFolderError(f"nothing to resume: no checkpoint in {root}")
            if not self.is_run():
                raise RunFolderError(f"{root} is not an mmfuse run folder (its manifest.json "
                                     "was not written by mmfuse): nothing to resume")
            return
        if not root.is_dir():
            return
        if self.is_run():
            if self.checkpoint_file.exists():
                raise RunFolderError(f"{root} already holds a run; add --resume to continue "
                                     "it, or choose another --out")
            return
        theirs = sorted(p.name for p in root.iterdir() if p.name != LOCK and not _is_temp(p.name))
        if theirs:
            shown = ", ".join(theirs[:5]) + (f" and {len(theirs) - 5} more" if len(theirs) > 5
                                             else "")
            raise RunFolderError(f"--out {root} is not an mmfuse run folder and not empty (it "
                                 f"holds {shown}): choose a new or empty folder; nothing was "
                                 "written")

    @contextlib.contextmanager
    def claim(self, resume: bool) -> Iterator[None]:
        """Take the folder for a training: checked (:meth:`check_out`), made, locked for
        the block (a second training into it is refused meanwhile) and its stale temp files
        removed (a killed run's)."""
        self.check_out(resume)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise write_error(self.lock_file if self.root.is_dir() else self.root, exc) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                raise RunFolderError(
                    f"{self.root} is in use by another training (process {holder}): wait for "
                    "it to end, or choose another --out") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.check_out(resume)  # again, locked: another training may have just ended
            self.remove_temp_files()
            yield
        finally:
            os.close(fd)  # releases the lock

    def remove_temp_files(self) -> None:
        """Remove the temp files that a killed write left (``.NAME.RANDOM.tmp``)."""
        for folder in (self.root, self.embeddings_dir, self.holdout_dir, self.inputs_dir):
            if folder.is_dir():
                for p in folder.iterdir():
                    if _is_temp(p.name) and p.is_file():
                        log.info("removing the stale temp file %s", p)
                        p.unlink()

    # ------------------------------------------------------------------ spec and manifest

    def write_spec(self, spec: Spec) -> None:
        text = "# resolved by mmfuse: every default filled in, paths absolute\n"
        _write_text(self.spec_file, text + yaml.safe_dump(spec.dump(), sort_keys=False))

    def read_spec(self) -> Spec:
        if not self.exists():
            raise MmfuseError(f"{self.root} is not an mmfuse run folder (no resolved_spec.yaml)")
        data, src = parse_yaml(self.spec_file.read_text(encoding="utf-8"), str(self.spec_file))
        return validate(data, src, self.root)

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        """The manifest, marked as mmfuse's (``format``: see :meth:`is_run`)."""
        text = json.dumps({"format": FORMAT, **manifest}, indent=2, default=str)
        _write_text(self.manifest_file, text + "\n")

    def read_manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_file.read_text()) if self.manifest_file.is_file() else {}

    # ------------------------------------------------------------------ inputs

    def write_inputs(self, description: Mapping[str, Any],
                     arrays: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """What the model needs from its data to embed new instances
        (:mod:`mmfuse.inputs`): ``inputs.json``, and ``inputs/<view>.npz`` per view with
        arrays (written first: ``inputs.json`` names them)."""
        for view, own in arrays.items():
            atomic_write(self.inputs_dir / f"{view}.npz",
                         lambda fh, own=own: np.savez(fh, **own))
        _write_text(self.inputs_file, json.dumps(description, indent=2) + "\n")

    def read_inputs(self) -> dict[str, Any] | None:
        """``inputs.json`` (None: a run folder of an older mmfuse, which kept none)."""
        if not self.inputs_file.is_file():
            return None
        try:
            return json.loads(self.inputs_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"{self.inputs_file} cannot be read ({exc}): restore it from "
                                 "a copy, or train the run again") from exc

    def read_input_arrays(self, view: str) -> dict[str, np.ndarray]:
        """A view's arrays of ``inputs/<view>.npz`` (scaling statistics, featurizer state)."""
        file = self.inputs_dir / f"{view}.npz"
        if not file.is_file():
            raise RunFolderError(f"{file} is missing (inputs.json names it): restore it from a "
                                 "copy of the run folder, or train the run again")
        try:
            with np.load(file, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except Exception as exc:  # damaged, truncated, or holding objects
            raise RunFolderError(f"{file} cannot be read ({type(exc).__name__}: {exc}): "
                                 "restore it from a copy, or train the run again") from exc

    # ------------------------------------------------------------------ metrics

    def write_metrics(self, history: Sequence[Mapping[str, float]]) -> None:
        fields: list[str] = []
        for row in history:
            fields += [k for k in row if k not in fields]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        _write_text(self.metrics_file, buf.getvalue())

    # ------------------------------------------------------------------ checkpoint

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        atomic_write(self.checkpoint_file, lambda fh: torch.save(dict(state), fh))

    def save_best(self, state: Mapping[str, Any]) -> None:
        """The best epoch's checkpoint (``train.validation``): its weights (``model``), its
        ``epoch``, ``val_loss`` and ``spec_digest``; written after the last checkpoint."""
        atomic_write(self.best_checkpoint_file, lambda fh: torch.save(dict(state), fh))

    def best_epoch_saved(self) -> int | None:
        """The epoch ``checkpoint.best.pt`` holds (None: none, or not readable)."""
        try:
            return int(self._read(self.best_checkpoint_file, "cpu", BEST_KEYS, "")["epoch"])
        except (CheckpointError, TypeError, ValueError):
            return None

    def _read(self, file: Path, map_location: str | torch.device, keys: Sequence[str],
              redo: str) -> dict[str, Any]:
        """A checkpoint file mmfuse wrote, holding ``keys`` and tensors and plain data only
        (``weights_only``); its weights under the model's own names (not a compiled
        wrapper's, ``_orig_mod.``)."""
        if not file.is_file():
            raise CheckpointError(f"no checkpoint in {self.root} (no epoch of its training "
                                  "ended)")
        if file.stat().st_size == 0:
            raise CheckpointError(f"checkpoint {file} is empty: {redo}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.load(file, map_location=map_location, weights_only=True)
        except Exception as exc:
            if isinstance(exc, pickle.UnpicklingError) and zipfile.is_zipfile(file):
                raise CheckpointError(
                    f"{file} holds Python objects besides tensors and plain data; mmfuse does "
                    "not load them (that could run any code): it is not a checkpoint mmfuse "
                    f"wrote; {redo}") from exc
            raise CheckpointError(f"checkpoint {file} cannot be read (corrupt, truncated, or "
                                  f"not a checkpoint): {redo}") from exc
        missing = ([k for k in keys if k not in state] if isinstance(state, dict)
                   else list(keys))
        weights = state.get("model") if isinstance(state, dict) else None
        if missing or not isinstance(weights, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
            what = "a mapping" if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(
                f"{file} is not an mmfuse checkpoint (a torch file holding {what}"
                + (f" without {', '.join(missing)}" if missing else "") + f"): {redo}")
        state["model"] = {k.replace("_orig_mod.", ""): v for k, v in weights.items()}
        return state

    def _best_weights(self, state: dict[str, Any], map_location: str | torch.device,
                      redo: str) -> dict[str, torch.Tensor]:
        """The weights of the epoch the last checkpoint names as the best, checked."""
        file, epoch = self.best_checkpoint_file, int(state["best_epoch"])
        if not file.is_file():
            raise CheckpointError(
                f"{file} is missing: the checkpoint names epoch {epoch} as the best "
                "(train.validation), and the run's embeddings were written from its weights; "
                f"{redo}")
        best = self._read(file, map_location, BEST_KEYS, redo)
        if best["spec_digest"] != state["spec_digest"] or best["epoch"] != epoch:
            raise CheckpointError(
                f"{file} holds epoch {best['epoch']} of "
                + ("this run" if best["spec_digest"] == state["spec_digest"] else
                   "another model") + f", and the checkpoint names epoch {epoch} as the best: "
                f"it does not belong with it; {redo}")
        return best["model"]

    def load_checkpoint(self, map_location: str | torch.device = "cpu", *,
                        spec: Spec | None = None, model: torch.nn.Module | None = None,
                        resume: bool = False, last: bool = False) -> dict[str, Any]:
        """The checkpoint (the one loader: resume, embed, predict, evaluate), checked: a
        file mmfuse wrote, holding tensors and plain data only (``weights_only``); written
        for ``spec`` (its :meth:`~mmfuse.spec.Spec.digest_model`), when given; its weights
        loaded into ``model``, when given (``resume``: the messages are for ``--resume``).
        Weights saved under a compiled wrapper's names (``_orig_mod.``) are taken under the
        model's own.

        Its weights (``model``) are the run's model: the best epoch's
        (``checkpoint.best.pt``) where ``train.validation`` kept one, as the embeddings
        were written from them; the last epoch's to resume (``resume``) or when ``last``."""
        file = self.checkpoint_file
        redo = ("restore it from a copy, or train again into a new --out (or without "
                "--resume after deleting it)")
        state = self._read(file, map_location, CHECKPOINT_KEYS, redo)
        if not (resume or last) and state.get("best_epoch") is not None:
            state["model"] = self._best_weights(state, map_location, redo)
        if spec is not None and state["spec_digest"] != spec.digest_model():
            raise CheckpointError(
                f"the checkpoint {file} was trained with a different model, data or seed "
                "than this spec: resume with the run's own resolved_spec.yaml (a resume may "
                "change the epochs, learning rate, stopping rule, device and callbacks, "
                "nothing else)" if resume else
                f"the checkpoint {file} was trained with a different model, data or seed "
                f"than {self.spec_file} says (copied from another run?): {redo}")
        if model is not None:
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as exc:
                lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
                raise CheckpointError(
                    f"{file} holds another model's weights ({lines[0] if lines else exc}): "
                    f"it does not belong to this run; {redo}") from exc
        return state

    # ------------------------------------------------------------------ embeddings

    def write_embeddings(self, entity: str, z: np.ndarray, ids: Sequence[str]) -> Path:
        path = self.embeddings_dir / f"{entity}.npy"
        atomic_write(path, lambda fh: np.save(fh, z))
        _write_text(self.embeddings_dir / f"{entity}.ids.txt", "".join(f"{i}\n" for i in ids))
        return path

    def read_embeddings(self, entity: str) -> tuple[np.ndarray, list[str]]:
        path = self.embeddings_dir / f"{entity}.npy"
        if not path.is_file():
            known = sorted(p.stem for p in self.embeddings_dir.glob("*.npy"))
            raise MmfuseError(f"no embeddings for entity {entity!r} in {self.root}; "
                              f"known: {', '.join(known) or '(none)'}")
        ids = (self.embeddings_dir / f"{entity}.ids.txt").read_text(encoding="utf-8").splitlines()
        return np.load(path), ids

    def write_evaluation(self, result: Mapping[str, Any]) -> None:
        _write_text(self.evaluation_file, json.dumps(result, indent=2) + "\n")
