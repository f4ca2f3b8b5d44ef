"""Digest credentials: HA1 values by (username, realm) and algorithm, loaded from TOML.

HA1 = H(username ":" realm ":" password), with H the hex digest of MD5 or SHA-256
(RFC 3261 section 22.4, RFC 7616 section 3.4.2, RFC 8760). Storing HA1 instead of the
password means a leaked file does not give the password away for other realms, but an HA1
still lets its holder authenticate in its own realm: keep the file private.

The file format::

    [[users]]
    username = "alice"
    realm = "example.com"
    ha1_md5 = "<32 hex digits>"
    ha1_sha256 = "<64 hex digits>"

Either HA1 or both may be given. A plaintext ``password`` is accepted too; the missing HA1
values are then computed at load and the user is named in :attr:`Credentials.notes`, so the
caller can log a warning.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sipgate_proxy.config import ConfigError

MD5 = "MD5"
SHA256 = "SHA-256"
#: The digest algorithms an HA1 can be stored for, strongest first.
ALGORITHMS: tuple[str, ...] = (SHA256, MD5)

_HASHES = {MD5: hashlib.md5, SHA256: hashlib.sha256}
#: config key for each algorithm's HA1, and its length in hex digits
_HA1_KEYS = {MD5: ("ha1_md5", 32), SHA256: ("ha1_sha256", 64)}
_ALLOWED_KEYS = frozenset({"username", "realm", "password", "ha1_md5", "ha1_sha256"})
_HEX = frozenset("0123456789abcdef")


def hash_hex(algorithm: str, data: str) -> str:
    """H(data) for a digest algorithm name ("MD5" or "SHA-256", any case), as lowercase hex."""
    try:
        hasher = _HASHES[algorithm.upper()]
    except KeyError:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}") from None
    return hasher(data.encode("utf-8")).hexdigest()


def compute_ha1(username: str, realm: str, password: str, algorithm: str) -> str:
    """HA1 = H(username ":" realm ":" password) for ``algorithm`` ("MD5" or "SHA-256")."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


class CredentialStore(Protocol):
    """Where an authenticator looks up HA1 values.

    Synchronous on purpose: the in-memory store answers at once. A database-backed store
    will need its own (Deferred) variant of the lookup.
    """

    def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """The HA1 of ``username`` in ``realm`` for ``algorithm``, or None if unknown."""
        ...


@dataclass(frozen=True)
class UserCredentials:
    """One user's HA1 values in one realm, keyed by algorithm name ("MD5", "SHA-256")."""

    username: str
    realm: str
    ha1: Mapping[str, str] = field(default_factory=dict)


class Credentials:
    """An in-memory :class:`CredentialStore` keyed by (username, realm).

    Usernames and realms compare exactly (RFC 7616 leaves both case-sensitive).
    ``notes`` holds human-readable remarks worth a warning, such as plaintext passwords
    found in the file.
    """

    def __init__(self, users: Iterable[UserCredentials] = (), notes: Iterable[str] = ()) -> None:
        self._table: dict[tuple[str, str], Mapping[str, str]] = {}
        for user in users:
            self._table[(user.username, user.realm)] = {k.upper(): v.lower() for k, v in user.ha1.items()}
        self.notes: tuple[str, ...] = tuple(notes)

    def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """The HA1 of ``username`` in ``realm`` for ``algorithm``, or None.

        ``-sess`` variants share the HA1 of their base algorithm.
        """
        entry = self._table.get((username, realm))
        if entry is None:
            return None
        base = algorithm.upper().removesuffix("-SESS")
        return entry.get(base)

    def algorithms(self, username: str, realm: str) -> frozenset[str]:
        """The algorithms an HA1 is stored for, empty for an unknown user."""
        return frozenset(self._table.get((username, realm), ()))

    def __len__(self) -> int:
        return len(self._table)

    def users(self) -> list[tuple[str, str]]:
        """Every (username, realm) the store knows."""
        return list(self._table)

    def __contains__(self, key: object) -> bool:
        return key in self._table


def parse_credentials(data: Mapping[str, Any], path: str | None = None) -> Credentials:
    """Build :class:`Credentials` from a parsed TOML document; errors name ``path`` and the key."""
    try:
        return _parse(data)
    except ConfigError as exc:
        raise exc.with_path(path) if path else exc from None


def load_credentials(path: str | Path) -> Credentials:
    """Read a credentials TOML file (see the module docstring for the format)."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError("users", f"cannot read the credentials file: {exc.strerror or exc}", name) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("users", f"not valid TOML: {exc}", name) from None
    return parse_credentials(data, name)


def _parse(data: Mapping[str, Any]) -> Credentials:
    unknown = sorted(set(data) - {"users"})
    if unknown:
        raise ConfigError(unknown[0], "unknown key; the file holds [[users]] tables only")
    raw = data.get("users", [])
    if not isinstance(raw, list):
        raise ConfigError("users", "expected an array of tables ([[users]])")
    users: list[UserCredentials] = []
    notes: list[str] = []
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(raw):
        key = f"users[{index}]"
        user, plaintext = _user(item, key)
        if (user.username, user.realm) in seen:
            raise ConfigError(f"{key}.username", f"user {user.username!r} in realm {user.realm!r} is listed twice")
        seen.add((user.username, user.realm))
        users.append(user)
        if plaintext:
            notes.append(
                f"{key}: user {user.username!r} in realm {user.realm!r} has a plaintext password; "
                "store ha1_md5/ha1_sha256 instead"
            )
    return Credentials(users, notes)


def _user(item: Any, key: str) -> tuple[UserCredentials, bool]:
    if not isinstance(item, Mapping):
        raise ConfigError(key, "expected a table with username, realm and ha1_md5/ha1_sha256")
    unknown = sorted(set(item) - _ALLOWED_KEYS)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", f"unknown key; expected one of {', '.join(sorted(_ALLOWED_KEYS))}")
    username = _text(item, key, "username")
    realm = _text(item, key, "realm")
    password = item.get("password")
    if password is not None and not isinstance(password, str):
        raise ConfigError(f"{key}.password", f"expected a string, got {type(password).__name__}")
    ha1: dict[str, str] = {}
    for algorithm, (name, digits) in _HA1_KEYS.items():
        value = item.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) != digits or not set(value.lower()) <= _HEX:
            raise ConfigError(f"{key}.{name}", f"expected {digits} hex digits (the {algorithm} HA1)")
        ha1[algorithm] = value.lower()
    if not ha1 and password is None:
        raise ConfigError(key, "needs ha1_md5, ha1_sha256 or password")
    if password is not None:
        for algorithm in _HA1_KEYS:
            if algorithm not in ha1:
                ha1[algorithm] = compute_ha1(username, realm, password, algorithm)
    return UserCredentials(username, realm, ha1), password is not None


def _text(item: Mapping[str, Any], key: str, name: str) -> str:
    value = item.get(name)
    if value is None:
        raise ConfigError(f"{key}.{name}", "missing; expected a non-empty string")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}.{name}", "expected a non-empty string")
    return value
