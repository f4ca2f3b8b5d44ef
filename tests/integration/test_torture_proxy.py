"""RFC 4475 and RFC 5118 torture messages against the running proxy.

The proxy runs under twistd on the shipped etc/sipgate-proxy.toml with three
changes: ports are free ones, one static route sends every request to the
test's sink, and [dns] resolves only the one name a torture message routes
to (so nothing ever asks a real resolver). Each message goes over the
transport its top Via names (TLS over TCP until TLS listeners exist) from a
socket on 127.0.0.1 bound to the Via's port, which is where the proxy sends
responses (RFC 3261 18.2.2 with received=127.0.0.1).
"""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sipgate_proxy.sip.errors import SIPError
from sipgate_proxy.sip.message import Request, make_response
from sipgate_proxy.sip.parser import parse_datagram
from sipgate_proxy.sip.transaction import server_key
from tests.integration.harness import ProxyProcess, free_port, send_options
from tests.torture import CASES, DROP, FORWARD, Case, top_via_transport

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WAIT = 3.0  # how long to collect what comes back for one message
DROP_WAIT = 1.0  # how long nothing must come back for a dropped one


def _rounds() -> dict[str, int]:
    """Which proxy each case goes to: messages whose transaction key repeats
    an earlier message's (same branch, sent-by and method) are rightly taken
    as retransmissions, so each goes to a proxy that has not seen the key."""
    seen: list[set[tuple[str, ...]]] = []
    rounds = {}
    for case in CASES:
        try:
            message = parse_datagram(case.path.read_bytes())
            key = server_key(message) if isinstance(message, Request) else (case.name,)
        except SIPError:
            key = (case.name,)
        index = next((i for i, keys in enumerate(seen) if key not in keys), len(seen))
        if index == len(seen):
            seen.append(set())
        seen[index].add(key)
        rounds[case.name] = index
    return rounds


ROUNDS = _rounds()


def _config(port: int, sink: int) -> str:
    text = (ROOT / "etc" / "sipgate-proxy.toml").read_text()
    text = re.sub(r"(?m)^port = 5060$", f"port = {port}", text)
    text = text.replace(
        "routes = []",
        f'routes = [{{ match = ".", next_hop = "sip:127.0.0.1:{sink}" }}]',
    )
    text = text.replace('mode = "system"', 'mode = "hosts"')
    text = text.replace('# "gw1.example.net" = "192.0.2.10"', '"services.example.com" = "127.0.0.1"')
    return text


class Peer:
    """UDP sockets and TCP listeners on 127.0.0.1 that collect what arrives.

    Requests that arrive are answered (486 to INVITE, 200 to others) so the
    proxy's client transactions end.
    """

    def __init__(self) -> None:
        self.udp: dict[int, socket.socket] = {}
        self.tcp: dict[int, socket.socket] = {}
        self.streams: list[socket.socket] = []
        self.received: list[bytes] = []

    def bind(self, port: int) -> None:
        if port in self.udp:
            return
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            udp.bind(("127.0.0.1", port))
            tcp.bind(("127.0.0.1", port))
        except OSError as error:
            udp.close()
            tcp.close()
            pytest.fail(f"port {port} on 127.0.0.1 is taken ({error}); the torture Vias name it")
        tcp.listen(16)
        self.udp[port] = udp
        self.tcp[port] = tcp

    def connect(self, proxy_port: int) -> socket.socket:
        stream = socket.create_connection(("127.0.0.1", proxy_port), timeout=5)
        self.streams.append(stream)
        return stream

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        buffers: dict[socket.socket, bytes] = {}
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select([*self.udp.values(), *self.tcp.values(), *self.streams], [], [], left)
            for sock in readable:
                if sock in self.tcp.values():
                    conn, _ = sock.accept()
                    self.streams.append(conn)
                elif sock.type == socket.SOCK_DGRAM:
                    data, addr = sock.recvfrom(65535)
                    self._handle(data, lambda out, s=sock, a=addr: s.sendto(out, a))
                else:
                    try:
                        chunk = sock.recv(65535)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        self.streams.remove(sock)
                        sock.close()
                        continue
                    buffers[sock] = buffers.get(sock, b"") + chunk
                    buffers[sock] = self._frames(buffers[sock], sock)

    def _frames(self, buffer: bytes, sock: socket.socket) -> bytes:
        while True:
            buffer = buffer.lstrip(b"\r\n")
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return buffer
            match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", buffer[:end])
            total = end + 4 + (int(match.group(1)) if match else 0)
            if len(buffer) < total:
                return buffer
            self._handle(buffer[:total], sock.sendall)
            buffer = buffer[total:]

    def _handle(self, data: bytes, reply: Callable[[bytes], object]) -> None:
        self.received.append(data)
        if data.startswith(b"SIP/2.0 "):
            return
        message = parse_datagram(data)
        if isinstance(message, Request) and message.method not in ("ACK", "CANCEL"):
            status = 486 if message.method == "INVITE" else 200
            reply(make_response(message, status, None, "sink").to_bytes())

    def close(self) -> None:
        for sock in [*self.udp.values(), *self.tcp.values(), *self.streams]:
            sock.close()


def _via_port(data: bytes) -> int:
    head = re.sub(rb"\r\n[ \t]+", b" ", data.split(b"\r\n\r\n", 1)[0])
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"via", b"v"):
            sent_by = re.match(rb"\s*SIP\s*/\s*\S+?\s*/\s*\S+\s+(\[[^\]]+\]|[^;:\s,]+)(?:\s*:\s*(\d+))?", value)
            if sent_by and sent_by.group(2):
                return int(sent_by.group(2))
            return 5060
    return 5060


@pytest.fixture(scope="module")
def torture_env(tmp_path_factory: pytest.TempPathFactory, twistd_binary: Path) -> Iterator[dict[str, object]]:
    workdir = tmp_path_factory.mktemp("torture")
    sink = Peer()
    sink_port = free_port()
    sink.bind(sink_port)
    proxies = []
    for index in range(max(ROUNDS.values()) + 1):
        port = free_port()
        proxy = ProxyProcess(_config(port, sink_port), workdir, name=f"proxy{index}", twistd=twistd_binary)
        proxies.append(proxy.start())
    try:
        yield {"sink": sink, "proxies": proxies}
    finally:
        for proxy in proxies:
            proxy.stop()
        sink.close()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_torture_against_twistd(case: Case, torture_env: dict[str, object]) -> None:
    """The running proxy answers, forwards or drops each torture message as a proxy must, and survives."""
    sink = torture_env["sink"]
    proxies = torture_env["proxies"]
    assert isinstance(sink, Peer) and isinstance(proxies, list)
    proxy: ProxyProcess = proxies[ROUNDS[case.name]]
    data = case.path.read_bytes()
    transport = top_via_transport(data)
    peer = Peer()
    try:
        via_port = _via_port(data)
        peer.bind(via_port)
        if case.name == "mpart01":
            peer.bind(5080)  # its Route names 127.0.0.1:5080
        sink.received.clear()
        if transport == "udp":
            peer.udp[via_port].sendto(data, ("127.0.0.1", proxy.port("udp")))
        else:
            peer.connect(proxy.port("tcp")).sendall(data)
        end = time.monotonic() + (DROP_WAIT if case.outcome == DROP else WAIT)
        while time.monotonic() < end:
            peer.pump(0.1)
            sink.pump(0.1)
            if _settled(case, peer, sink):
                break
        got = _same_call(data, peer.received + sink.received)
        responses = [m for m in got if m.startswith(b"SIP/2.0 ") and not m.startswith(b"SIP/2.0 100 ")]
        requests = [m for m in got if not m.startswith(b"SIP/2.0 ") and not m.startswith(b"ACK ")]
        if case.outcome == DROP:
            assert responses == [] and requests == [], got
        elif case.outcome == FORWARD:
            assert len(requests) == 1, got
            for needle in case.must_keep:
                assert needle in requests[0]
            for needle in case.must_not_forward:
                assert needle not in requests[0]
            # the next hop's answer comes back through the proxy
            expected = b"SIP/2.0 486 " if requests[0].startswith(b"INVITE ") else b"SIP/2.0 200 "
            assert [r for r in responses if r.startswith(expected)], got
        else:
            assert requests == [], got
            assert responses and responses[0].startswith(f"SIP/2.0 {case.outcome} ".encode()), got
    finally:
        peer.close()
    alive = send_options(proxy.port("udp"), "udp", timeout=2.0)
    assert alive is not None and alive.status == 200, "the proxy stopped answering"


def _call_id(data: bytes) -> bytes | None:
    match = re.search(rb"(?im)^(?:call-id|i)\s*:\s*(\S+)", data)
    return match.group(1) if match else None


def _same_call(data: bytes, messages: list[bytes]) -> list[bytes]:
    """Only what belongs to this message's call: late retransmissions of an
    earlier case's responses may still arrive on a reused port."""
    call_id = _call_id(data)
    return [m for m in messages if _call_id(m) == call_id]


def _settled(case: Case, peer: Peer, sink: Peer) -> bool:
    got = _same_call(case.path.read_bytes(), peer.received + sink.received)
    finals = [m for m in got if m.startswith(b"SIP/2.0 ") and not m.startswith(b"SIP/2.0 100 ")]
    if case.outcome == DROP:
        return False  # wait the whole window: nothing may come
    if case.outcome == FORWARD:
        return any(m.startswith(b"SIP/2.0 ") for m in finals) and any(not m.startswith(b"SIP/2.0 ") for m in got)
    return bool(finals)
