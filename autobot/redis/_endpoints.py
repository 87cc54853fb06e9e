"""Where new connections go: one node, a failover list, or the master Sentinels name.

Each URL mode is an *endpoint source* with the same small interface:

* ``await source.run(task_status=...)`` runs its background work (probes,
  Sentinel polling) in the client's nursery and reports ready once the
  first resolution or discovery was attempted;
* ``await source.candidates()`` lists the nodes to try, best first, each
  with its resolved address;
* ``source.report_failure(index)`` says that connecting to one failed, so it
  is skipped (failover list) or the master is asked for again (Sentinel);
* ``source.generation`` grows whenever the preferred node changes, so pooled
  connections opened before the change are closed instead of reused;
* ``source.check_role`` asks the connector to refuse a node whose ``ROLE``
  says it is a replica (Sentinel mode: a demoted master comes back as one).

Host names are resolved once and the address cached: a failover must not wait
on DNS, and a name that later resolves elsewhere is an operator's change that
a restart picks up.

The background loops (probes, Sentinel polling) never die of a recoverable
error (:data:`~._failures.RECOVERABLE_ERRORS`: a refused or lost connection,
an expired deadline, a garbled reply): each iteration counts it as a failed
probe or an unanswered question and the loop goes on. A programming error
still propagates, and with it the client's nursery.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from redis._parsers.encoders import Encoder

from .._deadlines import deadline
from .._errors import RedisUnavailable
from .._redis_url import Endpoint
from ._connection import Connection, ConnectionLost, Target
from ._dial import Dialer
from ._failures import RECOVERABLE_ERRORS
from ._protocol import ReplyParser, pack_command

__all__ = [
    "Candidate",
    "EndpointHealth",
    "EndpointSource",
    "NodeList",
    "SentinelSource",
    "resolve",
]

# A failover list probes each node this often (each probe bounded by
# ``redis.probe``), and a node is down after two failed probes in a row: a
# silent primary is left within 2 × (interval + probe budget) ≈ 0.7 s.
_PROBE_INTERVAL_S = 0.25
_DOWN_AFTER = 2
# A node that came back must answer this many probes in a row before new
# connections return to it, so a flapping primary does not bounce clients.
_UP_AFTER = 2
# Sentinels are asked for the master this often, and at once when
# connecting to the master they named fails.
_SENTINEL_POLL_S = 0.5

_PING = b"*1\r\n$4\r\nPING\r\n"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node to connect to: its index in the source, label and address.

    ``host`` is the name it was given by (the URL, a Sentinel), which TLS
    checks the certificate against; ``None``: the address itself.
    """

    index: int
    label: str
    target: Target
    host: str | None = None


class EndpointSource(Protocol):
    generation: int
    check_role: bool

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None: ...

    async def candidates(self) -> list[Candidate]: ...

    def report_failure(self, index: int) -> None: ...

    def describe(self) -> dict[str, Any]: ...


async def resolve(endpoint: Endpoint) -> Target:
    """The first TCP address of ``endpoint`` (numeric hosts resolve without a lookup)."""
    infos = await trio.socket.getaddrinfo(
        endpoint.host, endpoint.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    if not infos:
        raise OSError(f"{endpoint.host} has no address")
    family, _, _, _, sockaddr = infos[0]
    return (family, sockaddr)


class EndpointHealth:
    """Up/down from consecutive probe results; pure, driven by :meth:`record`."""

    __slots__ = ("failures", "successes", "up")

    def __init__(self) -> None:
        self.up = True
        self.failures = 0
        self.successes = 0

    def record(self, ok: bool) -> bool:
        """Count one probe result; return whether ``up`` changed."""
        if ok:
            self.failures = 0
            self.successes += 1
            if not self.up and self.successes >= _UP_AFTER:
                self.up = True
                return True
        else:
            self.successes = 0
            self.failures += 1
            if self.up and self.failures >= _DOWN_AFTER:
                self.up = False
                return True
        return False

    def mark_down(self) -> bool:
        """A connection attempt failed outright (refused, reset): down at once."""
        self.successes = 0
        self.failures = max(self.failures, _DOWN_AFTER)
        changed, self.up = self.up, False
        return changed


class NodeList:
    """One node, or a primary followed by backups (``probe=True`` for the latter).

    Candidates are the nodes that are up, in the order given, then the others
    as a last resort: with every node silent, trying them beats refusing.
    """

    check_role = False

    def __init__(
        self,
        endpoints: tuple[Endpoint, ...],
        *,
        probe: bool,
        handshake: list[bytes],
        dialer: Dialer | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._probe = probe
        self._handshake = handshake
        self._dialer = dialer or Dialer()
        self._targets: list[Target | None] = [None] * len(endpoints)
        self.health = [EndpointHealth() for _ in endpoints]
        self.generation = 0
        self._preferred = 0
        self.switches = 0

    async def _target(self, index: int) -> Target:
        target = self._targets[index]
        if target is None:
            target = self._targets[index] = await resolve(self._endpoints[index])
        return target

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        for index in range(len(self._endpoints)):
            try:
                with deadline("redis.connect"):
                    await self._target(index)
            except RECOVERABLE_ERRORS:
                pass  # resolved again on first use
        task_status.started()
        if not self._probe:
            return
        async with trio.open_nursery() as nursery:
            for index in range(len(self._endpoints)):
                nursery.start_soon(self._probe_loop, index)

    async def candidates(self) -> list[Candidate]:
        order = sorted(range(len(self._endpoints)), key=lambda i: (not self.health[i].up, i))
        found: list[Candidate] = []
        for index in order:
            try:
                target = await self._target(index)
            except OSError:
                continue
            endpoint = self._endpoints[index]
            found.append(Candidate(index, str(endpoint), target, endpoint.host))
        if not found:
            raise RedisUnavailable(
                "cannot resolve any Redis host: "
                + ", ".join(str(endpoint) for endpoint in self._endpoints)
            )
        return found

    def report_failure(self, index: int) -> None:
        if self._probe and self.health[index].mark_down():
            self._update_preferred()

    def _update_preferred(self) -> None:
        preferred = next((i for i, health in enumerate(self.health) if health.up), 0)
        if preferred != self._preferred:
            self._preferred = preferred
            self.generation += 1
            self.switches += 1

    async def _probe_once(self, index: int, connection: Connection | None) -> Connection | None:
        """PING the node under ``redis.probe``; return the connection to reuse, or None."""
        try:
            with deadline("redis.probe"):
                if connection is None:
                    target = await self._target(index)
                    endpoint = self._endpoints[index]
                    connection = await self._dialer.open(
                        target, ReplyParser(), label=str(endpoint), generation=0, host=endpoint.host
                    )
                    for reply in await connection.handshake(self._handshake):
                        if isinstance(reply, Exception):
                            raise ConnectionLost(0, str(reply))
                [reply] = await connection.request(_PING)
                if isinstance(reply, Exception):
                    raise ConnectionLost(0, str(reply))
        except RECOVERABLE_ERRORS:
            if connection is not None:
                connection.close()
            return None
        return connection

    async def _probe_loop(self, index: int) -> None:
        connection: Connection | None = None
        try:
            while True:
                connection = await self._probe_once(index, connection)
                if self.health[index].record(connection is not None):
                    self._update_preferred()
                await trio.sleep(_PROBE_INTERVAL_S)
        finally:
            if connection is not None:
                connection.close()

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "failover" if self._probe else "single",
            "preferred": str(self._endpoints[self._preferred]),
            "nodes": {str(e): h.up for e, h in zip(self._endpoints, self.health, strict=True)},
            "switches": self.switches,
        }


class SentinelSource:
    """The master that the Sentinels name for ``service``, followed across failovers.

    Sentinels are asked in order; the first that answers moves to the front
    (as redis-py's Sentinel client does). The answer is polled every 0.5 s and
    asked again at once when connecting to the named master fails; a new
    answer bumps ``generation``. ``check_role`` makes the connector refuse a
    node that says it is a replica, which covers the window in which a
    Sentinel still names a master that has just been demoted.
    """

    check_role = True

    def __init__(
        self, sentinels: tuple[Endpoint, ...], service: str, *, dialer: Dialer | None = None
    ) -> None:
        self._sentinels = list(sentinels)
        self._service = service
        self._dialer = dialer or Dialer()
        self._targets: dict[Endpoint, Target] = {}
        self._master: Candidate | None = None
        self._wake = trio.Event()
        self.generation = 0
        self.switches = 0
        self._request = pack_command(
            ("SENTINEL", "get-master-addr-by-name", service), Encoder("utf-8", "strict", False)
        )

    async def _ask(self, sentinel: Endpoint) -> Candidate | None:
        target = self._targets.get(sentinel)
        if target is None:
            target = self._targets[sentinel] = await resolve(sentinel)
        connection = await self._dialer.open(
            target,
            ReplyParser("utf-8"),
            label=f"sentinel {sentinel}",
            generation=0,
            host=sentinel.host,
        )
        try:
            [reply] = await connection.request(self._request)
        finally:
            connection.close()
        # An error reply, a null (unknown service) or anything malformed: no answer.
        if not (
            isinstance(reply, list)
            and len(reply) == 2
            and all(isinstance(part, str) for part in reply)
            and reply[1].isdigit()
            and 0 < int(reply[1]) < 65536
            and reply[0]
        ):
            return None
        master = Endpoint(reply[0], int(reply[1]))
        return Candidate(0, str(master), await resolve(master), master.host)

    async def discover(self) -> None:
        """Ask the Sentinels, in order, until one names the master."""
        for position, sentinel in enumerate(list(self._sentinels)):
            try:
                with deadline("redis.sentinel"):
                    master = await self._ask(sentinel)
            except RECOVERABLE_ERRORS:
                continue
            if master is None:
                continue
            if position:
                self._sentinels.insert(0, self._sentinels.pop(position))
            if self._master is None or master.target != self._master.target:
                if self._master is not None:
                    self.switches += 1
                self._master = master
                self.generation += 1
            return

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self.discover()
        task_status.started()
        while True:
            with trio.move_on_after(_SENTINEL_POLL_S):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.discover()

    async def candidates(self) -> list[Candidate]:
        if self._master is None:
            await self.discover()
        if self._master is None:
            raise RedisUnavailable(
                f"no Sentinel names a master for {self._service!r} "
                f"(asked {', '.join(map(str, self._sentinels))})"
            )
        return [self._master]

    def report_failure(self, index: int) -> None:
        self._wake.set()

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "sentinel",
            "service": self._service,
            "preferred": self._master.label if self._master else None,
            "sentinels": [str(sentinel) for sentinel in self._sentinels],
            "switches": self.switches,
        }
