"""mmfuse: learn entity representations jointly from any collection of matrices and tensors."""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``@mmfuse.hookimpl``.
hookimpl = pluggy.HookimplMarker("mmfuse")

__all__ = ["__version__", "hookimpl"]
