"""The plugin manager and the registries it fills (encoders, readers, datasets, ...).

Built-in plugins (``plugins/``) and third-party ones are found the same way: through the
``mmfuse`` entry-point group.  Each ``mmfuse_register_*`` hook receives a :class:`Register`
bound to the plugin being asked, so every registered name knows which plugin provides it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Generic, TypeVar

import pluggy

from mmfuse import hookspecs
from mmfuse.errors import PluginError

T = TypeVar("T")

KINDS = ("encoders", "readers", "datasets", "likelihoods", "callbacks")


class Entry(Generic[T]):
    """A registered object: ``target`` is the object itself, or its import path
    (``"package.module:attribute"``), imported when first used — so that listing plugins
    or starting the command line imports no plugin's heavy dependencies."""

    def __init__(self, name: str, target: T | str, plugin: str, kind: str = "objects"):
        self.name, self.target, self.plugin, self.kind = name, target, plugin, kind
        self._obj: T | None = None if isinstance(target, str) else target

    @property
    def obj(self) -> T:
        if self._obj is None:
            self._obj = _resolve(self)
        return self._obj


def _resolve(entry: Entry[Any]) -> Any:
    """The object at ``entry.target`` (``module:attribute``): a :class:`PluginError`
    naming the plugin where it cannot be imported."""
    module, _, attr = str(entry.target).partition(":")
    what = f"{entry.kind[:-1]} {entry.name!r} of plugin {entry.plugin!r} ({entry.target})"
    try:
        obj = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except Exception as exc:  # a broken plugin: its own message, never an internal error
        raise PluginError(f"{what} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    return obj


class Registry(Generic[T]):
    """Named objects of one kind, each with the plugin that provided it."""

    def __init__(self, kind: str):
        self.kind = kind
        self.entries: dict[str, Entry[T]] = {}
        self.broken: dict[str, str] = {}  # plugins left out (set by collect)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        return sorted(self.entries)

    def unknown_message(self, name: str) -> str:
        msg = f"unknown {self.kind[:-1]} {name!r}; known: {', '.join(self.names()) or '(none)'}"
        close = difflib.get_close_matches(name, self.names(), n=1)
        msg += f" (did you mean {close[0]!r}?)" if close else ""
        if self.broken:  # what is unknown may be what a broken plugin provides
            left = ", ".join(repr(p) for p in sorted(self.broken))
            msg += (f"; plugin {left} could not be loaded and may be the one that provides it "
                    "(`mmfuse plugins` says why)")
        return msg

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
        """Register ``obj`` as ``name``; ``obj`` may be an import path
        ``"package.module:attribute"``, imported when first used (keep a plugin's
        ``__init__`` light: the command line loads every plugin to start)."""
        if isinstance(obj, str) and ":" not in obj:
            raise PluginError(f"plugin {self._plugin!r}: {self._registry.kind[:-1]} {name!r}: "
                              f"{obj!r} is not an import path 'package.module:attribute'")
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {self._plugin!r}: {self._registry.kind} need a name")
        if name in self._registry.entries:
            other = self._registry.entries[name].plugin
            raise PluginError(
                f"{self._registry.kind[:-1]} {name!r} is registered twice: "
                f"by plugin {other!r} and by plugin {self._plugin!r}"
            )
        self._registry.entries[name] = Entry(name, obj, self._plugin, self._registry.kind)


@dataclass(frozen=True)
class Plugins:
    """Everything registered: one registry per kind, and the pluggy manager; ``broken``:
    the plugins left out (name → what went wrong: it failed to import or to register)."""

    manager: pluggy.PluginManager
    encoders: Registry[Any]
    readers: Registry[Any]
    datasets: Registry[Any]
    likelihoods: Registry[Any]
    callbacks: Registry[Any]
    broken: dict[str, str] = field(default_factory=dict)

    def registry(self, kind: str) -> Registry[Any]:
        return getattr(self, kind)

    def distribution(self, plugin: str) -> str | None:
        """``name version`` of the package that installed ``plugin`` (None: not installed
        through an entry point, e.g. registered by code)."""
        return getattr(self.manager, "distributions", {}).get(plugin)


class Manager(pluggy.PluginManager):
    """pluggy's manager, loading the ``mmfuse`` entry points one at a time: a plugin that
    fails to import (or declares a hook mmfuse does not have) is left out and noted in
    ``broken``, so that one broken package does not break every command."""

    def __init__(self) -> None:
        super().__init__("mmfuse")
        self.add_hookspecs(hookspecs)
        self.broken: dict[str, str] = {}
        self.distributions: dict[str, str] = {}  # plugin name → "package version"

    def load_entry_points(self, group: str = "mmfuse") -> None:
        for ep in importlib.metadata.entry_points(group=group):
            if self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else None
            where = f" (package {dist})" if dist else ""
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name)
            except Exception as exc:  # ImportError, SyntaxError, a bad hook signature, ...
                self.broken[ep.name] = (f"cannot be loaded from {ep.value}{where}: "
                                        f"{type(exc).__name__}: {exc}")
                if self.get_plugin(ep.name) is not None:
                    self.unregister(name=ep.name)
                continue
            if dist:
                self.distributions[ep.name] = dist
        while True:  # a hook that no spec declares (a misspelt name): that plugin is left out
            try:
                self.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.get_name(exc.plugin)
                self.unregister(exc.plugin)
                self.broken[name] = str(exc)


def make_manager(extra: list[object] | None = None) -> Manager:
    """A plugin manager with every plugin of the ``mmfuse`` entry-point group (broken ones
    left out, in ``broken``) and ``extra`` (registered by code: a mistake there is an
    error)."""
    pm = Manager()
    pm.load_entry_points()
    try:
        for plugin in extra or []:
            pm.register(plugin)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    return pm


def collect(pm: pluggy.PluginManager) -> Plugins:
    """Ask every plugin to register its objects.  A plugin whose hook fails is left out
    (its names withdrawn from every registry, the plugin unregistered) and noted in
    ``broken``; a name registered twice is an error naming both plugins."""
    registries = {kind: Registry[Any](kind) for kind in KINDS}
    broken: dict[str, str] = dict(getattr(pm, "broken", {}))
    for kind, registry in registries.items():
        caller = getattr(pm.hook, f"mmfuse_register_{kind}")
        for impl in caller.get_hookimpls():
            if impl.plugin_name in broken:
                continue
            try:
                impl.function(register=Register(registry, impl.plugin_name))
            except PluginError:
                raise
            except Exception as exc:
                broken[impl.plugin_name] = (f"failed in mmfuse_register_{kind}: "
                                            f"{type(exc).__name__}: {exc}")
    for name in broken:
        for registry in registries.values():
            for entry in [e for e in registry.entries.values() if e.plugin == name]:
                del registry.entries[entry.name]
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)
    for registry in registries.values():
        registry.broken = broken
    return Plugins(manager=pm, broken=broken, **registries)


@cache
def get_plugins() -> Plugins:
    """The process-wide plugins (loaded once).  Tests call ``get_plugins.cache_clear()``."""
    return collect(make_manager())
