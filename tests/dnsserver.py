"""A loopback authoritative DNS server for tests, its zone given as plain Python data.

A zone maps lower-case names (no trailing dot) to a list of records::

    {
        "example.com": [
            ("NAPTR", 10, 50, "s", "SIP+D2U", "", "_sip._udp.example.com", 300),
        ],
        "_sip._udp.example.com": [("SRV", 10, 60, 5060, "sip1.example.com", 300)],
        "sip1.example.com": [("A", "127.0.0.1", 300), ("AAAA", "::1", 300)],
        "broken.example.com": "SERVFAIL",  # every query answered SERVFAIL (or "REFUSED")
        "silent.example.com": "DROP",  # every query left unanswered (client timeout)
    }

Records: ``("A", address, ttl)``, ``("AAAA", address, ttl)``, ``("SRV", priority, weight,
port, target, ttl)``, ``("NAPTR", order, preference, flags, service, regexp, replacement,
ttl)``, ``("CNAME", target, ttl)``. Unknown names get NXDOMAIN; a known name without the
asked type an empty NOERROR answer. SRV answers carry the A/AAAA records of their targets
in the additional section (as BIND does) unless ``glue=False``.

In-process (unit tests)::

    port = listen_dns(reactor, zone)          # UDP and TCP on 127.0.0.1, a free port
    ... port.number ...; yield port.stop()

As a process (integration tests): ``python -m tests.dnsserver --port 0 --zone zone.json``
(the JSON holds the same data, records as lists) prints ``listening on 127.0.0.1:N`` once it
answers, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import selectors
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.names import common, dns, error, server
from twisted.python.failure import Failure

Zone = Mapping[str, Sequence[Sequence[Any]] | str]

_TYPES = {"A": dns.A, "AAAA": dns.AAAA, "SRV": dns.SRV, "NAPTR": dns.NAPTR, "CNAME": dns.CNAME}


def _payload(record: Sequence[Any]) -> tuple[int, int, Any]:
    """(type, ttl, twisted.names payload) of one zone record."""
    kind, *fields = record
    ttl = int(fields[-1])
    if kind == "A":
        return dns.A, ttl, dns.Record_A(fields[0], ttl)
    if kind == "AAAA":
        return dns.AAAA, ttl, dns.Record_AAAA(fields[0], ttl)
    if kind == "SRV":
        priority, weight, port, target = fields[:4]
        target = b"" if target in (".", "") else target  # the root: "service not available"
        return dns.SRV, ttl, dns.Record_SRV(priority, weight, port, target, ttl)
    if kind == "NAPTR":
        order, preference, flags, service, regexp, replacement = fields[:6]
        texts = (str(flags).encode(), str(service).encode(), str(regexp).encode())
        payload = dns.Record_NAPTR(order, preference, *texts, replacement, ttl)
        return dns.NAPTR, ttl, payload
    if kind == "CNAME":
        return dns.CNAME, ttl, dns.Record_CNAME(fields[0], ttl)
    raise ValueError(f"unknown record type {kind!r} in {record!r}")


class _Answer(Exception):
    """Answer with this response code (SERVFAIL, REFUSED) instead of records."""

    def __init__(self, rcode: int) -> None:
        super().__init__(rcode)
        self.rcode = rcode


_RCODES = {"SERVFAIL": dns.ESERVER, "REFUSED": dns.EREFUSED}


class _Factory(server.DNSServerFactory):
    """DNSServerFactory that answers an authority's _Answer with its code, without logging an error."""

    def gotResolverError(self, failure: Any, protocol: Any, message: Any, address: Any) -> None:
        if failure.check(_Answer):
            response = self._responseFromMessage(message=message, rCode=failure.value.rcode)
            self.sendReply(protocol, response, address)
            return
        super().gotResolverError(failure, protocol, message, address)


class ZoneAuthority(common.ResolverBase):
    """Answers from a zone, authoritatively; see the module docstring for the zone format.

    ``queries`` records every (name, type) asked, so tests can count what reached DNS.
    """

    def __init__(self, zone: Zone, *, glue: bool = True) -> None:
        common.ResolverBase.__init__(self)
        self.zone = {name.lower().rstrip("."): records for name, records in zone.items()}
        for name, entry in self.zone.items():  # a mistake in the zone fails here, not as a SERVFAIL later
            if isinstance(entry, str):
                if entry not in (*_RCODES, "DROP"):
                    raise ValueError(f"{name}: {entry!r} is not SERVFAIL, REFUSED or DROP")
            else:
                for record in entry:
                    _payload(record)
        self.glue = glue
        self.queries: list[tuple[str, int]] = []

    def _rrs(self, name: str, rtype: int) -> list[dns.RRHeader]:
        entry = self.zone.get(name, [])
        if isinstance(entry, str):
            return []
        found = []
        for record in entry:
            kind, ttl, payload = _payload(record)
            if kind == rtype:
                found.append(dns.RRHeader(name, kind, dns.IN, ttl, payload, auth=True))
        return found

    def _lookup(self, name: Any, cls: int, type: int, timeout: Any) -> defer.Deferred[Any]:
        text = (name.decode() if isinstance(name, bytes) else str(name)).lower().rstrip(".")
        self.queries.append((text, type))
        entry = self.zone.get(text)
        if entry is None:
            return defer.fail(error.AuthoritativeDomainError(text))
        if isinstance(entry, str) and entry in _RCODES:
            return defer.fail(_Answer(_RCODES[entry]))
        if entry == "DROP":
            return defer.Deferred()
        answers = self._rrs(text, type)
        if not answers and type != dns.CNAME:
            answers = self._rrs(text, dns.CNAME)
        additional: list[dns.RRHeader] = []
        if type == dns.SRV and self.glue:
            for rr in answers:
                target = rr.payload.target.name.decode().lower()
                if target:
                    additional += self._rrs(target, dns.A) + self._rrs(target, dns.AAAA)
        return defer.succeed((answers, [], additional))


class FakeResolver:
    """An IResolver over a zone (through ZoneAuthority) that records queries as (name, TYPE).

    NXDOMAIN comes back as DNSNameError, as from twisted.names.client. ``failures`` makes a
    (name, TYPE) fail with the exception given; ``hold`` keeps answers until ``release()``.
    """

    def __init__(self, zone: dict[str, Any], *, glue: bool = False) -> None:
        self.authority = ZoneAuthority(zone, glue=glue)
        self.queries: list[tuple[str, str]] = []
        self.failures: dict[tuple[str, str], Exception] = {}
        self.hold = False
        self.held: list[tuple[dns.Query, Deferred[Any]]] = []

    def query(self, query: dns.Query, timeout: Any = None) -> Deferred[Any]:
        key = (query.name.name.decode(), dns.QUERY_TYPES[query.type])
        self.queries.append(key)
        if key in self.failures:
            return defer.fail(self.failures[key])
        answer: Deferred[Any] = Deferred()
        if self.hold:
            self.held.append((query, answer))
        else:
            self._answer(query, answer)
        return answer

    def release(self) -> None:
        held, self.held = self.held, []
        for query, answer in held:
            self._answer(query, answer)

    def _answer(self, query: dns.Query, answer: Deferred[Any]) -> None:
        def nxdomain(failure: Failure) -> None:
            failure.trap(error.AuthoritativeDomainError)
            raise error.DNSNameError(query.name.name)

        self.authority.query(query).addErrback(nxdomain).chainDeferred(answer)


class DNSPort:
    """The UDP and TCP ports of one listening server, and its authority."""

    def __init__(self, udp: Any, tcp: Any, authority: ZoneAuthority) -> None:
        self.udp = udp
        self.tcp = tcp
        self.authority = authority
        self.host: str = udp.getHost().host
        self.number: int = udp.getHost().port

    def stop(self) -> defer.Deferred[Any]:
        """Stop listening on both; the Deferred fires when both ports are closed."""
        return defer.gatherResults([defer.maybeDeferred(self.udp.stopListening), self.tcp.stopListening()])


def listen_dns(reactor: Any, zone: Zone, *, port: int = 0, interface: str = "127.0.0.1", glue: bool = True) -> DNSPort:
    """Serve ``zone`` over UDP and TCP on ``interface`` at ``port`` (0: a free port, same for both)."""
    authority = ZoneAuthority(zone, glue=glue)
    factory = _Factory(authorities=[authority])
    last: CannotListenError | None = None
    for _ in range(20):  # the free UDP port may be taken for TCP: pick another
        udp = reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface=interface)
        try:
            tcp = reactor.listenTCP(udp.getHost().port, factory, interface=interface)
        except CannotListenError as exc:
            udp.stopListening()
            last = exc
            if port:
                break
            continue
        return DNSPort(udp, tcp, authority)
    assert last is not None
    raise last


class DNSProcess:
    """``python -m tests.dnsserver`` serving ``zone`` on a free loopback port, in a process
    of its own (for tests whose proxy runs as a separate twistd). Stop it with ``stop``."""

    def __init__(self, zone: Mapping[str, Any], directory: Path, timeout: float = 30.0) -> None:
        zone_file = directory / "zone.json"
        zone_file.write_text(json.dumps(zone))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.dnsserver", "--port", "0", "--zone", str(zone_file)],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert self.process.stdout is not None
            with selectors.DefaultSelector() as selector:
                selector.register(self.process.stdout, selectors.EVENT_READ)
                if not selector.select(timeout=timeout):
                    raise TimeoutError(f"the DNS server did not start within {timeout:g} s")
            line = self.process.stdout.readline()
            if not line.startswith("listening on 127.0.0.1:"):
                raise RuntimeError(f"the DNS server did not start: {line!r}")
        except BaseException:
            self.stop()
            raise
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def load_zone(path: str) -> dict[str, Any]:
    """A zone from a JSON file: {name: [[type, ...fields, ttl], ...] | "SERVFAIL" | "REFUSED" | "DROP"}."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a zone is a JSON object of name -> records")
    return data


def main(argv: list[str] | None = None) -> None:
    """Serve a JSON zone until stopped; print the address once listening."""
    parser = argparse.ArgumentParser(prog="python -m tests.dnsserver", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="UDP and TCP port (0: a free one)")
    parser.add_argument("--interface", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--zone", required=True, help="JSON zone file")
    parser.add_argument("--no-glue", action="store_true", help="no A/AAAA in the additional section of SRV answers")
    args = parser.parse_args(argv)
    zone = load_zone(args.zone)

    from twisted.internet import reactor

    listening = listen_dns(reactor, zone, port=args.port, interface=args.interface, glue=not args.no_glue)
    host = f"[{listening.host}]" if ":" in listening.host else listening.host
    print(f"listening on {host}:{listening.number}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
