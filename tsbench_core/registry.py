"""The plugin host: a pluggy manager that collects model, dataset, pruner, runtime and quantizer plugins.

Built-ins (``BUILTIN_PLUGINS``) are registered through the same hooks as third-party packages, which are found
through the entry-point group ``tsbench``. ``TSBENCH_DISABLE_PLUGIN_AUTOLOAD=1`` stops entry-point loading;
``TSBENCH_PLUGINS=a,b`` loads only the entry points (or distributions) named;
``TSBENCH_BLOCK_PLUGINS=a,b`` blocks plugin modules by name, built-ins included (as pytest's ``-p no:NAME``): a
built-in by its module (``plugins.pruners``), a third-party package by its entry-point or distribution name.
"""

from __future__ import annotations

import difflib
import importlib
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from tsbench_core import hookspecs
from tsbench_core.errors import PluginError, UserError
from tsbench_core.protocols import KINDS, PROTOCOL_OF_KIND, Availability, availability_of

ENTRY_POINT_GROUP = "tsbench"
BUILTIN_PLUGINS = (
    "plugins.datasets",
    "plugins.models",
    "plugins.pruners",
    "sparse_runtime.plugin",
    "sparse_runtime.quantizers",
)
HOOK_OF_KIND = {
    "model": "tsbench_register_models",
    "dataset": "tsbench_register_datasets",
    "pruner": "tsbench_register_pruners",
    "runtime": "tsbench_register_runtimes",
    "quantizer": "tsbench_register_quantizers",
}


@dataclass(frozen=True)
class PluginRecord:
    """One registered plugin and where it came from."""

    kind: str
    name: str
    plugin: Any
    distribution: str
    version: str
    source: str  # module or entry point that registered it

    def availability(self) -> Availability:
        return availability_of(self.plugin)


@dataclass(frozen=True)
class LoadError:
    """A plugin package that failed to load; it is skipped and reported."""

    entry_point: str
    distribution: str
    error: str


@dataclass
class Registry:
    """Every plugin by kind and name. ``models``/``datasets``/``pruners``/``runtimes``/``quantizers``: name -> plugin
    (``records``: name -> ``PluginRecord``)."""

    records: dict[str, dict[str, PluginRecord]] = field(default_factory=lambda: {k: {} for k in KINDS})
    load_errors: list[LoadError] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # plugin modules not registered, by the name that blocked them

    @property
    def models(self) -> dict[str, Any]:
        return self._plugins("model")

    @property
    def datasets(self) -> dict[str, Any]:
        return self._plugins("dataset")

    @property
    def pruners(self) -> dict[str, Any]:
        return self._plugins("pruner")

    @property
    def runtimes(self) -> dict[str, Any]:
        return self._plugins("runtime")

    @property
    def quantizers(self) -> dict[str, Any]:
        return self._plugins("quantizer")

    def _plugins(self, kind: str) -> dict[str, Any]:
        return {name: rec.plugin for name, rec in self.records[kind].items()}

    def get(self, kind: str, name: str) -> Any:
        """The plugin, or a ``UserError`` listing the valid names and the closest match."""
        try:
            return self.records[kind][name].plugin
        except KeyError:
            raise UserError(unknown_name_message(kind, name, sorted(self.records[kind]))) from None

    def all_records(self) -> list[PluginRecord]:
        return [rec for kind in KINDS for rec in self.records[kind].values()]

    def add(self, record: PluginRecord) -> None:
        existing = self.records[record.kind].get(record.name)
        if existing is not None:
            raise PluginError(
                f"two {record.kind} plugins are named {record.name!r}: one from {existing.distribution} "
                f"({existing.source}), one from {record.distribution} ({record.source}); uninstall one or "
                f"restrict loading with TSBENCH_PLUGINS"
            )
        self.records[record.kind][record.name] = record


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (valid: {', '.join(valid) or 'none installed'})"


def protocol_members(protocol: type) -> list[str]:
    """The public attributes and methods a plugin protocol asks for (its own and those of its bases)."""
    names: set[str] = set()
    for base in protocol.__mro__:
        if base is object or not getattr(base, "_is_protocol", False):
            continue
        names.update(n for n in getattr(base, "__annotations__", {}) if not n.startswith("_"))
        names.update(n for n, v in vars(base).items() if callable(v) and not n.startswith("_"))
    return sorted(names)


def _check_plugin(kind: str, plugin: Any, source: str) -> None:
    protocol = PROTOCOL_OF_KIND[kind]
    missing = [member for member in protocol_members(protocol) if not hasattr(plugin, member)]
    if missing or not isinstance(plugin, protocol):
        name = getattr(plugin, "name", None)
        cls = type(plugin)
        named = f"{name!r} ({cls.__module__}.{cls.__qualname__})" if isinstance(name, str) else \
            f"of class {cls.__module__}.{cls.__qualname__}"
        raise PluginError(f"{source}: the {kind} plugin {named} does not implement {protocol.__name__}: "
                          f"missing {', '.join(missing) or 'members it requires'}")


def _own_distribution() -> tuple[str, str]:
    try:
        return "tsbench", metadata.version("tsbench")
    except metadata.PackageNotFoundError:
        return "tsbench", "0+unknown"


def _entry_point_filter() -> set[str] | None:
    raw = os.environ.get("TSBENCH_PLUGINS", "").strip()
    return {part.strip() for part in raw.split(",") if part.strip()} if raw else None


def _blocked_names() -> set[str]:
    raw = os.environ.get("TSBENCH_BLOCK_PLUGINS", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _autoload_disabled() -> bool:
    return os.environ.get("TSBENCH_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() in {"1", "true", "yes"}


def _entry_point_modules(errors: list[LoadError], blocked: set[str],
                         blocked_found: list[str]) -> list[tuple[ModuleType | Any, str, str, str]]:
    """Load the ``tsbench`` entry points of installed distributions: (object, dist, version, source)."""
    if _autoload_disabled():
        return []
    wanted = _entry_point_filter()
    loaded = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        version = ep.dist.version if ep.dist is not None else "?"
        if wanted is not None and ep.name not in wanted and dist not in wanted:
            continue
        source = f"entry point {ep.name} = {ep.value}"
        hit = {ep.name, dist} & blocked
        if hit:  # never imported: a blocked package may be the broken one
            blocked_found.append(f"{sorted(hit)[0]} ({source})")
            continue
        try:
            loaded.append((ep.load(), dist, version, source))
        except Exception as exc:
            errors.append(LoadError(f"{ep.name} = {ep.value}", dist, _one_line(exc)))
    return loaded


def _one_line(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {frame[0].filename}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


def load_plugins(*, builtins: tuple[str, ...] = BUILTIN_PLUGINS, extra: tuple[Any, ...] = ()) -> Registry:
    """Collect every plugin: built-ins, ``extra`` objects (for tests and embedding), then entry points."""
    registry = Registry()
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    own_dist, own_version = _own_distribution()
    blocked = _blocked_names()

    sources: list[tuple[Any, str, str, str]] = []
    for module_name in builtins:
        if module_name in blocked:
            registry.blocked.append(f"{module_name} (built-in)")
            continue
        sources.append((importlib.import_module(module_name), own_dist, own_version, f"built-in {module_name}"))
    for obj in extra:
        sources.append((obj, getattr(obj, "__name__", "extra"), "", f"registered object {obj!r}"))
    sources.extend(_entry_point_modules(registry.load_errors, blocked, registry.blocked))

    registered = []
    for obj, dist, version, source in sources:
        try:
            pm.register(obj, name=source)
        except Exception as exc:
            registry.load_errors.append(LoadError(source, dist, _one_line(exc)))
            continue
        registered.append((obj, dist, version, source))
    for obj, dist, version, source in registered:
        for kind in KINDS:
            _collect(pm, registry, kind, obj, dist, version, source)
    return registry


def _collect(pm: pluggy.PluginManager, registry: Registry, kind: str, obj: Any, dist: str, version: str,
             source: str) -> None:
    """Call one kind's hook through pluggy for one plugin module only, so each plugin keeps its source."""
    others = [plugin for plugin in pm.get_plugins() if plugin is not obj]
    hook = pm.subset_hook_caller(HOOK_OF_KIND[kind], remove_plugins=others)
    collected: list[Any] = []
    try:
        hook(register=collected.append)
        for plugin in collected:
            _check_plugin(kind, plugin, source)
    except Exception as exc:
        registry.load_errors.append(LoadError(source, dist, _one_line(exc)))
        return
    for plugin in collected:
        registry.add(PluginRecord(kind, plugin.name, plugin, dist, version, source))
