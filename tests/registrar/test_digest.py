"""Digest authentication: RFC 7616 / 2617 / 2069 response vectors, stateless nonces,
nonce-count replay, challenge formatting, Authorization parsing, URI matching, and the
Authenticator's decisions (an unknown user and a wrong password look the same)."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest

from sipgate_proxy.registrar import digest
from sipgate_proxy.registrar.credentials import Credentials, UserCredentials, compute_ha1
from sipgate_proxy.registrar.digest import (
    Authenticator,
    DigestResponse,
    NonceCounter,
    NonceFactory,
    challenge,
    parse_authorization,
    uri_matches,
    verify,
)
from sipgate_proxy.sip.errors import SIPError

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000.0

# RFC 7616 section 3.9.1 (with erratum 4495: "Circle of Life", lowercase "of").
RFC_USER = "Mufasa"
RFC_REALM = "http-auth@example.org"
RFC_PASSWORD = "Circle of Life"
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC_URI = "/dir/index.html"
RFC_SHA256_RESPONSE = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
RFC_MD5_RESPONSE = "8ca523f5e9506fed4657c9700eebdbec"


def rfc_response(algorithm: str, response: str) -> DigestResponse:
    return DigestResponse(
        username=RFC_USER,
        realm=RFC_REALM,
        nonce=RFC_NONCE,
        uri=RFC_URI,
        response=response,
        algorithm=algorithm,
        cnonce=RFC_CNONCE,
        opaque=RFC_OPAQUE,
        qop="auth",
        nc="00000001",
    )


def h(algorithm: str, text: str) -> str:
    """The test's own H(), independent of the module under test."""
    name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm.upper().removesuffix("-SESS")]
    return hashlib.new(name, text.encode()).hexdigest()


def client_authorization(
    username: str,
    password: str,
    realm: str,
    nonce: str,
    method: str = "REGISTER",
    uri: str = "sip:example.com",
    algorithm: str = "SHA-256",
    nc: str | None = "00000001",
    cnonce: str = "0a4f113b",
    qop: str | None = "auth",
) -> str:
    """An Authorization value as a UAC would compute it."""
    ha1 = h(algorithm, f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(algorithm, f"{method}:{uri}")
    if qop is None:
        response = h(algorithm, f"{ha1}:{nonce}:{ha2}")
        extra = ""
    else:
        response = h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
        extra = f', qop={qop}, nc={nc}, cnonce="{cnonce}"'
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}{extra}'
    )


# --- RFC vectors -----------------------------------------------------------------------


def test_rfc7616_sha256_example() -> None:
    """RFC 7616 3.9.1: SHA-256 with the RFC's inputs gives the RFC's response 7539...b6c1."""
    ha1 = compute_ha1(RFC_USER, RFC_REALM, RFC_PASSWORD, "SHA-256")
    resp = rfc_response("SHA-256", RFC_SHA256_RESPONSE)
    assert digest.expected_response(resp, "GET", ha1) == RFC_SHA256_RESPONSE
    assert verify(resp, "GET", ha1)


def test_rfc7616_md5_example() -> None:
    """RFC 7616 3.9.1: MD5 with the RFC's inputs gives the RFC's response 8ca5...dbec."""
    ha1 = compute_ha1(RFC_USER, RFC_REALM, RFC_PASSWORD, "MD5")
    resp = rfc_response("MD5", RFC_MD5_RESPONSE)
    assert digest.expected_response(resp, "GET", ha1) == RFC_MD5_RESPONSE
    assert verify(resp, "GET", ha1)


def test_rfc7616_example_header_parses_and_verifies() -> None:
    """The RFC's SHA-256 Authorization header, parsed, verifies against the RFC's password."""
    value = (
        f'Digest username="{RFC_USER}",\r\n realm="{RFC_REALM}",\r\n uri="{RFC_URI}",\r\n'
        f' algorithm=SHA-256,\r\n nonce="{RFC_NONCE}",\r\n nc=00000001,\r\n cnonce="{RFC_CNONCE}",\r\n'
        f' qop=auth,\r\n response="{RFC_SHA256_RESPONSE}",\r\n opaque="{RFC_OPAQUE}"'
    )
    resp = parse_authorization(value)
    assert resp == rfc_response("SHA-256", RFC_SHA256_RESPONSE)
    assert verify(resp, "GET", compute_ha1(RFC_USER, RFC_REALM, RFC_PASSWORD, "SHA-256"))


def test_rfc2617_qop_auth_example() -> None:
    """RFC 2617 3.5 (MD5, qop=auth, "Circle Of Life") verifies: response 6629...4ef1."""
    resp = DigestResponse(
        username="Mufasa",
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        uri="/dir/index.html",
        response="6629fae49393a05397450978507c4ef1",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert verify(resp, "GET", compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life", "MD5"))


def test_rfc2069_legacy_no_qop_example() -> None:
    """Without qop (RFC 2069), response = H(HA1:nonce:HA2); the classic vector 1949...ebea verifies."""
    resp = DigestResponse(
        username="Mufasa",
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        uri="/dir/index.html",
        response="1949323746fe6a43ef61f9606e7febea",
    )
    assert verify(resp, "GET", compute_ha1("Mufasa", "testrealm@host.com", "CircleOfLife", "MD5"))


def test_verify_rejects_wrong_method_uri_password_and_case_insensitive_hex() -> None:
    """Any change of method, uri or password fails; upper-case hex in the response is accepted."""
    ha1 = compute_ha1(RFC_USER, RFC_REALM, RFC_PASSWORD, "SHA-256")
    resp = rfc_response("SHA-256", RFC_SHA256_RESPONSE)
    assert not verify(resp, "POST", ha1)
    assert not verify(rfc_response("SHA-256", RFC_SHA256_RESPONSE.replace("7", "8", 1)), "GET", ha1)
    assert not verify(resp, "GET", compute_ha1(RFC_USER, RFC_REALM, "Circle Of Life", "SHA-256"))
    assert verify(rfc_response("SHA-256", RFC_SHA256_RESPONSE.upper()), "GET", ha1)
    assert not verify(rfc_response("SHA-256", "ä" * 64), "GET", ha1)


@pytest.mark.parametrize("algorithm", ["MD5-SESS", "SHA-256-SESS"])
def test_sess_algorithms(algorithm: str) -> None:
    """-sess variants hash nonce and cnonce into HA1 (RFC 7616 3.4.2); plain HA1 use fails."""
    ha1 = compute_ha1("alice", "example.com", "pw", algorithm.removesuffix("-SESS"))
    sess = h(algorithm, f"{ha1}:n1:c1")
    ha2 = h(algorithm, "REGISTER:sip:example.com")
    good = h(algorithm, f"{sess}:n1:00000001:c1:auth:{ha2}")
    plain = h(algorithm, f"{ha1}:n1:00000001:c1:auth:{ha2}")
    base: dict[str, Any] = {
        "username": "alice",
        "realm": "example.com",
        "nonce": "n1",
        "uri": "sip:example.com",
        "algorithm": algorithm,
        "cnonce": "c1",
        "qop": "auth",
        "nc": "00000001",
    }
    assert verify(DigestResponse(response=good, **base), "REGISTER", ha1)
    assert not verify(DigestResponse(response=plain, **base), "REGISTER", ha1)


def test_auth_int_and_unknown_algorithms_are_refused() -> None:
    """qop=auth-int and algorithms other than MD5/SHA-256(-sess) never verify."""
    ha1 = compute_ha1(RFC_USER, RFC_REALM, RFC_PASSWORD, "MD5")
    good = rfc_response("MD5", RFC_MD5_RESPONSE)
    fields = {k: getattr(good, k) for k in ("username", "realm", "nonce", "uri", "response", "cnonce", "nc")}
    assert not verify(DigestResponse(algorithm="MD5", qop="auth-int", **fields), "GET", ha1, b"body")
    assert not verify(DigestResponse(algorithm="SHA-512-256", qop="auth", **fields), "GET", ha1)


# --- nonces ----------------------------------------------------------------------------


def test_nonce_shape_and_freshness() -> None:
    """A nonce is 43 base64url characters without padding (8+8+16 bytes), new every time,
    and it carries its issue time in the first 8 bytes."""
    factory = NonceFactory(SECRET)
    one, two = factory.make(NOW, "example.com"), factory.make(NOW, "example.com")
    assert one != two
    for nonce in (one, two):
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", nonce)
        raw = base64.urlsafe_b64decode(nonce + "=")
        assert int.from_bytes(raw[:8], "big") == int(NOW)


def test_nonce_ok_until_lifetime_then_stale() -> None:
    """A nonce is ok for `lifetime` seconds, stale after that."""
    factory = NonceFactory(SECRET, lifetime=300.0)
    nonce = factory.make(NOW, "example.com")
    assert factory.check(nonce, NOW, "example.com") == "ok"
    assert factory.check(nonce, NOW + 300.0, "example.com") == "ok"
    assert factory.check(nonce, NOW + 300.5, "example.com") == "stale"
    assert factory.check(nonce, NOW + 86400, "example.com") == "stale"


def test_nonce_from_another_worker_with_the_same_secret() -> None:
    """A second factory (another worker or node) sharing the secret accepts the nonce;
    a factory with another secret calls it invalid."""
    nonce = NonceFactory(SECRET).make(NOW, "example.com")
    assert NonceFactory(SECRET).check(nonce, NOW + 1, "example.com") == "ok"
    assert NonceFactory(b"another secret of 32 bytes......").check(nonce, NOW + 1, "example.com") == "invalid"


def test_nonce_is_bound_to_its_realm() -> None:
    """A nonce made for one realm is invalid in another."""
    factory = NonceFactory(SECRET)
    nonce = factory.make(NOW, "example.com")
    assert factory.check(nonce, NOW, "example.org") == "invalid"


def test_tampered_nonces_are_invalid() -> None:
    """Changing any byte (including the timestamp to make it look fresh) breaks the HMAC."""
    factory = NonceFactory(SECRET)
    nonce = factory.make(NOW - 1000, "example.com")
    raw = bytearray(base64.urlsafe_b64decode(nonce + "="))
    raw[:8] = int(NOW).to_bytes(8, "big")
    refreshed = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert factory.check(refreshed, NOW, "example.com") == "invalid"
    for index in (0, 10, 20, 42):
        char = "A" if nonce[index] != "A" else "B"
        assert factory.check(nonce[:index] + char + nonce[index + 1 :], NOW - 1000, "example.com") == "invalid"


@pytest.mark.parametrize(
    "nonce",
    ["", "abc", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "!" * 43, "é" * 43, "A" * 44],
)
def test_garbage_nonces_are_invalid(nonce: str) -> None:
    """Anything that is not 32 base64url-encoded bytes is invalid, without an exception."""
    assert NonceFactory(SECRET).check(nonce, NOW, "example.com") == "invalid"


def test_only_the_canonical_spelling_of_a_nonce_is_accepted() -> None:
    """Padding, or other low bits in the last character, would spell the same bytes
    differently and dodge the nc bookkeeping: both are invalid."""
    factory = NonceFactory(SECRET)
    nonce = factory.make(NOW, "example.com")
    assert factory.check(nonce + "=", NOW, "example.com") == "invalid"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(nonce[-1])
    respelled = nonce[:-1] + alphabet[last ^ 1]  # the two low bits are padding bits
    assert base64.urlsafe_b64decode(respelled + "=") == base64.urlsafe_b64decode(nonce + "=")
    assert factory.check(respelled, NOW, "example.com") == "invalid"


def test_future_nonces_beyond_skew_are_invalid() -> None:
    """A nonce dated a little ahead (another node's clock) is ok; beyond max_skew it is invalid."""
    factory = NonceFactory(SECRET, max_skew=5.0)
    nonce = factory.make(NOW + 4, "example.com")
    assert factory.check(nonce, NOW, "example.com") == "ok"
    nonce = factory.make(NOW + 60, "example.com")
    assert factory.check(nonce, NOW, "example.com") == "invalid"


def test_nonce_factory_refuses_a_short_secret() -> None:
    """A secret under 16 bytes is a ValueError: HMAC keys must not be guessable."""
    with pytest.raises(ValueError):
        NonceFactory(b"short")


# --- nonce counts ----------------------------------------------------------------------


def test_nc_must_increase_per_nonce() -> None:
    """The first nc is accepted; the same or a lower nc is a replay; a higher one is accepted."""
    counter = NonceCounter()
    assert not counter.seen("n1", 1, NOW)
    assert counter.seen("n1", 1, NOW)
    assert not counter.seen("n1", 3, NOW)
    assert counter.seen("n1", 2, NOW)
    assert counter.seen("n1", 3, NOW)
    assert not counter.seen("n2", 1, NOW)


def test_nc_entries_expire_with_the_lifetime() -> None:
    """An entry is forgotten `lifetime` seconds after its first use (the nonce is stale by then)."""
    counter = NonceCounter(lifetime=300.0)
    counter.seen("n1", 1, NOW)
    counter.seen("n2", 1, NOW + 100)
    assert counter.seen("n1", 1, NOW + 300)
    counter.seen("x", 1, NOW + 301)
    assert len(counter) == 2  # n1 expired, n2 and x remain
    assert not counter.seen("n1", 1, NOW + 302)


def test_nc_table_is_bounded() -> None:
    """Past max_entries the oldest nonce is dropped, so memory stays bounded."""
    counter = NonceCounter(max_entries=3)
    for index in range(5):
        counter.seen(f"n{index}", 1, NOW)
    assert len(counter) == 3
    assert not counter.seen("n0", 1, NOW)  # forgotten
    assert counter.seen("n4", 1, NOW)


# --- challenges ------------------------------------------------------------------------


def test_challenge_one_value_per_algorithm_strongest_first() -> None:
    """Default: a SHA-256 then an MD5 value, same realm and nonce, qop="auth" (RFC 8760)."""
    assert challenge("example.com", "abc") == [
        'Digest realm="example.com", nonce="abc", algorithm=SHA-256, qop="auth"',
        'Digest realm="example.com", nonce="abc", algorithm=MD5, qop="auth"',
    ]
    assert challenge("example.com", "abc", ("MD5", "SHA-256")) == challenge("example.com", "abc")


def test_challenge_stale_opaque_and_quoting() -> None:
    """stale=true and opaque are appended; quotes and backslashes in values are escaped."""
    (value,) = challenge('ex"am\\ple', "n", ["md5"], stale=True, opaque="op")
    assert value == 'Digest realm="ex\\"am\\\\ple", nonce="n", algorithm=MD5, qop="auth", stale=true, opaque="op"'
    parsed = parse_authorization(
        value.replace("nonce", 'username="u", uri="x", response="r", nonce').replace(', qop="auth"', "")
    )
    assert parsed is not None and parsed.realm == 'ex"am\\ple'


def test_challenge_sess_spelling_and_unknown_algorithm() -> None:
    """-sess algorithms are spelt as in RFC 7616 (MD5-sess); unknown ones are a ValueError."""
    values = challenge("r", "n", ["MD5-SESS", "SHA-256-sess"])
    assert [v.split("algorithm=")[1].split(",")[0] for v in values] == ["SHA-256-sess", "MD5-sess"]
    with pytest.raises(ValueError):
        challenge("r", "n", ["SHA-512"])


# --- parsing ---------------------------------------------------------------------------


def test_parse_minimal_and_defaults() -> None:
    """Scheme and parameter names in any case; algorithm defaults to MD5; no qop means no nc/cnonce."""
    resp = parse_authorization('dIgEsT USERNAME="bob" , Realm="r",nonce="n",uri="sip:r",response="ab"')
    assert resp is not None
    assert (resp.username, resp.realm, resp.nonce, resp.uri, resp.response) == ("bob", "r", "n", "sip:r", "ab")
    assert resp.algorithm == "MD5"
    assert resp.qop is None and resp.nc is None and resp.nc_value is None


def test_parse_quoted_escapes_whitespace_and_tokens() -> None:
    """Quoted-pairs unescape, commas inside quotes stay, tabs and folded lines are whitespace,
    token values and quoted qop both work, unknown parameters are kept."""
    resp = parse_authorization(
        'Digest\tusername = "a\\"b\\\\c,d" ,\r\n realm="r", nonce=n, uri="sip:x;a=b", '
        'response="ff", algorithm=sha-256, qop="auth", nc=0000000A, cnonce="c", foo=bar,'
    )
    assert resp is not None
    assert resp.username == 'a"b\\c,d'
    assert resp.nonce == "n"
    assert resp.algorithm == "SHA-256"
    assert resp.qop == "auth"
    assert resp.nc_value == 10
    assert resp.params["foo"] == "bar"


@pytest.mark.parametrize("value", ["", "   ", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "Bearer abc", 'Digestive x="y"'])
def test_parse_other_schemes_give_none(value: str) -> None:
    """Values of other schemes (or no scheme) are not ours: None, not an error."""
    assert parse_authorization(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "Digest",
        'Digest realm="r", nonce="n", uri="u", response="x"',  # no username
        'Digest username="u", nonce="n", uri="u", response="x"',  # no realm
        'Digest username="u", realm="r", uri="u", response="x"',  # no nonce
        'Digest username="u", realm="r", nonce="n", response="x"',  # no uri
        'Digest username="u", realm="r", nonce="n", uri="u"',  # no response
        'Digest username="u", realm="r", nonce="n", uri="u", response="x", qop=auth, cnonce="c"',  # no nc
        'Digest username="u", realm="r", nonce="n", uri="u", response="x", qop=auth, nc=00000001',  # no cnonce
        'Digest username="u", realm="r", nonce="n", uri="u", response="x", qop=auth, nc=1, cnonce="c"',
        'Digest username="u", realm="r", nonce="n", uri="u", response="x", qop=auth, nc=0000000g, cnonce="c"',
        'Digest username="u", username="v", realm="r", nonce="n", uri="u", response="x"',  # twice
        'Digest username="u, realm="r", nonce="n", uri="u", response="x"',  # unterminated quote
        'Digest username="u" realm="r", nonce="n", uri="u", response="x"',  # missing comma
        'Digest username=, realm="r", nonce="n", uri="u", response="x"',  # empty value
        'Digest ="u", realm="r", nonce="n", uri="u", response="x"',  # empty name
        'Digest username, realm="r", nonce="n", uri="u", response="x"',  # no '='
        'Digest username="u\\',  # escape at the end
    ],
)
def test_parse_malformed_digest_is_400(value: str) -> None:
    """A Digest value with bad syntax or missing/duplicate/ill-formed fields is a 400."""
    with pytest.raises(SIPError) as info:
        parse_authorization(value)
    assert info.value.status == 400
    assert info.value.reason == "Bad Authorization header"


def test_parse_error_names_the_header() -> None:
    """For Proxy-Authorization the 400's reason names that header."""
    with pytest.raises(SIPError) as info:
        parse_authorization("Digest x", "Proxy-Authorization")
    assert info.value.reason == "Bad Proxy-Authorization header"


# --- URI matching ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digest_uri", "request_uri", "expected"),
    [
        ("sip:example.com", "sip:example.com", True),
        ("sip:EXAMPLE.com", "sip:example.com", True),
        ("sip:example.com;transport=tcp", "sip:example.com", True),
        ("sip:%61lice@example.com", "sip:alice@example.com", True),
        ("sip:alice@example.com", "sip:bob@example.com", False),
        ("sip:example.com:5060", "sip:example.com", False),
        ("sips:example.com", "sip:example.com", False),
        ("sip:example.com", "sip:example.org", False),
        ("/dir/index.html", "sip:example.com", False),
        ("<sip:example.com>", "sip:example.com", False),
    ],
)
def test_uri_matches(digest_uri: str, request_uri: str, expected: bool) -> None:
    """The digest uri matches the Request-URI loosely: scheme, user, host, port; not params."""
    assert uri_matches(digest_uri, request_uri) is expected


# --- Authenticator ---------------------------------------------------------------------

REALM = "example.com"
URI = "sip:example.com"


def make_authenticator(**kwargs: Any) -> Authenticator:
    store = Credentials(
        [
            UserCredentials(
                "alice",
                REALM,
                {
                    "MD5": compute_ha1("alice", REALM, "right", "MD5"),
                    "SHA-256": compute_ha1("alice", REALM, "right", "SHA-256"),
                },
            )
        ]
    )
    return Authenticator(store, NonceFactory(SECRET), NonceCounter(), **kwargs)


def answer(auth: Authenticator, value: str, now: float = NOW, uri: str | None = URI) -> digest.AuthResult:
    return auth.check("REGISTER", [value], REALM, now, uri)


def strip_nonces(values: tuple[str, ...]) -> list[str]:
    return [re.sub(r'nonce="[^"]*"', 'nonce=""', value) for value in values]


def test_no_credentials_gives_a_challenge() -> None:
    """Without an Authorization value for the realm: "challenge" with fresh SHA-256 and MD5 values."""
    auth = make_authenticator()
    result = auth.check("REGISTER", [], REALM, NOW)
    assert result.kind == "challenge"
    assert result.username is None
    assert strip_nonces(result.challenges) == strip_nonces(tuple(challenge(REALM, "")))
    nonce = re.search(r'nonce="([^"]*)"', result.challenges[0])
    assert nonce is not None and auth.nonces.check(nonce.group(1), NOW, REALM) == "ok"


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5", "SHA-256-sess", "MD5-sess"])
def test_right_password_is_ok(algorithm: str) -> None:
    """A correct answer with any offered algorithm (or its -sess variant) is "ok" with the username."""
    auth = make_authenticator()
    nonce = auth.nonces.make(NOW, REALM)
    result = answer(auth, client_authorization("alice", "right", REALM, nonce, algorithm=algorithm))
    assert result.kind == "ok"
    assert result.username == "alice"
    assert result.challenges == ()


def test_unknown_user_and_wrong_password_look_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown user and wrong password both give "failed" with the same fields and the same
    challenge shape, and both run the full response computation (against a stand-in HA1 for
    the unknown user), so neither outcome nor work tells whether the user exists."""
    auth = make_authenticator()
    calls: list[str] = []
    real = digest.verify

    def spy(resp: DigestResponse, method: str, ha1: str, body: bytes = b"") -> bool:
        calls.append(ha1)
        return real(resp, method, ha1, body)

    monkeypatch.setattr(digest, "verify", spy)
    nonce = auth.nonces.make(NOW, REALM)
    wrong = answer(auth, client_authorization("alice", "wrong", REALM, nonce))
    unknown = answer(auth, client_authorization("mallory", "right", REALM, nonce))
    assert wrong.kind == unknown.kind == "failed"
    assert (wrong.username, wrong.realm) == (unknown.username, unknown.realm) == (None, REALM)
    assert strip_nonces(wrong.challenges) == strip_nonces(unknown.challenges)
    assert len(calls) == 2
    assert len(calls[0]) == len(calls[1]) == 64


def test_unknown_user_with_the_dummy_never_succeeds() -> None:
    """An unknown user cannot log in whatever the response (the stand-in HA1 is random)."""
    auth = make_authenticator()
    nonce = auth.nonces.make(NOW, REALM)
    for password in ("", "right", "wrong"):
        assert answer(auth, client_authorization("nobody", password, REALM, nonce)).kind == "failed"


def test_stale_nonce_with_right_password_is_stale() -> None:
    """A correct answer on an expired nonce is "stale": the challenges carry stale=true."""
    auth = make_authenticator()
    nonce = auth.nonces.make(NOW, REALM)
    result = answer(auth, client_authorization("alice", "right", REALM, nonce), now=NOW + 301)
    assert result.kind == "stale"
    assert all("stale=true" in value for value in result.challenges)


def test_stale_nonce_with_wrong_password_or_unknown_user_fails() -> None:
    """stale=true is only for a right digest (RFC 7616 3.3); otherwise "failed" as usual."""
    auth = make_authenticator()
    nonce = auth.nonces.make(NOW, REALM)
    for user, password in (("alice", "wrong"), ("nobody", "right")):
        result = answer(auth, client_authorization(user, password, REALM, nonce), now=NOW + 301)
        assert result.kind == "failed"
        assert not any("stale=true" in value for value in result.challenges)


def test_replayed_nc_is_stale_and_a_higher_nc_is_ok() -> None:
    """The same nonce and nc a second time is a replay ("stale"); the next nc is ok."""
    auth = make_authenticator()
    nonce = auth.nonces.make(NOW, REALM)
    value = client_authorization("alice", "right", REALM, nonce)
    assert answer(auth, value).kind == "ok"
    assert answer(auth, value, now=NOW + 1).kind == "stale"
    assert answer(auth, client_authorization("alice", "right", REALM, nonce, nc="00000002")).kind == "ok"


def test_forged_or_foreign_nonce_gives_a_fresh_challenge() -> None:
    """A nonce this deployment did not make is answered with a plain (not stale) challenge."""
    auth = make_authenticator()
    result = answer(auth, client_authorization("alice", "right", REALM, "dcd98b7102dd2f0e8b11d0f600bfb0c093"))
    assert result.kind == "challenge"
    other = NonceFactory(b"x" * 32).make(NOW, REALM)
    assert answer(auth, client_authorization("alice", "right", REALM, other)).kind == "challenge"


def test_values_for_other_realms_and_schemes_are_ignored() -> None:
    """Credentials for another realm or another scheme belong to someone else: "challenge";
    the value for our realm is found among them."""
    auth = make_authenticator()
    nonce = auth.nonces.make(NOW, "example.org")
    foreign = client_authorization("alice", "right", "example.org", nonce)
    assert auth.check("REGISTER", [foreign, "Basic abc"], REALM, NOW).kind == "challenge"
    ours = client_authorization("alice", "right", REALM, auth.nonces.make(NOW, REALM))
    result = auth.check("REGISTER", [foreign, "Basic abc", ours], REALM, NOW, URI)
    assert result.kind == "ok"


def test_legacy_answer_without_qop() -> None:
    """An RFC 2069 answer (no qop) is ok by default and a challenge when allow_no_qop is off."""
    value_for = lambda auth: client_authorization(  # noqa: E731
        "alice", "right", REALM, auth.nonces.make(NOW, REALM), algorithm="MD5", qop=None
    )
    auth = make_authenticator()
    assert answer(auth, value_for(auth)).kind == "ok"
    strict = make_authenticator(allow_no_qop=False)
    assert answer(strict, value_for(strict)).kind == "challenge"


def test_algorithm_not_offered_gives_a_challenge() -> None:
    """An answer with an algorithm the authenticator does not offer is challenged again."""
    auth = make_authenticator(algorithms=("SHA-256",))
    nonce = auth.nonces.make(NOW, REALM)
    assert answer(auth, client_authorization("alice", "right", REALM, nonce, algorithm="MD5")).kind == "challenge"
    assert len(auth.check("REGISTER", [], REALM, NOW).challenges) == 1


def test_digest_uri_must_match_the_request_uri() -> None:
    """A right digest computed for another URI fails; with check_uri off it passes."""
    value_for = lambda auth: client_authorization(  # noqa: E731
        "alice", "right", REALM, auth.nonces.make(NOW, REALM), uri="sip:other.example.com"
    )
    auth = make_authenticator()
    assert answer(auth, value_for(auth)).kind == "failed"
    loose = make_authenticator(check_uri=False)
    assert answer(loose, value_for(loose)).kind == "ok"


def test_method_is_part_of_the_digest() -> None:
    """A REGISTER answer presented on an INVITE fails (HA2 covers the method)."""
    auth = make_authenticator()
    value = client_authorization("alice", "right", REALM, auth.nonces.make(NOW, REALM))
    assert auth.check("INVITE", [value], REALM, NOW, URI).kind == "failed"


def test_malformed_value_raises_400() -> None:
    """A malformed Digest value is the caller's 400, not a challenge."""
    auth = make_authenticator()
    with pytest.raises(SIPError) as info:
        auth.check("REGISTER", ['Digest username="alice"'], REALM, NOW)
    assert info.value.status == 400


def test_realm_for_maps_the_domain_to_the_realm() -> None:
    """realm_for turns the given domain into the digest realm used for challenges and checks."""
    auth = make_authenticator(realm_for=lambda domain: REALM)
    result = auth.check("REGISTER", [], "sip.example.com", NOW)
    assert result.realm == REALM and f'realm="{REALM}"' in result.challenges[0]
    value = client_authorization("alice", "right", REALM, auth.nonces.make(NOW, REALM))
    assert auth.check("REGISTER", [value], "sip.example.com", NOW, URI).kind == "ok"


def test_authenticator_refuses_unknown_algorithms() -> None:
    """Configuring an algorithm the module cannot compute is a ValueError at construction."""
    with pytest.raises(ValueError):
        make_authenticator(algorithms=("SHA-512-256",))
