"""Real processes for the integration tests: the proxy under twistd, and SIPp.

Everything here talks to 127.0.0.1 only, on ports picked free at run time.
Nothing sleeps for a fixed time: each wait polls for an event (a listening
socket, an answered OPTIONS, a process exit, a log line) up to a generous
bound, and every process started here is stopped again by ``stop()`` (the
context managers and the fixtures in conftest.py call it, also on failure).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

LOOPBACK = "127.0.0.1"
SCENARIOS = Path(__file__).parent / "scenarios"

#: how long (-d) a uas_call.xml callee over UDP keeps a finished call to answer
#: retransmitted BYEs; covers the caller's first two retransmissions
UDP_CALLEE_LINGER_MS = 2_000


def callee_call_args(transport: str) -> dict[str, Any]:
    """Sipp keyword arguments for a uas_call.xml callee on ``transport``.

    Over UDP the finished call lingers to answer retransmitted BYEs; over TCP
    it ends at once (nothing is retransmitted, and SIPp would count a call
    lingering when the caller closes its connection as failed).
    """
    if transport == "udp":
        return {"pause_ms": UDP_CALLEE_LINGER_MS}
    return {"pause_ms": 0, "variables": {"no_linger": "1"}}


#: sipp's exit codes (see "sipp -h"): what each one means, for failure messages
SIPP_EXIT_CODES = {
    0: "all calls were successful",
    1: "at least one call failed",
    97: "exit on an internal command",
    99: "normal exit without calls processed",
    254: "fatal error binding a socket",
    255: "fatal error",
}


# -- small helpers -----------------------------------------------------------


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll ``condition`` until it returns something true; return that value.

    Raises TimeoutError naming ``what`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A port on 127.0.0.1 that is free for both UDP and TCP right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


def is_listening(transport: str, port: int, address: str = LOOPBACK) -> bool:
    """True when some socket is bound to address:port (UDP) or listens there (TCP).

    Reads /proc/net/udp or /proc/net/tcp, so it works for a process that does
    not answer probes (a SIPp UAS waiting for its INVITE).
    """
    wanted_address = socket.inet_aton(address)[::-1].hex().upper()
    wildcard = "00000000"
    wanted_port = f"{port:04X}"
    # /proc/net/tcp state 0A is LISTEN; UDP sockets show 07 (unconnected)
    wanted_state = "0A" if transport == "tcp" else "07"
    try:
        with open(f"/proc/net/{transport}") as table:
            lines = table.readlines()[1:]
    except OSError:
        return _probe_listening(transport, port, address)
    for line in lines:
        fields = line.split()
        local, state = fields[1], fields[3]
        host, _, hex_port = local.partition(":")
        if hex_port == wanted_port and host in (wanted_address, wildcard) and state == wanted_state:
            return True
    return False


def _probe_listening(transport: str, port: int, address: str) -> bool:
    """Fallback without /proc: try to bind the port ourselves."""
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return True
    return False


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path.name}: not written)"
    return "\n".join(text.splitlines()[-lines:])


def twistd_path() -> Path:
    """The twistd that belongs to the running Python (its venv)."""
    return Path(sys.executable).parent / "twistd"


# -- raw SIP over a socket -----------------------------------------------------


@dataclass
class SipResponse:
    """A SIP response as read off the wire: status and headers (lowercase names)."""

    status: int
    reason: str
    headers: dict[str, list[str]]
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return ", ".join(values) if values else None


_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "l": "content-length",
    "k": "supported",
}


def parse_response(data: bytes) -> SipResponse:
    """Parse one complete SIP response (start line, headers, body)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", errors="replace").split("\r\n")
    version, status, reason = [*lines[0].split(" ", 2), "", ""][:3]
    if not version.startswith("SIP/2.0") or not status.isdigit():
        raise ValueError(f"not a SIP response: {lines[0]!r}")
    headers: dict[str, list[str]] = {}
    last = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and last is not None:
            headers[last][-1] += " " + line.strip()
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        name = _COMPACT.get(name, name)
        headers.setdefault(name, []).append(value.strip())
        last = name
    return SipResponse(int(status), reason, headers, body, data)


def options_request(target_port: int, transport: str, local_port: int, call_id: str, uri: str | None = None) -> bytes:
    """An OPTIONS for the proxy itself (Request-URI sip:127.0.0.1:<port>) or for ``uri``."""
    branch = "z9hG4bK-it-" + secrets.token_hex(8)
    via_transport = transport.upper()
    lines = [
        f"OPTIONS {uri or f'sip:{LOOPBACK}:{target_port}'} SIP/2.0",
        f"Via: SIP/2.0/{via_transport} {LOOPBACK}:{local_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:probe@{LOOPBACK}:{local_port}>;tag=" + secrets.token_hex(4),
        f"To: <sip:{LOOPBACK}:{target_port}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:probe@{LOOPBACK}:{local_port}>",
        "Accept: application/sdp",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def send_options(port: int, transport: str = "udp", timeout: float = 1.0, uri: str | None = None) -> SipResponse | None:
    """Send one OPTIONS to the proxy's own URI (or to ``uri`` through it); return its final response.

    Returns None when no final response arrives within ``timeout`` seconds
    (or the TCP connection is refused). Provisional responses are skipped.
    """
    call_id = f"{secrets.token_hex(8)}@{LOOPBACK}"
    deadline = time.monotonic() + timeout
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            sock.sendto(
                options_request(port, "udp", sock.getsockname()[1], call_id, uri),
                (LOOPBACK, port),
            )
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data = sock.recv(65535)
                except (TimeoutError, ConnectionRefusedError):
                    return None
                response = _matching_final(data, call_id)
                if response is not None:
                    return response
        return None
    try:
        sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    except OSError:
        return None
    with sock:
        sock.sendall(options_request(port, "tcp", sock.getsockname()[1], call_id, uri))
        buffer = b""
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65535)
            except (TimeoutError, OSError):
                return None
            if not chunk:
                return None
            buffer += chunk
            while (message := _split_stream_message(buffer)) is not None:
                data, buffer = message
                response = _matching_final(data, call_id)
                if response is not None:
                    return response
    return None


def _split_stream_message(buffer: bytes) -> tuple[bytes, bytes] | None:
    """One whole message off the front of a stream buffer, by Content-Length."""
    buffer = buffer.lstrip(b"\r\n")
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    match = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)", buffer[:end])
    length = int(match.group(1)) if match else 0
    total = end + 4 + length
    if len(buffer) < total:
        return None
    return buffer[:total], buffer[total:]


def _matching_final(data: bytes, call_id: str) -> SipResponse | None:
    try:
        response = parse_response(data)
    except ValueError:
        return None
    if response.header("call-id") != call_id or response.status < 200:
        return None
    return response


# -- the proxy ---------------------------------------------------------------


def proxy_config(
    listen: Sequence[tuple[str, int]],
    routes: Sequence[tuple[str, str]] = (),
    *,
    record_route: bool = True,
    t1: float = 0.5,
    t2: float = 4.0,
    t4: float = 5.0,
    timer_c: float = 180.0,
    level: str = "info",
    domains: Sequence[str] = (),
) -> str:
    """TOML text for a proxy on 127.0.0.1.

    ``listen`` is a list of (transport, port); ``routes`` a list of
    (regex searched in the Request-URI, next hop URI) for the static router.
    """

    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "[proxy]",
        f"domains = [{', '.join(quoted(d) for d in domains)}]",
        f"record_route = {'true' if record_route else 'false'}",
        "",
    ]
    for transport, port in listen:
        lines += [
            "[[listen]]",
            f"transport = {quoted(transport)}",
            f'address = "{LOOPBACK}"',
            f"port = {port}",
            "",
        ]
    # names come from [dns] hosts only: tests never ask the machine's resolver
    lines += ["[dns]", 'mode = "hosts"', ""]
    lines += [
        "[timers]",
        f"t1 = {float(t1)}",
        f"t2 = {float(t2)}",
        f"t4 = {float(t4)}",
        f"timer_c = {float(timer_c)}",
        "",
        "[log]",
        f"level = {quoted(level)}",
        "",
        "[routing]",
        'routers = ["static"]',
        "",
    ]
    for match, next_hop in routes:
        lines += [
            "[[routing.static.routes]]",
            f"match = {quoted(match)}",
            f"next_hop = {quoted(next_hop)}",
            "",
        ]
    return "\n".join(lines)


def callee_route(port: int, transport: str) -> tuple[str, str]:
    """A static route sending requests for 127.0.0.1:<port> there over ``transport``.

    Without one, a Request-URI without a transport parameter is sent over UDP
    (RFC 3263 section 4.1), so a TCP callee needs it.
    """
    return rf"@127\.0\.0\.1:{port}(?![0-9])", f"sip:{LOOPBACK}:{port};transport={transport}"


_TXN_LINE = re.compile(r"\btxn\s+(.*)$")
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_txn_lines(text: str) -> list[dict[str, str]]:
    """The ``txn key=value ...`` lines of a proxy log, as dicts."""
    result = []
    for line in text.splitlines():
        match = _TXN_LINE.search(line)
        if match is None:
            continue
        fields = {key: value.strip('"') for key, value in _FIELD.findall(match.group(1))}
        if "method" in fields:
            result.append(fields)
    return result


class ProxyProcess:
    """The proxy as a real ``twistd -n sipgate-proxy`` process.

    Writes ``config_text`` to ``workdir/proxy.toml``, starts twistd with its
    stdout (the log) in ``workdir/proxy.log`` and waits until every UDP
    listener answers OPTIONS with 200 and every TCP listener accepts a
    connection.
    """

    def __init__(
        self,
        config_text: str,
        workdir: Path,
        *,
        name: str = "proxy",
        startup_timeout: float = 15.0,
        twistd: Path | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.name = name
        self.config_path = self.workdir / f"{name}.toml"
        self.log_path = self.workdir / f"{name}.log"
        self.config_text = config_text
        self.startup_timeout = startup_timeout
        self.twistd = twistd or twistd_path()
        config = tomllib.loads(config_text)
        self.listeners: list[tuple[str, int]] = [
            (entry["transport"], int(entry["port"])) for entry in config.get("listen", [])
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "proxy not started"
        return self.process.pid

    def port(self, transport: str = "udp") -> int:
        """The port of the first listener with this transport."""
        for kind, port in self.listeners:
            if kind == transport:
                return port
        raise KeyError(f"no {transport} listener in the proxy config")

    def start(self) -> ProxyProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        if not self.twistd.exists():
            raise RuntimeError(f"twistd not found at {self.twistd}")
        self._log_file = open(self.log_path, "wb")  # closed in stop()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        command = [
            str(self.twistd),
            "-n",
            "--pidfile=",
            "sipgate-proxy",
            "--config",
            str(self.config_path),
        ]
        self.process = subprocess.Popen(
            command,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
        )
        try:
            self.wait_ready(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Wait for OPTIONS 200 on each UDP listener and a TCP connect on each TCP one."""
        deadline = time.monotonic() + timeout
        pending = list(self.listeners)
        while pending:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.process.returncode} before it was ready; "
                    f"log:\n{tail(self.log_path)}"
                )
            transport, port = pending[0]
            if transport == "udp":
                response = send_options(port, "udp", timeout=0.1)
                ready = response is not None and response.status == 200
            else:
                ready = _tcp_connects(port)
            if ready:
                pending.pop(0)
                continue
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name} not ready after {timeout:.0f} s: {transport} port {port} "
                    f"{'did not answer OPTIONS with 200' if transport == 'udp' else 'refused connections'}; "
                    f"log:\n{tail(self.log_path)}"
                )
            if transport != "udp":  # the UDP probe already waited its 100 ms
                time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; return the exit code."""
        code = None
        if self.process is not None:
            code = _terminate(self.process, timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def txn_lines(self, method: str | None = None, **fields: str) -> list[dict[str, str]]:
        """Transaction log lines, filtered by method and exact field values."""
        return [
            line
            for line in parse_txn_lines(self.log_text())
            if (method is None or line.get("method") == method)
            and all(line.get(key) == value for key, value in fields.items())
        ]

    def wait_for_txn_lines(self, count: int, method: str, timeout: float = 20.0, **fields: str) -> list[dict[str, str]]:
        """Wait until at least ``count`` matching txn lines are in the log.

        Returns the matching lines found by then (fewer than ``count`` when the
        bound passes: the caller's assertion then shows what was there).
        """
        deadline = time.monotonic() + timeout
        while True:
            lines = self.txn_lines(method, **fields)
            if len(lines) >= count or time.monotonic() >= deadline:
                return lines
            if self.process is not None and self.process.poll() is not None:
                return lines
            time.sleep(0.1)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _tcp_connects(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """Stop a process we started (and its session): SIGTERM, then SIGKILL."""
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


# -- SIPp --------------------------------------------------------------------


@dataclass
class SippResult:
    """What a finished SIPp run reported."""

    name: str
    returncode: int | None
    stats: dict[str, str]
    workdir: Path
    command: list[str] = field(default_factory=list)

    def _count(self, column: str) -> int:
        try:
            return int(float(self.stats.get(column, "0") or 0))
        except ValueError:
            return 0

    @property
    def successful(self) -> int:
        return self._count("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self._count("FailedCall(C)")

    @property
    def created(self) -> int:
        return self._count("TotalCallCreated")

    @property
    def retransmissions(self) -> int:
        return self._count("Retransmissions(C)")

    def describe(self) -> str:
        """A summary for assertion messages: exit code, counts, errors, screen."""
        if self.returncode is None:
            meaning = "did not exit"
        elif self.returncode < 0:
            meaning = f"killed by signal {-self.returncode}"
        else:
            meaning = SIPP_EXIT_CODES.get(self.returncode, "unknown")
        failures = {
            key: value
            for key, value in self.stats.items()
            if key.startswith("Failed") and key.endswith("(C)") and value not in ("", "0")
        }
        return (
            f"sipp {self.name}: exit code {self.returncode} ({meaning}); "
            f"successful={self.successful} failed={self.failed} created={self.created} "
            f"retransmissions={self.retransmissions} failure counters={failures}\n"
            f"command: {' '.join(self.command)}\n"
            f"--- {self.name} errors ---\n{tail(self.workdir / f'{self.name}_errors.log', 30)}\n"
            f"--- {self.name} screen ---\n{tail(self.workdir / f'{self.name}_screen.log', 40)}"
        )


def read_sipp_stats(path: Path) -> dict[str, str]:
    """The last row of a ``-trace_stat`` CSV file, keyed by column name."""
    try:
        rows = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    header = rows[0].split(";")
    values = rows[-1].split(";")
    return dict(zip(header, values, strict=False))


class Sipp:
    """One SIPp process (a UAC or a UAS) on 127.0.0.1.

    The exit code is meaningful: with ``-m calls`` SIPp exits 0 when every
    call succeeded and 1 when at least one failed; ``-timeout`` with
    ``-timeout_error`` bounds the whole run. Statistics go to
    ``<name>_stats.csv`` (``-trace_stat``), unexpected messages to
    ``<name>_errors.log`` and, when ``trace_msg``, every message to
    ``<name>_messages.log``, all in ``workdir``.

    For a UAS, ``start()`` returns once its SIP port is bound (UDP) or
    listening (TCP).
    """

    def __init__(
        self,
        scenario: str | Path,
        workdir: Path,
        *,
        name: str,
        transport: str = "udp",
        local_port: int | None = None,
        remote: tuple[str, int] | None = None,
        send_to: tuple[str, int] | None = None,
        calls: int = 1,
        rate: float | None = None,
        pause_ms: int = 0,
        timeout: float = 60.0,
        recv_timeout_ms: int | None = 10_000,
        trace_msg: bool = True,
        service: str = "service",
        limit: int | None = None,
        variables: Mapping[str, str] | None = None,
        extra_args: Iterable[str] = (),
        sipp: str | None = None,
    ) -> None:
        if transport not in ("udp", "tcp"):
            raise ValueError(f"transport must be udp or tcp, got {transport!r}")
        self.scenario = Path(scenario) if Path(scenario).is_absolute() else SCENARIOS / scenario
        self.workdir = Path(workdir)
        self.name = name
        self.transport = transport
        self.local_port = local_port or free_port()
        self.remote = remote
        self.send_to = send_to
        self.calls = calls
        self.rate = rate
        self.pause_ms = pause_ms
        self.timeout = timeout
        self.recv_timeout_ms = recv_timeout_ms
        self.trace_msg = trace_msg
        self.service = service
        self.limit = limit
        self.variables = dict(variables or {})
        self.extra_args = list(extra_args)
        self.sipp = sipp or shutil.which("sipp") or "sipp"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._stdout: IO[bytes] | None = None

    @property
    def is_uac(self) -> bool:
        return self.remote is not None

    @property
    def stats_path(self) -> Path:
        return self.workdir / f"{self.name}_stats.csv"

    @property
    def messages_path(self) -> Path:
        return self.workdir / f"{self.name}_messages.log"

    @property
    def errors_path(self) -> Path:
        return self.workdir / f"{self.name}_errors.log"

    def command(self) -> list[str]:
        args = [self.sipp]
        if self.remote is not None:
            args.append(f"{self.remote[0]}:{self.remote[1]}")
        args += [
            "-sf", str(self.scenario),
            "-i", LOOPBACK,
            "-p", str(self.local_port),
            "-t", "u1" if self.transport == "udp" else "t1",
            "-ci", LOOPBACK,
            "-m", str(self.calls),
            "-d", str(self.pause_ms),
            "-s", self.service,
            "-nostdin",
            "-timeout", f"{self.timeout:g}s",
            "-timeout_error",
            "-trace_stat", "-stf", str(self.stats_path), "-fd", "1",
            "-trace_err", "-error_file", str(self.errors_path),
            "-trace_screen", "-screen_file", str(self.workdir / f"{self.name}_screen.log"),
        ]  # fmt: skip
        if self.send_to is not None:
            args += ["-rsa", f"{self.send_to[0]}:{self.send_to[1]}"]
        if self.rate is not None:
            args += ["-r", f"{self.rate:g}"]
        if self.limit is not None:
            args += ["-l", str(self.limit)]
        if self.recv_timeout_ms is not None:
            args += ["-recv_timeout", str(self.recv_timeout_ms)]
        if self.trace_msg:
            args += ["-trace_msg", "-message_file", str(self.messages_path)]
        for name, value in self.variables.items():
            args += ["-set", name, value]
        return args + self.extra_args

    def start(self, ready_timeout: float = 10.0) -> Sipp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._stdout = open(self.workdir / f"{self.name}.out", "wb")  # closed in stop()
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        if not self.is_uac:
            try:
                self.wait_listening(ready_timeout)
            except BaseException:
                self.stop()
                raise
        return self

    def wait_listening(self, timeout: float) -> None:
        """Wait until the SIP port is bound (UDP) or listening (TCP)."""

        def listening() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"sipp {self.name} exited with code {self.process.returncode} before listening:\n"
                    f"{tail(self.workdir / f'{self.name}.out')}\n{tail(self.errors_path)}"
                )
            return is_listening(self.transport, self.local_port)

        wait_until(
            listening,
            timeout,
            what=f"sipp {self.name} to listen on {self.transport} {self.local_port}",
        )

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to exit (killing it after the bound) and read its results.

        The default bound is the run's own ``-timeout`` plus a margin.
        """
        assert self.process is not None, "sipp not started"
        bound = self.timeout + 15.0 if timeout is None else timeout
        try:
            self.process.wait(bound)
        except subprocess.TimeoutExpired:
            self.stop()
        return self.result()

    def result(self) -> SippResult:
        code = self.process.returncode if self.process is not None else None
        return SippResult(
            self.name,
            code,
            read_sipp_stats(self.stats_path),
            self.workdir,
            self.command(),
        )

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop SIPp if it still runs (SIGTERM, then SIGKILL)."""
        code = None
        if self.process is not None:
            code = _terminate(self.process, timeout)
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None
        return code

    def messages(self) -> str:
        try:
            return self.messages_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- running a caller against a callee ------------------------------------------


def run_sipp_pair(uac: Sipp, uas: Sipp, callee_grace: float = 15.0) -> tuple[SippResult, SippResult]:
    """Start the callee, then the caller; wait for both and return their results.

    The callee gets ``callee_grace`` seconds after the caller is done (it can
    only finish once the caller's last request reached it).
    """
    uas.start()
    uac.start()
    caller = uac.wait()
    callee = uas.wait(callee_grace)
    return caller, callee


def call_ids_of(uac: Sipp) -> Callable[[dict[str, str]], bool]:
    """A predicate for txn lines that belong to this SIPp caller's calls."""
    assert uac.process is not None
    suffix = f"-{uac.process.pid}@{LOOPBACK}"
    return lambda line: line.get("call_id", "").endswith(suffix)


def explain(proxy: ProxyProcess, *results: SippResult) -> str:
    """Everything needed to see why a run failed."""
    parts = [result.describe() for result in results]
    parts.append(f"--- proxy log (tail) ---\n{proxy.log_tail(40)}")
    return "\n".join(parts)


# -- what a SIPp process saw (its -trace_msg log) -------------------------------


@dataclass(frozen=True)
class TracedMessage:
    """One message of a SIPp ``-trace_msg`` log: when, which way, and its text."""

    #: the log's wall-clock timestamp, in seconds since the epoch
    at: float
    #: "received" or "sent"
    direction: str
    text: str

    @property
    def start_line(self) -> str:
        return self.text.split("\r\n", 1)[0].split("\n", 1)[0].strip()

    @property
    def method(self) -> str | None:
        """The method of a request, None for a response."""
        first = self.start_line
        return None if first.startswith("SIP/2.0") else first.split(" ", 1)[0]

    @property
    def request_uri(self) -> str:
        return self.start_line.split(" ")[1]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (full name, any case), or None."""
        match = re.search(rf"(?im)^{re.escape(name)}[ \t]*:[ \t]*(.*?)\r?$", self.text)
        return match.group(1) if match else None


_TRACE_SEPARATOR = re.compile(r"(?m)^-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)\r?\n")


def traced_messages(path: Path) -> list[TracedMessage]:
    """Every message of a SIPp ``-trace_msg`` log, in the order logged."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    parts = _TRACE_SEPARATOR.split(text)
    messages = []
    # parts: [before, stamp, block, stamp, block, ...]
    for stamp, block in zip(parts[1::2], parts[2::2], strict=True):
        header, _, body = block.partition("\n\n")
        if " received " in header:
            direction = "received"
        elif " sent " in header:
            direction = "sent"
        else:
            continue
        at = time.mktime(time.strptime(stamp.split(".")[0], "%Y-%m-%d %H:%M:%S"))
        if "." in stamp:
            at += float("0." + stamp.split(".")[1])
        messages.append(TracedMessage(at, direction, body.strip("\n")))
    return messages


def received_requests(process: Sipp, method: str = "INVITE") -> list[TracedMessage]:
    """The requests of ``method`` a SIPp process received, one per Call-ID (retransmissions left out)."""
    seen: set[str | None] = set()
    result = []
    for message in traced_messages(process.messages_path):
        if message.direction != "received" or message.method != method:
            continue
        call_id = message.header("Call-ID")
        if call_id in seen:
            continue
        seen.add(call_id)
        result.append(message)
    return result


#: the start of an event in a SIPp -trace_err file (events do not always end a line)
_SIPP_ERROR_EVENT = re.compile(r"\d{4}-\d\d-\d\d\t\d\d:\d\d:\d\d\.\d+\t[0-9.]+: ")
_SIPP_ERROR_CALL_ID = re.compile(r"(?i)call-id[:= ]+'?([^\s,']+?)'?[\s,]")


def aborted_call_ids(process: Sipp) -> set[str]:
    """Call-IDs of the calls a SIPp process aborted (receive timeout, unexpected message), from its error log.

    A call SIPp aborts may still see responses afterwards (to the BYE or
    CANCEL it sends on abort), so its message log alone can make it look whole.
    """
    try:
        text = process.errors_path.read_text(errors="replace")
    except OSError:
        return set()
    found = set()
    for event in _SIPP_ERROR_EVENT.split(text):
        match = _SIPP_ERROR_CALL_ID.search(event)
        if match is not None and "abort" in event.lower():
            found.add(match.group(1))
    return found
