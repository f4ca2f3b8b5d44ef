"""ProxyService on a MemoryReactorClock: listeners, datagrams through the core, the timer, names, stop."""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from sipgate_proxy.config import parse_config
from sipgate_proxy.service import ProxyService
from sipgate_proxy.sip.message import Request
from sipgate_proxy.sip.parser import parse_datagram
from sipgate_proxy.sip.transaction import Destination
from sipgate_proxy.transport.stream import SIPStreamProtocol
from sipgate_proxy.transport.udp import SIPDatagramProtocol
from tests.dnsserver import FakeResolver

T1 = 0.5
CALLER = ("192.0.2.5", 5061)
CALLEE = ("192.0.2.20", 5070)


class FakePort:
    """A listening port that remembers whether it was stopped."""

    def __init__(self, address: IPv4Address) -> None:
        self.address = address
        self.stopped = False

    def getHost(self) -> IPv4Address:
        return self.address

    def stopListening(self) -> None:
        self.stopped = True


class Reactor(MemoryReactorClock):
    """MemoryReactorClock with listenUDP, stoppable ports and a recording resolve()."""

    def __init__(self) -> None:
        super().__init__()
        self.udpPorts: list[tuple[int, Any, str, int, FakePort]] = []
        self.tcpPorts: list[FakePort] = []
        self.resolved: list[str] = []
        self.answers: dict[str, Deferred[str]] = {}

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> FakePort:
        fake = FakePort(IPv4Address("UDP", interface or "0.0.0.0", port))
        self.udpPorts.append((port, protocol, interface, maxPacketSize, fake))
        return fake

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> FakePort:  # type: ignore[override]
        super().listenTCP(port, factory, backlog, interface)
        fake = FakePort(IPv4Address("TCP", interface or "0.0.0.0", port))
        self.tcpPorts.append(fake)
        return fake

    def resolve(self, name: str, timeout: Any = (1, 3, 11, 45)) -> Deferred[str]:
        self.resolved.append(name)
        return self.answers.get(name, fail(DNSLookupError(name)))


class FakeUDPTransport:
    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))


def config(**extra: Any) -> Any:
    """UDP and TCP on 127.0.0.1:5060; calls to bob go to CALLEE by the static router."""
    routes = extra.pop("routes", [{"match": "^sip:bob@", "next_hop": f"sip:{CALLEE[0]}:{CALLEE[1]}"}])
    data: dict[str, Any] = {
        "listen": [
            {"transport": "udp", "address": "127.0.0.1", "port": 5060},
            {"transport": "tcp", "address": "127.0.0.1", "port": 5060},
        ],
        "timers": {"t1": T1},
        "log": {"level": "warn"},
        "routing": {"routers": ["static"], "static": {"routes": routes}},
    }
    data.update(extra)
    return parse_config(data, "test.toml")


class Running:
    """A started ProxyService whose UDP listener writes into a FakeUDPTransport."""

    def __init__(self, resolver: Any = None, **extra: Any) -> None:
        self.reactor = Reactor()
        # never the machine's resolver: a fake one unless a test brings its own
        self.service = ProxyService(config(**extra), self.reactor, resolver=resolver or FakeResolver({}))
        self.service.startService()
        protocol = self.reactor.udpPorts[0][1]
        assert isinstance(protocol, SIPDatagramProtocol)
        self.udp = protocol
        self.wire = FakeUDPTransport()
        protocol.makeConnection(self.wire)  # type: ignore[arg-type]

    def receive(self, data: bytes, addr: tuple[str, int] = CALLER) -> None:
        self.udp.datagramReceived(data, addr)

    def take(self) -> list[tuple[bytes, tuple[str, int]]]:
        written, self.wire.written = self.wire.written, []
        return written

    def statuses(self, written: list[tuple[bytes, tuple[str, int]]], to: tuple[str, int] = CALLER) -> list[int]:
        return [int(data[8:11]) for data, addr in written if data.startswith(b"SIP/2.0 ") and addr == to]

    def requests(self, written: list[tuple[bytes, tuple[str, int]]]) -> list[tuple[Request, tuple[str, int]]]:
        out = []
        for data, addr in written:
            if not data.startswith(b"SIP/2.0 "):
                message = parse_datagram(data)
                assert isinstance(message, Request)
                out.append((message, addr))
        return out


def invite(uri: str = "sip:bob@example.com", call_id: str = "call-1", branch: str = "z9hG4bKcaller1") -> bytes:
    return (
        f"INVITE {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch={branch}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@example.com>;tag=a1\r\n"
        f"To: <{uri}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: <sip:alice@{CALLER[0]}:{CALLER[1]}>\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def answer(request: Request, status: int, reason: str) -> bytes:
    """The callee's response to a forwarded request, all Vias copied."""
    vias = "".join(f"Via: {v}\r\n" for v in request.get_all("via"))
    return (
        f"SIP/2.0 {status} {reason}\r\n{vias}"
        f"From: {request.get('from')}\r\nTo: {request.get('to')};tag=b1\r\n"
        f"Call-ID: {request.get('call-id')}\r\nCSeq: {request.get('cseq')}\r\n"
        f"Contact: <sip:bob@{CALLEE[0]}:{CALLEE[1]}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


# -- start and stop ------------------------------------------------------------


def test_service_provides_iservice() -> None:
    """ProxyService is a complete IService."""
    service = ProxyService(config(), Reactor())
    assert verifyObject(IService, service)


def test_start_listens_on_the_configured_ports_and_builds_the_core() -> None:
    """startService opens every [[listen]] entry (UDP and TCP, address and port) and creates the core."""
    r = Reactor()
    service = ProxyService(config(), r)
    assert service.core is None
    service.startService()
    assert [(port, interface) for port, _, interface, _, _ in r.udpPorts] == [(5060, "127.0.0.1")]
    assert [(port, interface) for port, _, _, interface in r.tcpServers] == [(5060, "127.0.0.1")]
    assert service.core is not None
    assert [i.name for i in service.interfaces] == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert service.running


def test_stop_stops_listening_and_cancels_the_timer() -> None:
    """stopService stops every port, returns a fired Deferred and leaves no DelayedCall behind."""
    run = Running()
    run.receive(invite())
    assert run.reactor.getDelayedCalls() != []
    result = run.service.stopService()
    fired: list[Any] = []
    result.addCallback(fired.append)
    assert fired, "stopService's Deferred did not fire"
    assert all(p.stopped for *_, p in run.reactor.udpPorts)
    assert all(p.stopped for p in run.reactor.tcpPorts)
    assert run.reactor.getDelayedCalls() == []
    assert not run.service.running


def test_stop_closes_open_tcp_connections() -> None:
    """stopService closes the TCP connections in the connection table."""
    run = Running()
    factory = run.reactor.tcpServers[0][1]
    protocol = factory.buildProtocol(IPv4Address("TCP", "192.0.2.6", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.6", 40000))
    protocol.makeConnection(transport)
    run.service.stopService()
    assert transport.disconnecting


# -- messages through the core -------------------------------------------------


def test_invite_by_udp_is_answered_100_and_forwarded_then_the_200_goes_back() -> None:
    """A datagram INVITE gives a 100 to the caller and the INVITE to the routed callee; the callee's 200 is relayed."""
    run = Running()
    run.receive(invite())
    written = run.take()
    assert run.statuses(written) == [100]
    forwarded = run.requests(written)
    assert len(forwarded) == 1
    request, addr = forwarded[0]
    assert addr == CALLEE
    assert request.method == "INVITE"
    assert request.vias[0].host == "127.0.0.1" and request.vias[0].port == 5060
    assert request.get("max-forwards") == "69"
    run.receive(answer(request, 200, "OK"), CALLEE)
    written = run.take()
    assert run.statuses(written) == [200]
    response = parse_datagram(written[0][0])
    assert response is not None and [v.branch for v in response.vias] == ["z9hG4bKcaller1"]


def test_invite_over_tcp_is_answered_on_the_connection_and_forwarded_by_udp() -> None:
    """An INVITE on an accepted TCP connection: 100 written on that connection, INVITE sent to the callee by UDP."""
    run = Running()
    factory = run.reactor.tcpServers[0][1]
    peer = IPv4Address("TCP", "192.0.2.6", 40000)
    protocol = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    protocol.dataReceived(invite().replace(b"SIP/2.0/UDP 192.0.2.5:5061", b"SIP/2.0/TCP 192.0.2.6:40000"))
    assert transport.value().startswith(b"SIP/2.0 100 ")
    assert [addr for _, addr in run.requests(run.take())] == [CALLEE]


def test_unanswerable_garbage_is_dropped_without_a_reply() -> None:
    """A datagram that is not SIP at all gets no answer and raises nothing."""
    run = Running()
    run.receive(b"\x00\x01 not sip at all")
    assert run.take() == []


# -- the timer -----------------------------------------------------------------


def test_one_delayed_call_is_armed_for_the_cores_next_deadline() -> None:
    """After forwarding an INVITE there is exactly one DelayedCall, due at the core's next deadline."""
    run = Running()
    run.receive(invite())
    calls = run.reactor.getDelayedCalls()
    assert len(calls) == 1
    assert calls[0].getTime() == run.service.core.next_deadline()  # type: ignore[union-attr]
    run.receive(invite(call_id="call-2", branch="z9hG4bKcaller2"))
    assert len(run.reactor.getDelayedCalls()) == 1


def test_unanswered_invite_is_retransmitted_after_t1_and_times_out_with_408() -> None:
    """Over UDP the forwarded INVITE goes out again after T1, 2*T1 ...; after 64*T1 the caller gets 408."""
    run = Running()
    run.receive(invite())
    first = run.requests(run.take())
    assert len(first) == 1
    run.reactor.advance(T1 - 0.01)
    assert run.take() == []
    run.reactor.advance(0.01)
    again = run.requests(run.take())
    assert [(r.method, addr) for r, addr in again] == [("INVITE", CALLEE)]
    assert again[0][0].vias[0].branch == first[0][0].vias[0].branch
    assert len(run.reactor.getDelayedCalls()) == 1  # the single timer was armed again
    run.reactor.advance(2 * T1)
    assert len(run.requests(run.take())) == 1
    for _ in range(int(64 * T1 / 0.25)):
        run.reactor.advance(0.25)
    written = run.take()
    assert 408 in run.statuses(written)


def test_waiting_datagrams_are_read_before_timers_fire() -> None:
    """After a stall, an answer already in the UDP buffer stops Timer A before it would retransmit."""
    run = Running()
    run.receive(invite())
    ((forwarded, _),) = run.requests(run.take())
    waiting = [answer(forwarded, 100, "Trying")]

    class Port:
        def doRead(self) -> None:
            while waiting:
                run.receive(waiting.pop(), CALLEE)

    run.service._udp_ports.append(Port())
    run.reactor.advance(T1 + 0.2)  # the reactor was busy past Timer A
    assert run.requests(run.take()) == []  # the 100 was read first: no retransmission


# -- names -----------------------------------------------------------------------


def test_dns_hosts_name_is_used_without_asking_the_resolver() -> None:
    """A next hop named in [dns] hosts is sent to its address; DNS is not asked."""
    resolver = FakeResolver({})
    run = Running(
        routes=[{"match": "^sip:bob@", "next_hop": "sip:gw.example.net:5070"}],
        dns={"hosts": {"gw.example.net": CALLEE[0]}},
        resolver=resolver,
    )
    run.receive(invite())
    assert [addr for _, addr in run.requests(run.take())] == [CALLEE]
    assert resolver.queries == [] and run.reactor.resolved == []


def test_hosts_mode_unknown_name_fails_the_branch_without_resolving() -> None:
    """With [dns] mode='hosts' a name not in the table is not resolved; the branch fails and the caller gets 5xx."""
    resolver = FakeResolver({})
    run = Running(
        routes=[{"match": "^sip:bob@", "next_hop": "sip:unknown.example.net:5070"}],
        dns={"mode": "hosts", "hosts": {"gw.example.net": CALLEE[0]}},
        resolver=resolver,
    )
    run.receive(invite())
    written = run.take()
    assert run.requests(written) == []
    codes = run.statuses(written)
    assert codes[0] == 100
    assert len(codes) == 2 and 500 <= codes[1] < 600
    assert resolver.queries == [] and run.reactor.resolved == []


def test_system_mode_resolves_once_and_reuses_the_answer_for_its_ttl() -> None:
    """A name outside [dns] hosts is looked up in DNS (A, the port being given); the
    answer serves the next call until its TTL runs out, then it is asked again."""
    resolver = FakeResolver({"gw.example.net": [("A", CALLEE[0], 60)]})
    run = Running(routes=[{"match": "^sip:bob@", "next_hop": "sip:gw.example.net:5070"}], resolver=resolver)
    run.receive(invite())
    assert [addr for _, addr in run.requests(run.take())] == [CALLEE]
    run.receive(invite(call_id="call-2", branch="z9hG4bKcaller2"))
    assert [addr for _, addr in run.requests(run.take())] == [CALLEE]
    asked = [query for query in resolver.queries if query[1] == "A"]
    assert asked == [("gw.example.net", "A")]
    run.reactor.advance(61)
    run.take()  # retransmissions of the unanswered calls
    run.receive(invite(call_id="call-3", branch="z9hG4bKcaller3"))
    assert [addr for request, addr in run.requests(run.take()) if request.call_id == "call-3"] == [CALLEE]
    assert [query for query in resolver.queries if query[1] == "A"] == [("gw.example.net", "A")] * 2
    assert run.reactor.resolved == []


def test_system_mode_failed_lookup_fails_the_branch() -> None:
    """A name DNS does not know ends the branch: the caller gets a 5xx and nothing is sent."""
    resolver = FakeResolver({})
    run = Running(routes=[{"match": "^sip:bob@", "next_hop": "sip:nowhere.example.net:5070"}], resolver=resolver)
    run.receive(invite())
    written = run.take()
    assert run.requests(written) == []
    codes = run.statuses(written)
    assert codes[0] == 100 and len(codes) == 2 and 500 <= codes[1] < 600
    assert ("nowhere.example.net", "A") in resolver.queries


def test_srv_targets_are_tried_in_order_within_one_transaction() -> None:
    """A domain with two SRV targets: the first one's transport error moves the INVITE to the second."""
    resolver = FakeResolver(
        {
            "_sip._tcp.carrier.example": [
                ("SRV", 10, 0, 5070, "a.carrier.example", 60),
                ("SRV", 20, 0, 5071, "b.carrier.example", 60),
            ],
            "a.carrier.example": [("A", "192.0.2.31", 60)],
            "b.carrier.example": [("A", "192.0.2.32", 60)],
        }
    )
    run = Running(routes=[{"match": "^sip:bob@", "next_hop": "sip:carrier.example;transport=tcp"}], resolver=resolver)
    run.receive(invite())
    connects = [(host, port) for host, port, *_ in run.reactor.tcpClients]
    assert connects == [("192.0.2.31", 5070)]
    factory = run.reactor.tcpClients[0][2]
    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    connects = [(host, port) for host, port, *_ in run.reactor.tcpClients]
    assert connects == [("192.0.2.31", 5070), ("192.0.2.32", 5071)]


def test_tcp_connect_failure_to_a_named_next_hop_fails_the_branch() -> None:
    """A refused TCP connection to a next hop given by name (via [dns] hosts) fails its branch at once with 5xx."""
    run = Running(
        routes=[{"match": "^sip:bob@", "next_hop": "sip:gw.example.net:5070;transport=tcp"}],
        dns={"hosts": {"gw.example.net": CALLEE[0]}},
    )
    run.receive(invite())
    assert run.statuses(run.take()) == [100]
    host, port, factory, _, _ = run.reactor.tcpClients[0]
    assert (host, port) == CALLEE
    factory.clientConnectionFailed(run.reactor.connectors[0], Failure(ConnectionRefusedError()))
    codes = run.statuses(run.take())
    assert len(codes) == 1 and 500 <= codes[0] < 600


def test_tcp_connect_failure_to_an_address_fails_the_branch() -> None:
    """A refused TCP connection to a next hop given by address fails its branch at once with 5xx."""
    run = Running(routes=[{"match": "^sip:bob@", "next_hop": f"sip:{CALLEE[0]}:{CALLEE[1]};transport=tcp"}])
    run.receive(invite())
    assert run.statuses(run.take()) == [100]
    _, _, factory, _, _ = run.reactor.tcpClients[0]
    factory.clientConnectionFailed(run.reactor.connectors[0], Failure(ConnectionRefusedError()))
    codes = run.statuses(run.take())
    assert len(codes) == 1 and 500 <= codes[0] < 600


def test_flood_limit_drops_a_noisy_source_without_reply_but_not_trusted_peers() -> None:
    """Past flood_limit a source gets no answers at all; a trusted peer is never limited."""
    run = Running(
        security={"flood_limit": 3, "flood_window": 10.0, "flood_ban": 60.0}, trusted=[{"cidr": "192.0.2.200/32"}]
    )
    for n in range(5):
        run.receive(invite(call_id=f"flood-{n}", branch=f"z9hG4bKflood{n}"))
    answered = [d for d, addr in run.take() if d.startswith(b"SIP/2.0 100 ") and addr == CALLER]
    assert len(answered) == 3
    for n in range(5):
        run.receive(invite(call_id=f"trusted-{n}", branch=f"z9hG4bKtr{n}"), ("192.0.2.200", 5061))
    assert len([d for d, addr in run.take() if d.startswith(b"SIP/2.0 100 ")]) == 5


def test_trusted_peer_tag_reaches_the_routers() -> None:
    """A request from a trusted peer carries its tag in context.attrs["trusted"]."""
    run = Running(trusted=[{"cidr": "192.0.2.0/24", "tag": "carrier-a"}])
    seen = []
    chain = run.service.router
    original = chain.route

    def spy(request: Any, context: Any) -> Any:
        seen.append(context.attrs.get("trusted"))
        return original(request, context)

    chain.route = spy  # type: ignore[method-assign]
    run.receive(invite())
    assert seen == ["carrier-a"]


# -- RFC 5923 connection reuse -----------------------------------------------------


class _TlsPeer(SIPStreamProtocol):
    """An inbound TLS connection whose peer presented ``cert``."""

    def __init__(self, table: Any, cert: Any) -> None:
        super().__init__(table, "tls:127.0.0.1:5061", "tls")
        self.cert = cert
        self.peer = ("127.0.0.1", 40123)
        self.handshake_done = True

    def peer_certificate(self) -> Any:
        return self.cert


def _alias_request(sent_by: str) -> Request:
    data = (
        f"OPTIONS sip:127.0.0.1:5061 SIP/2.0\r\nVia: SIP/2.0/TLS {sent_by};branch=z9hG4bKalias;alias\r\n"
        "From: <sip:carol@caller.test>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: alias-1\r\nCSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    request = parse_datagram(data)
    assert isinstance(request, Request)
    return request


def test_a_tls_alias_backed_by_the_certificate_makes_the_connection_reusable(tmp_path: Any) -> None:
    """Via ;alias from a TLS peer whose certificate names its sent-by host: requests to
    that host and port use the connection; without a matching certificate they do not."""
    from OpenSSL import crypto

    from tests.pki import make_ca

    ca = make_ca(tmp_path)
    issued = ca.issue(tmp_path, "carol", dns=["caller.test"], client=True)
    cert = crypto.load_certificate(crypto.FILETYPE_PEM, issued.leaf_pem)
    run = Running()
    service = run.service
    good = _TlsPeer(service.connections, cert)
    source = Destination("tls", "127.0.0.1", 40123, good, good.local)
    service._alias(_alias_request("caller.test:5099"), source)
    assert service.connections.connection_to(Destination("tls", "caller.test", 5099)) is good
    assert service.connections.connection_to(Destination("tls", "127.0.0.1", 5099)) is good
    forged = _TlsPeer(service.connections, cert)
    service._alias(_alias_request("bank.test:5098"), Destination("tls", "127.0.0.1", 40124, forged, forged.local))
    assert service.connections.connection_to(Destination("tls", "bank.test", 5098)) is None
    service.connections.remove(good)
    assert service.connections.connection_to(Destination("tls", "caller.test", 5099)) is None
