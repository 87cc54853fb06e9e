"""Real ``redis-server`` processes for tests: started on free ports, stopped at teardown.

:class:`RedisProcesses` starts a server, a replica or Sentinels
(``processes.redis()``, ``.replica(primary)``, ``.sentinels(master)``), each in
a directory of its own under the root it is given; a test can freeze one with
SIGSTOP (:meth:`RedisProcess.freeze`), :meth:`~RedisProcess.resume` it, kill it,
and talk to it with :meth:`RedisProcess.command` (a tiny synchronous RESP
client, so that the helpers depend on nothing but the server binary). The
``redis_server`` fixture is one such server, skipped when the binary is missing.

Servers never touch port 6379 and never persist (``--save "" --appendonly no``).

TLS: ``processes.redis(tls=TLSFiles.make(directory))`` starts a server that
listens only on a TLS port (``--port 0 --tls-port <free>``), with certificates
made by ``trustme`` (a ``test`` extra); its ``url`` is a ``rediss://`` URL
carrying the CA and a client certificate, and :meth:`RedisProcess.command`
speaks TLS to it. ``sentinels(..., tls=...)`` does the same for Sentinels.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = [
    "RedisProcess",
    "RedisProcesses",
    "TLSFiles",
    "free_port",
    "redis_available",
    "redis_missing_reason",
    "sentinel_master",
    "wait_until",
]

_STARTUP_S = 5.0
_POLL_S = 0.01
_RESERVED_PORTS = frozenset((6379, 26379))


def redis_available() -> bool:
    """Whether a ``redis-server`` binary is on ``PATH``."""
    return shutil.which("redis-server") is not None


def redis_missing_reason() -> str:
    """The skip reason given when ``redis-server`` is not installed."""
    return (
        "redis-server is not installed (on PATH): install Redis (Debian/Ubuntu: "
        "apt-get install redis-server) to run the tests that need a real server"
    )


def free_port() -> int:
    """A TCP port nothing listens on right now (never Redis's default ports)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _RESERVED_PORTS:
            return port


def wait_until(predicate: Any, budget_s: float = _STARTUP_S, what: str = "condition") -> None:
    """Poll ``predicate()`` (synchronously) until true; fail the test after ``budget_s``."""
    give_up = time.monotonic() + budget_s
    while True:
        try:
            if predicate():
                return
        except OSError:
            pass
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(_POLL_S)


def _encode(*args: Any) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read(reader: Any) -> Any:
    line = reader.readline()
    if not line:
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        return reader.read(size + 2)[:-2].decode("utf-8", "replace")
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_read(reader) for _ in range(size)]
    raise ConnectionError(f"unexpected reply {line!r}")


@dataclass(frozen=True)
class TLSFiles:
    """A CA, a server certificate for 127.0.0.1/localhost, and a client certificate."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(
        cls, directory: Path, *, names: tuple[str, ...] = ("127.0.0.1", "localhost")
    ) -> TLSFiles:
        """Write a new CA and certificates under ``directory``; the server's
        certificate is for ``names``."""
        import trustme  # a test dependency; only TLS tests need it

        directory.mkdir(parents=True, exist_ok=True)
        authority = trustme.CA()
        server = authority.issue_cert(*names)
        client = authority.issue_cert("autobot-client.example")
        files = cls(
            directory / "ca.pem",
            directory / "server.pem",
            directory / "server.key",
            directory / "client.pem",
            directory / "client.key",
        )
        authority.cert_pem.write_to_path(str(files.ca))
        server.cert_chain_pems[0].write_to_path(str(files.cert))
        server.private_key_pem.write_to_path(str(files.key))
        client.cert_chain_pems[0].write_to_path(str(files.client_cert))
        client.private_key_pem.write_to_path(str(files.client_key))
        return files

    def server_args(self) -> list[str]:
        return [
            "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca),
        ]  # fmt: skip

    def query(self, *, client_cert: bool = True) -> str:
        """The ``ssl_*`` query of a URL trusting this CA (and presenting the client cert)."""
        options = {"ssl_ca_certs": self.ca}
        if client_cert:
            options |= {"ssl_certfile": self.client_cert, "ssl_keyfile": self.client_key}
        return "&".join(f"{key}={quote(str(value))}" for key, value in options.items())

    def context(self) -> ssl.SSLContext:
        """A client context for the synchronous helper, with the client certificate.

        It trusts the CA but does not check the host name, so that a server
        whose certificate names another host (for host-name tests) starts.
        """
        context = ssl.create_default_context(cafile=str(self.ca))
        context.check_hostname = False
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


@dataclass
class RedisProcess:
    """One ``redis-server`` (or Sentinel) process."""

    port: int
    directory: Path
    args: list[str]
    password: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    tls: TLSFiles | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{auth}{self.host}:{self.port}/0?{self.tls.query()}"
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> RedisProcess:
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - kept for the process
        self.process = subprocess.Popen(
            ["redis-server", *self.args], cwd=self.directory, stdout=log, stderr=log
        )
        log.close()
        wait_until(self._answers, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            tail = (self.directory / "server.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"redis-server on port {self.port} exited:\n{tail}")
        reply = self.command("PING", budget_s=0.2)
        return reply == "PONG" or (isinstance(reply, RuntimeError) and "NOAUTH" in str(reply))

    def command(self, *args: Any, budget_s: float = 2.0) -> Any:
        """Send one command on a new connection; return the decoded reply.

        Error replies are returned as ``RuntimeError`` instances, not raised.
        """
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(
                socket.create_connection((self.host, self.port), timeout=budget_s)
            )
            if self.tls is not None:
                sock = stack.enter_context(
                    self.tls.context().wrap_socket(sock, server_hostname=self.host)
                )
            if self.password:
                sock.sendall(_encode("AUTH", self.password))
            sock.sendall(_encode(*args))
            reader = sock.makefile("rb")
            if self.password:
                _read(reader)
            return _read(reader)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def freeze(self) -> None:
        """SIGSTOP: the process stops answering but its sockets stay open.

        What a hung server, a long GC pause or a VM migration looks like to a
        client: connections neither answer nor fail. :meth:`resume` ends it;
        :meth:`stop` and :meth:`kill` resume the process first.
        """
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`freeze`: it answers again, as if nothing happened."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    thaw = resume

    def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(_STARTUP_S)

    def stop(self) -> None:
        """Terminate (after thawing, in case it was frozen) and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(_STARTUP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(_STARTUP_S)


def _server_args(
    port: int, directory: Path, extra: list[str], tls: TLSFiles | None = None
) -> list[str]:
    listen = ["--port", str(port)]
    if tls is not None:
        listen = ["--port", "0", "--tls-port", str(port), *tls.server_args()]
    return [
        *listen,
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        # Replicas sync at once instead of after the default 5 s batching delay.
        "--repl-diskless-sync-delay", "0",
        *extra,
    ]  # fmt: skip


class RedisProcesses:
    """Starts servers, replicas and Sentinels under ``root``; :meth:`stop_all` ends them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[RedisProcess] = []
        self._count = 0

    def _directory(self, kind: str) -> Path:
        self._count += 1
        path = self.root / f"{kind}-{self._count}"
        path.mkdir(parents=True)
        return path

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()
        self.processes.clear()

    def redis(
        self, *extra: str, password: str | None = None, tls: TLSFiles | None = None
    ) -> RedisProcess:
        """A ``redis-server`` on a free port; ``extra`` are more command-line options.

        With ``tls`` it listens on that port with TLS only (Redis's default
        ``--tls-auth-clients yes`` asks clients for a certificate; pass
        ``"--tls-auth-clients", "no"`` in ``extra`` to stop that).
        """
        options = list(extra)
        if password:
            options += ["--requirepass", password, "--masterauth", password]
        for _ in range(3):  # a free port can be taken between the probe and the bind
            port = free_port()
            directory = self._directory("redis")
            server = RedisProcess(
                port, directory, _server_args(port, directory, options, tls), password, tls=tls
            )
            try:
                server.start()
            except AssertionError:
                server.stop()
                continue
            self.processes.append(server)
            return server
        raise AssertionError("could not start redis-server on a free port")

    def replica(self, primary: RedisProcess) -> RedisProcess:
        """A replica of ``primary``, returned once its replication link is up."""
        replica = self.redis(
            "--replicaof", primary.host, str(primary.port), password=primary.password
        )
        wait_until(
            lambda: "master_link_status:up" in str(replica.command("INFO", "replication")),
            what=f"replica {replica.address} to sync from {primary.address}",
        )
        return replica

    def sentinels(
        self,
        master: RedisProcess,
        *,
        count: int = 1,
        service: str = "autobot",
        down_after_ms: int = 200,
        failover_timeout_ms: int = 1000,
        expect_replicas: int = 1,
        tls: TLSFiles | None = None,
    ) -> list[RedisProcess]:
        """``count`` Sentinels (``redis-server <conf> --sentinel``) watching ``master``.

        The quorum is a majority. Returns once every Sentinel sees
        ``expect_replicas`` replicas and the other Sentinels, so that a failover
        can start as soon as the test kills the master. With ``tls`` the
        Sentinels listen with TLS only and reach the master over TLS.
        """
        quorum = count // 2 + 1
        started: list[RedisProcess] = []
        for _ in range(count):
            port = free_port()
            directory = self._directory("sentinel")
            config = directory / "sentinel.conf"
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {directory}",
                f"sentinel monitor {service} {master.host} {master.port} {quorum}",
                f"sentinel down-after-milliseconds {service} {down_after_ms}",
                f"sentinel failover-timeout {service} {failover_timeout_ms}",
                f"sentinel parallel-syncs {service} 1",
            ]
            if master.password:
                lines.append(f"sentinel auth-pass {service} {master.password}")
            if tls is not None:
                lines[0] = "port 0"
                lines += [
                    f"tls-port {port}",
                    f"tls-cert-file {tls.cert}",
                    f"tls-key-file {tls.key}",
                    f"tls-ca-cert-file {tls.ca}",
                    "tls-replication yes",
                ]
            config.write_text("\n".join(lines) + "\n")
            sentinel = RedisProcess(port, directory, [str(config), "--sentinel"], tls=tls)
            self.processes.append(sentinel)
            sentinel.start()
            started.append(sentinel)

        def ready(sentinel: RedisProcess) -> bool:
            replicas = sentinel.command("SENTINEL", "replicas", service)
            others = sentinel.command("SENTINEL", "sentinels", service)
            return (
                isinstance(replicas, list)
                and len(replicas) >= expect_replicas
                and isinstance(others, list)
                and len(others) >= count - 1
            )

        for sentinel in started:
            wait_until(lambda s=sentinel: ready(s), budget_s=15, what="Sentinels to see the setup")
        return started


def sentinel_master(sentinel: RedisProcess, service: str = "autobot") -> tuple[str, int] | None:
    """The master address ``sentinel`` names for ``service`` right now."""
    reply = sentinel.command("SENTINEL", "get-master-addr-by-name", service)
    if not isinstance(reply, list):
        return None
    return reply[0], int(reply[1])
