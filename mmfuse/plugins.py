"""The plugin manager and the registries it fills (encoders, readers, datasets, ...).

Built-in plugins (``plugins/``) and third-party ones are found the same way: through the
``mmfuse`` entry-point group.  Each ``mmfuse_register_*`` hook receives a :class:`Register`
bound to the plugin being asked, so every registered name knows which plugin provides it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

import pluggy

from mmfuse import hookspecs
from mmfuse.errors import PluginError

T = TypeVar("T")

KINDS = ("encoders", "readers", "datasets", "likelihoods", "callbacks")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    plugin: str


class Registry(Generic[T]):
    """Named objects of one kind, each with the plugin that provided it."""

    def __init__(self, kind: str):
        self.kind = kind
        self.entries: dict[str, Entry[T]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        return sorted(self.entries)

    def unknown_message(self, name: str) -> str:
        msg = f"unknown {self.kind[:-1]} {name!r}; known: {', '.join(self.names()) or '(none)'}"
        close = difflib.get_close_matches(name, self.names(), n=1)
        return msg + (f" (did you mean {close[0]!r}?)" if close else "")

    def get(self, name: str) -> T:
        if name not in self.entries:
            raise PluginError(self.unknown_message(name))
        return self.entries[name].obj


class Register:
    """What a ``mmfuse_register_*`` hook receives: ``register.add(name, obj)``."""

    def __init__(self, registry: Registry[Any], plugin: str):
        self._registry = registry
        self._plugin = plugin

    def add(self, name: str, obj: Any) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {self._plugin!r}: {self._registry.kind} need a name")
        if name in self._registry.entries:
            other = self._registry.entries[name].plugin
            raise PluginError(
                f"{self._registry.kind[:-1]} {name!r} is registered twice: "
                f"by plugin {other!r} and by plugin {self._plugin!r}"
            )
        self._registry.entries[name] = Entry(name, obj, self._plugin)


@dataclass(frozen=True)
class Plugins:
    """Everything registered: one registry per kind, and the pluggy manager."""

    manager: pluggy.PluginManager
    encoders: Registry[Any]
    readers: Registry[Any]
    datasets: Registry[Any]
    likelihoods: Registry[Any]
    callbacks: Registry[Any]

    def registry(self, kind: str) -> Registry[Any]:
        return getattr(self, kind)


def make_manager(extra: list[object] | None = None) -> pluggy.PluginManager:
    """A plugin manager with every plugin of the ``mmfuse`` entry-point group (and ``extra``)."""
    pm = pluggy.PluginManager("mmfuse")
    pm.add_hookspecs(hookspecs)
    try:
        pm.load_setuptools_entrypoints("mmfuse")
    except Exception as exc:  # a broken third-party plugin must not look like an mmfuse bug
        raise PluginError(f"could not load an mmfuse plugin: {exc}") from exc
    try:
        for plugin in extra or []:
            pm.register(plugin)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    return pm


def collect(pm: pluggy.PluginManager) -> Plugins:
    """Ask every plugin to register its objects."""
    registries = {kind: Registry[Any](kind) for kind in KINDS}
    for kind, registry in registries.items():
        caller = getattr(pm.hook, f"mmfuse_register_{kind}")
        for impl in caller.get_hookimpls():
            try:
                impl.function(register=Register(registry, impl.plugin_name))
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in mmfuse_register_{kind}: {exc}"
                ) from exc
    return Plugins(manager=pm, **registries)


@cache
def get_plugins() -> Plugins:
    """The process-wide plugins (loaded once).  Tests call ``get_plugins.cache_clear()``."""
    return collect(make_manager())
