"""twistd glue: ``twistd -n sipgate-proxy --config etc/sipgate-proxy.toml``."""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from .config import ConfigError, load_config


class Options(usage.Options):
    optParameters = [
        ["config", "c", "etc/sipgate-proxy.toml", "Path to the TOML config file."],
    ]

    def postOptions(self) -> None:
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as error:
            raise SystemExit(f"sipgate-proxy: config error: {error}") from None


def makeService(options: Options) -> Any:
    from twisted.internet import reactor

    from .service import ProxyService

    config = options["loaded"]
    try:
        return ProxyService(config, reactor, install_signals=True)
    except ConfigError as error:
        # one line naming file, key and what was expected; no usage dump
        raise SystemExit(f"sipgate-proxy: config error: {error.with_path(config.path)}") from None
