"""Finding router factories: the package's own and operators' plugin files."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from twisted.plugin import IPlugin, getPlugins
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

import twisted.plugins

from ..config import ConfigError, RouterTable
from ..interfaces import IRouter, IRouterFactory
from .chain import RoutingChain


def _check_directory(directory: str) -> types.ModuleType:
    """Import every plugin file of ``directory`` so errors name the file."""
    path = Path(directory)
    if not path.is_dir():
        raise ConfigError("routing.plugin_dirs", f"{directory} is not a directory")
    name = "sipgate_proxy_plugins_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    package = sys.modules.get(name)
    if package is None:
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        # getPlugins reads a package through twisted.python.modules, which wants an existing
        # __init__ file before it lists a package's __path__ (the directory) for modules
        package.__file__ = twisted.plugins.__file__
        sys.modules[name] = package
    for source in sorted(path.glob("*.py")):
        module_name = f"{name}.{source.stem}"
        spec = importlib.util.spec_from_file_location(module_name, source)
        if spec is None or spec.loader is None:
            raise ConfigError("routing.plugin_dirs", f"{source}: cannot be loaded")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise ConfigError("routing.plugin_dirs", f"{source}: failed to import: {error!r}") from None
        sys.modules[module_name] = module
        setattr(package, source.stem, module)  # getPlugins imports it by name: package.module
        for attribute, value in vars(module).items():
            if IPlugin.providedBy(value) and not IRouterFactory.providedBy(value):
                raise ConfigError(
                    "routing.plugin_dirs",
                    f"{source}: {attribute} is a plugin but does not provide IRouterFactory",
                )
    return package


def find_factories(plugin_dirs: Iterable[str] = ()) -> dict[str, Any]:
    """Router factories by name; a name provided twice is an error."""
    found: dict[str, Any] = {}
    sources: list[tuple[types.ModuleType, str]] = [(twisted.plugins, "installed plugins")]
    for directory in plugin_dirs:
        sources.append((_check_directory(directory), directory))
    for package, where in sources:
        for factory in getPlugins(IRouterFactory, package):
            try:
                verifyObject(IRouterFactory, factory)
            except Invalid as error:
                message = f"{where}: {factory!r} is not a router factory: {error}"
                raise ConfigError("routing.plugin_dirs", message) from None
            name = factory.name
            if name in found and found[name] is not factory:
                raise ConfigError("routing.routers", f"router {name!r} is provided twice (also in {where})")
            found[name] = factory
    return found


def build_chain(
    routers: Iterable[str],
    tables: Mapping[str, Mapping[str, Any]],
    plugin_dirs: Iterable[str],
    reactor: Any,
) -> RoutingChain:
    """The configured routers, in order; unknown names stop the start."""
    factories = find_factories(plugin_dirs)
    chain = []
    for name in routers:
        factory = factories.get(name)
        if factory is None:
            known = ", ".join(sorted(factories)) or "none"
            raise ConfigError("routing.routers", f"unknown router {name!r} (known: {known})")
        router = factory.make_router(tables.get(name) or RouterTable({}), reactor)
        try:
            verifyObject(IRouter, router)
        except Invalid as error:
            raise ConfigError(f"routing.{name}", f"the router made by {name!r} is not an IRouter: {error}") from None
        chain.append((name, router))
    return RoutingChain(chain)
