"""The example operator plugin in etc/plugins, loaded exactly as an operator's directory is."""

from __future__ import annotations

from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from sipgate_proxy.config import ConfigError
from sipgate_proxy.interfaces import IRouter, IRouterFactory
from sipgate_proxy.routing.decisions import Reject, RequestContext
from sipgate_proxy.routing.plugins import build_chain, find_factories
from sipgate_proxy.sip.message import Request
from sipgate_proxy.sip.parser import parse_datagram

PLUGINS = str(Path(__file__).resolve().parents[2] / "etc" / "plugins")


def request(user: str) -> Request:
    message = parse_datagram(
        f"INVITE sip:{user}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n".encode()
    )
    assert isinstance(message, Request)
    return message


def test_example_plugin_is_found_in_its_directory() -> None:
    """find_factories discovers 'blocklist' from etc/plugins next to the built-in routers."""
    factories = find_factories([PLUGINS])
    assert "blocklist" in factories and "static" in factories
    verifyObject(IRouterFactory, factories["blocklist"])


def test_example_plugin_blocks_and_passes() -> None:
    """Blocked numbers and prefixes get the configured reject; other numbers pass to the next router."""
    chain = build_chain(
        ["blocklist"],
        {"blocklist": {"numbers": ["+4930123"], "prefixes": ["+49900"], "status": 603, "reason": "Decline"}},
        [PLUGINS],
        None,
    )
    router = chain.get("blocklist")
    verifyObject(IRouter, router)
    context = RequestContext("udp", "192.0.2.1", 5060, 0.0)
    assert chain.route(request("%2B4990012"), context) == Reject(603, "Decline")
    assert context.attrs["blocklist.hit"] == "+4990012"
    assert chain.route(request("+4930123"), RequestContext("udp", "192.0.2.1", 5060, 0.0)) == Reject(603, "Decline")
    assert chain.route(request("+4930999"), RequestContext("udp", "192.0.2.1", 5060, 0.0)) is None


def test_example_plugin_config_errors_name_the_key() -> None:
    """A wrong value in the plugin's own table stops the start with the key named."""
    with pytest.raises(ConfigError) as error:
        build_chain(["blocklist"], {"blocklist": {"status": 200}}, [PLUGINS], None)
    assert error.value.key == "routing.blocklist.status"
