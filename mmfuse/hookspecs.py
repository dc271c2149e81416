"""The hooks an mmfuse plugin can implement (pluggy project name ``mmfuse``).

Every hook is called with keyword arguments.  The ``register_*`` hooks receive a
:class:`mmfuse.plugins.Register`; call ``register.add(name, obj)`` once per thing the plugin
provides.  Names must be unique across all plugins.  What each registered object must look like
is documented in :mod:`mmfuse.plugin_api`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

    from mmfuse.plugin_api import ViewSide
    from mmfuse.plugins import Register

hookspec = pluggy.HookspecMarker("mmfuse")


@hookspec
def mmfuse_register_encoders(register: Register) -> None:
    """Add encoder factories: ``register.add("dense", build_dense)``.

    A factory is called as ``factory(in_shape, code_dim, *, decode, **params)`` and returns an
    :class:`mmfuse.plugin_api.Autoencoder` (an ``nn.Module`` with ``encode`` and ``decode``,
    and ``decode_at`` if it takes sparse rows: declare that with
    :func:`mmfuse.plugin_api.accepts`).
    """


@hookspec(firstresult=True)
def mmfuse_default_encoder(view: ViewSide) -> str | None:
    """Return the encoder name for a view side whose spec says ``encoder: auto``, or None to pass.

    The first plugin that returns a name wins; the built-in choice (rank-3 tensor → ``conv``,
    sparse matrix rows and columns (``view.input == "sparse"``) → ``sparse``, dense ones →
    ``dense``) is registered last.
    """


@hookspec
def mmfuse_register_readers(register: Register) -> None:
    """Add data readers and featurizers: ``register.add("npy", read_npy)``.

    A reader is called as ``reader(path, params, context)`` and returns a
    :class:`mmfuse.plugin_api.ViewArray`.
    """


@hookspec
def mmfuse_register_datasets(register: Register) -> None:
    """Add datasets that can prepare their files: ``register.add("goodreads", Goodreads())``.

    A dataset implements :class:`mmfuse.plugin_api.Dataset`.
    """


@hookspec
def mmfuse_register_likelihoods(register: Register) -> None:
    """Add likelihood factories: ``register.add("gaussian", Gaussian)``, called with each
    view's ``likelihood.params`` to make that view's likelihood.

    A likelihood implements :class:`mmfuse.plugin_api.Likelihood`.
    """


@hookspec
def mmfuse_register_callbacks(register: Register) -> None:
    """Add training-loop observers, selected by name in ``train.callbacks`` of a spec.

    A callback is a class implementing :class:`mmfuse.plugin_api.Callback`; it is instantiated
    once per run with no arguments.
    """


@hookspec
def mmfuse_register_commands(app: typer.Typer) -> None:
    """Add commands or command groups to the ``mmfuse`` CLI (``app.command()(fn)``,
    ``app.add_typer(sub, name=...)``)."""
