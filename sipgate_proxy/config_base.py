"""What every config reader shares: the error that names file and key, and a
table reader that tracks which keys were used."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any


class ConfigError(Exception):
    """A config value is wrong: ``file: key: what was expected``."""

    def __init__(self, key: str, message: str, path: str | None = None) -> None:
        self.key = key
        self.message = message
        self.path = path
        super().__init__(self._text())

    def _text(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{where}{self.key}: {self.message}"

    def with_path(self, path: str) -> ConfigError:
        """The same error, naming ``path`` as the file."""
        return ConfigError(self.key, self.message, path)


def type_name(value: object) -> str:
    """How a config error names the type of a wrong value ("a boolean")."""
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class Table:
    """Reads one TOML table, tracking which keys were used."""

    def __init__(self, data: Mapping[str, Any], prefix: str) -> None:
        self.data = data
        self.prefix = prefix
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def _get(self, name: str) -> Any:
        self.used.add(name)
        return self.data.get(name)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"expected true or false, got {type_name(value)}")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), f"expected an integer, got {type_name(value)}")
        if not low <= value <= high:
            raise ConfigError(self.key(name), f"expected an integer from {low} to {high}, got {value}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.key(name), f"expected a number of seconds, got {type_name(value)}")
        if not low <= value <= high:
            raise ConfigError(self.key(name), f"expected a number from {low} to {high}, got {value}")
        return float(value)

    def string(self, name: str, default: str | None, choices: tuple[str, ...] = ()) -> str | None:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ConfigError(self.key(name), f"expected a string, got {type_name(value)}")
        if choices and value not in choices:
            raise ConfigError(self.key(name), f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(name), "expected a list of strings")
        return tuple(value)

    def table(self, name: str) -> Table:
        value = self._get(name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(self.key(name), f"expected a table, got {type_name(value)}")
        return Table(value, self.key(name))

    def tables(self, name: str, expected_list: str, expected_item: str) -> list[Table] | None:
        """The tables of the array of tables ``[[name]]`` (None when absent); each item
        that is not a table, or a value that is not an array, raises with the message given."""
        value = self._get(name)
        if value is None:
            return None
        if not isinstance(value, list):
            raise ConfigError(self.key(name), expected_list)
        result = []
        for index, item in enumerate(value):
            key = f"{self.key(name)}[{index}]"
            if not isinstance(item, dict):
                raise ConfigError(key, expected_item)
            result.append(Table(item, key))
        return result

    def finish(self) -> None:
        for name in self.data:
            if name not in self.used:
                raise ConfigError(self.key(name), "unknown key")


def ip_address(value: str, key: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(key, f"expected an IP address, got {value!r}") from None
