"""The breaker's own probe: close the circuit as soon as Redis answers again.

A circuit breaker alone follows a timer: after its cool-down one caller is
let through, and if Redis was back long before, callers were refused for
nothing; if the probing caller hits a Redis still frozen, it waits out its
deadline and the circuit stays open for another full cool-down. So recovery
took anything from milliseconds to the cool-down plus a deadline.

:class:`BreakerProbe` makes recovery follow Redis instead. It sleeps on the
breaker while the circuit is closed (:meth:`CircuitBreaker.wait_until_open`,
no cost), and while it is open it opens a connection and sends ``PING``
every 0.1 s, each attempt (connect, handshake, ``PING``) under
``redis.probe``. The first answer closes the circuit
(:meth:`CircuitBreaker.record_probe_success`), so a recovered Redis is
noticed within one interval plus a round trip, in every URL mode: the
connection goes where commands would go (the node the endpoint source
prefers, with the URL's ``AUTH``/``SELECT``, TLS, and Sentinel's ``ROLE``
check). Each probe uses a fresh connection and closes it: a ``PING`` that
timed out is still owed its reply.

Any reply counts as an answer, error replies included, exactly as the breaker
counts them for commands. A failed probe changes nothing (the circuit is
already open, and the cool-down still lets a caller probe when it ends).
Recoverable errors (:data:`~._failures.RECOVERABLE_ERRORS`) are counted and
the loop goes on; anything else is a programming error and propagates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._breaker import BreakerState, CircuitBreaker
from .._deadlines import deadline
from ._connection import Connection
from ._failures import RECOVERABLE_ERRORS

__all__ = ["BreakerProbe"]

_PING = b"*1\r\n$4\r\nPING\r\n"
# Between two probes while the circuit is open: a recovered Redis closes the
# circuit within about this plus one round trip, and a dead one costs ten
# connection attempts a second, which is nothing next to the commands the
# open circuit spares it.
PROBE_INTERVAL_S = 0.1


class BreakerProbe:
    """PINGs Redis through ``connect`` while ``breaker`` is open; see the module docstring.

    ``connect`` opens a new ready connection (the client's connector).
    Counters: ``probes`` (attempts), ``failures`` (attempts that got no
    answer), ``closes`` (circuits this probe closed).
    """

    def __init__(self, breaker: CircuitBreaker, connect: Callable[[], Awaitable[Connection]]):
        self._breaker = breaker
        self._connect = connect
        self.probes = 0
        self.failures = 0
        self.closes = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Probe whenever the circuit is open, until cancelled (the client's nursery)."""
        task_status.started()
        breaker = self._breaker
        while True:
            await breaker.wait_until_open()
            while breaker.state is not BreakerState.CLOSED:
                if await self.probe_once():
                    if breaker.state is not BreakerState.CLOSED:
                        breaker.record_probe_success()
                        self.closes += 1
                    break
                await trio.sleep(PROBE_INTERVAL_S)

    async def probe_once(self) -> bool:
        """One attempt: connect and ``PING`` under ``redis.probe``; whether Redis answered."""
        self.probes += 1
        connection: Connection | None = None
        try:
            with deadline("redis.probe"):
                connection = await self._connect()
                await connection.request(_PING)
        except RECOVERABLE_ERRORS:
            self.failures += 1
            return False
        finally:
            if connection is not None:
                connection.close()
        return True

    def stats(self) -> dict[str, int]:
        return {"probes": self.probes, "failures": self.failures, "closes": self.closes}
