"""Digest credentials: HA1 computation, lookup by (username, realm, algorithm), the TOML
users file (HA1 values or a plaintext password) and the errors it reports."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from sipgate_proxy.config import ConfigError
from sipgate_proxy.registrar.credentials import (
    Credentials,
    UserCredentials,
    compute_ha1,
    hash_hex,
    load_credentials,
    parse_credentials,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "users-example.toml"

MD5_A = hashlib.md5(b"alice:example.com:secret").hexdigest()
SHA_A = hashlib.sha256(b"alice:example.com:secret").hexdigest()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "users.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_credentials(data, "users.toml")
    return info.value


def test_compute_ha1_md5_and_sha256() -> None:
    """HA1 is H(username:realm:password) as lowercase hex, for MD5 and SHA-256."""
    assert compute_ha1("alice", "example.com", "secret", "MD5") == MD5_A
    assert compute_ha1("alice", "example.com", "secret", "SHA-256") == SHA_A
    assert compute_ha1("alice", "example.com", "secret", "sha-256") == SHA_A


def test_hash_hex_rejects_unknown_algorithm() -> None:
    """An algorithm other than MD5 or SHA-256 is a ValueError, not a silent fallback."""
    with pytest.raises(ValueError):
        hash_hex("SHA-512-256", "x")


def test_lookup_by_user_realm_and_algorithm() -> None:
    """Lookups need username and realm to match exactly; the algorithm picks the HA1,
    in any case, and a -sess variant uses its base algorithm's HA1."""
    store = Credentials([UserCredentials("alice", "example.com", {"MD5": MD5_A, "SHA-256": SHA_A})])
    assert store.ha1("alice", "example.com", "MD5") == MD5_A
    assert store.ha1("alice", "example.com", "sha-256") == SHA_A
    assert store.ha1("alice", "example.com", "MD5-sess") == MD5_A
    assert store.ha1("alice", "example.com", "SHA-256-SESS") == SHA_A
    assert store.ha1("Alice", "example.com", "MD5") is None
    assert store.ha1("alice", "example.org", "MD5") is None
    assert store.ha1("bob", "example.com", "MD5") is None
    assert ("alice", "example.com") in store
    assert len(store) == 1


def test_lookup_of_an_algorithm_not_stored() -> None:
    """A user stored with an MD5 HA1 only has no SHA-256 HA1: None, as for an unknown user."""
    store = Credentials([UserCredentials("alice", "example.com", {"MD5": MD5_A})])
    assert store.ha1("alice", "example.com", "SHA-256") is None
    assert store.algorithms("alice", "example.com") == {"MD5"}
    assert store.algorithms("nobody", "example.com") == frozenset()


def test_example_file_loads_and_matches_its_documented_passwords() -> None:
    """etc/users-example.toml loads; its HA1 values are those of the passwords its comments name."""
    store = load_credentials(EXAMPLE)
    assert len(store) == 2
    assert store.notes == ()
    for user in ("alice", "bob"):
        password = f"{user}-example-password"
        for algorithm in ("MD5", "SHA-256"):
            assert store.ha1(user, "example.com", algorithm) == compute_ha1(user, "example.com", password, algorithm)


def test_file_with_ha1_values(tmp_path: Path) -> None:
    """HA1 values load as given (upper-case hex is lower-cased); either one may be absent."""
    path = write(
        tmp_path,
        f'[[users]]\nusername = "alice"\nrealm = "example.com"\nha1_md5 = "{MD5_A.upper()}"\n'
        f'[[users]]\nusername = "alice"\nrealm = "example.org"\nha1_sha256 = "{SHA_A}"\n',
    )
    store = load_credentials(path)
    assert store.ha1("alice", "example.com", "MD5") == MD5_A
    assert store.ha1("alice", "example.com", "SHA-256") is None
    assert store.ha1("alice", "example.org", "SHA-256") == SHA_A
    assert store.notes == ()


def test_plaintext_password_computes_both_ha1_and_leaves_a_note(tmp_path: Path) -> None:
    """A plaintext password gives both HA1 values and a note naming the user, for a warning."""
    path = write(tmp_path, '[[users]]\nusername = "alice"\nrealm = "example.com"\npassword = "secret"\n')
    store = load_credentials(path)
    assert store.ha1("alice", "example.com", "MD5") == MD5_A
    assert store.ha1("alice", "example.com", "SHA-256") == SHA_A
    assert len(store.notes) == 1
    assert "users[0]" in store.notes[0] and "alice" in store.notes[0] and "plaintext" in store.notes[0]


def test_ha1_is_preferred_over_the_password() -> None:
    """With both, a given HA1 wins; the password only fills in the algorithms not given."""
    other = "0" * 32
    store = parse_credentials(
        {"users": [{"username": "alice", "realm": "example.com", "password": "secret", "ha1_md5": other}]}
    )
    assert store.ha1("alice", "example.com", "MD5") == other
    assert store.ha1("alice", "example.com", "SHA-256") == SHA_A


def test_empty_file_has_no_users(tmp_path: Path) -> None:
    """A file without [[users]] is valid and knows nobody."""
    store = load_credentials(write(tmp_path, "# nobody yet\n"))
    assert len(store) == 0
    assert store.ha1("alice", "example.com", "MD5") is None


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"users": {"username": "alice"}}, "users"),
        ({"users": ["alice"]}, "users[0]"),
        ({"user": []}, "user"),
        ({"users": [{"realm": "example.com", "ha1_md5": MD5_A}]}, "users[0].username"),
        ({"users": [{"username": "", "realm": "example.com", "ha1_md5": MD5_A}]}, "users[0].username"),
        ({"users": [{"username": "alice", "ha1_md5": MD5_A}]}, "users[0].realm"),
        ({"users": [{"username": "alice", "realm": 5, "ha1_md5": MD5_A}]}, "users[0].realm"),
        ({"users": [{"username": "alice", "realm": "example.com"}]}, "users[0]"),
        ({"users": [{"username": "alice", "realm": "example.com", "ha1_md5": MD5_A[:-1]}]}, "users[0].ha1_md5"),
        ({"users": [{"username": "alice", "realm": "example.com", "ha1_md5": SHA_A}]}, "users[0].ha1_md5"),
        ({"users": [{"username": "alice", "realm": "example.com", "ha1_md5": 12}]}, "users[0].ha1_md5"),
        ({"users": [{"username": "alice", "realm": "example.com", "password": 1234}]}, "users[0].password"),
        ({"users": [{"username": "alice", "realm": "example.com", "pasword": "x"}]}, "users[0].pasword"),
    ],
)
def test_invalid_entries_name_their_key(data: dict[str, Any], key: str) -> None:
    """Each kind of bad entry is a ConfigError naming the file and the offending key."""
    error = error_for(data)
    assert error.key == key
    assert error.path == "users.toml"
    assert str(error).startswith(f"users.toml: {key}: ")


def test_bad_sha256_ha1_in_the_fourth_user_names_users_3() -> None:
    """Keys count users from zero: the fourth entry's bad ha1_sha256 is users[3].ha1_sha256."""
    users = [{"username": f"u{i}", "realm": "example.com", "ha1_sha256": SHA_A} for i in range(4)]
    users[3]["ha1_sha256"] = "z" * 64
    error = error_for({"users": users})
    assert error.key == "users[3].ha1_sha256"
    assert "64 hex digits" in error.message


def test_duplicate_user_in_realm_is_an_error() -> None:
    """The same username twice in one realm is refused (which one would win is unclear);
    the same username in two realms is fine."""
    entry = {"username": "alice", "realm": "example.com", "ha1_md5": MD5_A}
    error = error_for({"users": [entry, dict(entry)]})
    assert error.key == "users[1].username"
    store = parse_credentials({"users": [entry, dict(entry, realm="example.org")]})
    assert len(store) == 2


def test_unreadable_and_malformed_files_name_the_path(tmp_path: Path) -> None:
    """A missing file or invalid TOML is a ConfigError that names the file."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_credentials(missing)
    assert info.value.path == str(missing)
    bad = write(tmp_path, "[[users]\nusername = \n")
    with pytest.raises(ConfigError) as info:
        load_credentials(bad)
    assert info.value.path == str(bad)
    assert "TOML" in info.value.message


def test_file_errors_carry_the_path(tmp_path: Path) -> None:
    """An entry error found while loading a file names that file."""
    path = write(tmp_path, '[[users]]\nusername = "alice"\nrealm = "example.com"\nha1_md5 = "xyz"\n')
    with pytest.raises(ConfigError) as info:
        load_credentials(path)
    assert info.value.path == str(path)
    assert info.value.key == "users[0].ha1_md5"
