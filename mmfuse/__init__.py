"""mmfuse: learn entity representations jointly from any collection of matrices and tensors.

The Python API (each name is imported on first use, so ``import mmfuse`` stays cheap)::

    import mmfuse

    spec = mmfuse.load_spec("specs/emoji.yaml")        # or mmfuse.Spec.from_dict({...})
    run = mmfuse.train(spec, out="runs/emoji")         # a Run
    run = mmfuse.Run.open("runs/emoji")                # ... or a finished one
    run.embeddings("emoji")                            # DataFrame indexed by id
    run.evaluation                                     # evaluation.json, or None
    run.embed("emoji", {"image": new_images, "text": new_rows})

    from mmfuse import FusionEmbedder                  # the scikit-learn estimator
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``@mmfuse.hookimpl``.
hookimpl = pluggy.HookimplMarker("mmfuse")

#: Public name → the module that defines it (imported on first access).
_LAZY = {
    "FusionEmbedder": "mmfuse.estimator",
    "Run": "mmfuse.trained",
    "train": "mmfuse.trained",
    "Spec": "mmfuse.spec",
    "load_spec": "mmfuse.spec",
    "SpecError": "mmfuse.errors",
    "MmfuseError": "mmfuse.errors",
}

__all__ = ["FusionEmbedder", "MmfuseError", "Run", "Spec", "SpecError", "__version__",
           "hookimpl", "load_spec", "train"]

if TYPE_CHECKING:
    from mmfuse.errors import MmfuseError, SpecError
    from mmfuse.estimator import FusionEmbedder
    from mmfuse.spec import Spec, load_spec
    from mmfuse.trained import Run, train


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmfuse' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
