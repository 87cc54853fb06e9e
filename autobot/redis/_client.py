"""The ``Redis`` client: redis-py's command methods over Trio connections.

:class:`Redis` inherits every command method from redis-py's
``AsyncCoreCommands`` (``get``, ``hset``, ``xadd``, ``zadd``, ...), which all
end in :meth:`Redis.execute_command`, and applies redis-py's RESP2 response
callbacks to the replies, so results have the same Python shapes as with
redis-py's own async client (``hgetall`` → ``dict``, ``zrange(withscores=True)`` →
list of ``(member, score)``, ``set`` → ``True``, ...). Only the transport is
ours.

Where a command goes:

* most commands: the shared, automatically pipelined connection
  (:mod:`._autopipeline`), or a pooled one with ``autopipeline=False``;
* blocking commands (``BLPOP``, ``XREAD BLOCK``, ...): a pooled connection
  of their own, with the server-side timeout taken from the caller's
  deadline (:mod:`._blocking`);
* ``WATCH``/``MULTI``/``EXEC``: :meth:`Redis.pipeline`; ``SUBSCRIBE``:
  :meth:`Redis.pubsub`. Sent directly they would change the state of a
  connection other tasks share, so :meth:`execute_command` refuses them.

Every command runs inside the circuit breaker and the ``redis.command``
deadline (opening a connection inside ``redis.connect``; a blocking command's
reply inside its server-side timeout plus ``redis.blocking``). Failures that
say Redis is unreachable (refused or lost connections, expired deadlines)
count towards opening the circuit; an error *reply* (``WRONGTYPE``, a syntax
error) is Redis answering and counts as a success.

Pipelines and subscriptions are given the client through the small
interfaces of :mod:`._interfaces`, which :class:`Redis` implements; they do
not reach into its pool or connector.
"""

from __future__ import annotations

import codecs
import inspect
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

import trio
from redis._parsers.encoders import Encoder
from redis._parsers.helpers import get_response_callbacks
from redis.client import EMPTY_RESPONSE, NEVER_DECODE, CaseInsensitiveDict
from redis.commands.core import AsyncCoreCommands
from redis.exceptions import RedisError, ResponseError, WatchError

from .._breaker import CircuitBreaker
from .._errors import RedisTimeout
from ._blocking import is_blocking, with_server_timeout
from ._connection import Connection, ConnectionLost
from ._endpoints import EndpointSource
from ._failures import blocking_deadline, command_deadline, connection_lost, is_failure
from ._pipeline import Pipeline
from ._pool import ConnectionPool
from ._protocol import pack_command
from ._pubsub import PubSub
from ._recovery import BreakerProbe

__all__ = ["Redis"]

_NO_DEFAULT: Any = object()

# Commands that change the state of the connection they run on.
_USE_PIPELINE = frozenset(("WATCH", "UNWATCH", "MULTI", "EXEC", "DISCARD"))
_USE_PUBSUB = frozenset(
    ("SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE")
)
_USE_URL = frozenset(("SELECT", "AUTH", "HELLO", "RESET", "QUIT", "MONITOR", "CLIENT REPLY"))
# Commands that may block the server-side; XREAD/XREADGROUP only with BLOCK.
_MAYBE_BLOCKING = frozenset(
    (
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BLMOVE",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "XREAD",
        "XREADGROUP",
        "WAIT",
        "WAITAOF",
    )
)
_SPECIAL = _USE_PIPELINE | _USE_PUBSUB | _USE_URL | _MAYBE_BLOCKING

# How long before the caller's deadline a blocking command's server-side
# timeout ends, so that Redis's empty reply arrives in time; and how long a
# subscribed connection may be silent before a PING checks it.
DEFAULT_BLOCK_MARGIN_S = 0.1
DEFAULT_PUBSUB_IDLE_S = 30.0


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


class Redis(AsyncCoreCommands):
    """A Redis client on Trio; get one from :func:`autobot.redis.open_redis`.

    Command methods are redis-py's: ``await client.set("k", "v")``,
    ``await client.hgetall("h")``, ``await client.xadd("s", {"f": "v"})``.
    Every call is a checkpoint and safe to cancel: a cancelled command's reply
    never reaches another command (see ``docs/redis.md``).

    Errors: ``RedisUnavailable`` when Redis cannot be reached or the circuit
    is open, and its subclass ``RedisTimeout`` (also a ``DeadlineExceeded``)
    when ``redis.command`` or ``redis.blocking`` expired; redis-py's
    ``ResponseError`` family for error replies.

    ``block_margin_s`` and ``pubsub_idle_s`` are settings, not deadlines (see
    :func:`~._open.open_redis`); they are kept here for the commands and
    subscriptions that read them.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        breaker: CircuitBreaker,
        encoding: str = "utf-8",
        encoding_errors: str = "strict",
        decode_responses: bool = False,
        autopipeline: bool = True,
        block_margin_s: float = DEFAULT_BLOCK_MARGIN_S,
        pubsub_idle_s: float = DEFAULT_PUBSUB_IDLE_S,
    ) -> None:
        self._pool = pool
        self.breaker = breaker
        self.autopipeline = autopipeline
        self.block_margin_s = _positive("block_margin_s", block_margin_s)
        self.pubsub_idle_s = _positive("pubsub_idle_s", pubsub_idle_s)
        # Closes the breaker as soon as Redis answers; run by open_redis.
        self.recovery = BreakerProbe(breaker, self.connect)
        self.encoder = Encoder(encoding, encoding_errors, decode_responses)
        self._utf8 = codecs.lookup(encoding).name == "utf-8" and encoding_errors == "strict"
        self._connection_kwargs = {
            "encoding": encoding,
            "encoding_errors": encoding_errors,
            "decode_responses": decode_responses,
            "protocol": 2,
        }
        callbacks = get_response_callbacks(2, True)
        self._callbacks: dict[str, Callable[..., Any]] = dict(callbacks)
        self.response_callbacks = CaseInsensitiveDict(callbacks)

    def __repr__(self) -> str:
        return f"<autobot.redis.Redis {self._pool.connector.source.describe()}>"

    # -- what redis-py's command mixins expect of a client -------------------

    def get_encoder(self) -> Encoder:
        return self.encoder

    def get_connection_kwargs(self) -> dict[str, Any]:
        return self._connection_kwargs

    def set_response_callback(self, command: str, callback: Callable[..., Any]) -> None:
        """Replace how replies to ``command`` are converted (as in redis-py)."""
        self.response_callbacks[command] = callback
        self._callbacks[command.upper()] = callback

    # -- executing commands --------------------------------------------------

    def pack(self, args: tuple[Any, ...]) -> bytes:
        """The RESP bytes of one command, encoded as this client encodes arguments."""
        return pack_command(args, self.encoder, utf8=self._utf8)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Send one command and return its converted reply."""
        name = args[0]
        decode = True
        empty = _NO_DEFAULT
        if options:
            options.pop("keys", None)
            if NEVER_DECODE in options:
                del options[NEVER_DECODE]
                decode = False
            if EMPTY_RESPONSE in options:
                empty = options.pop(EMPTY_RESPONSE)
        if name in _SPECIAL or (type(name) is not str and str(name).upper() in _SPECIAL):
            reply = await self._execute_special(args, decode)
        else:
            packed = pack_command(args, self.encoder, utf8=self._utf8)
            if self.autopipeline:
                reply = (await self.request_shared(packed, 1, decode))[0]
            else:
                reply = (await self.request_exclusive(packed, 1, decode))[0]
        if isinstance(reply, Exception):
            if empty is not _NO_DEFAULT and isinstance(reply, ResponseError):
                return empty
            raise reply
        return await self.convert(name, reply, options)

    async def convert(self, name: Any, reply: Any, options: dict[str, Any]) -> Any:
        """Apply redis-py's response callback for command ``name`` to ``reply``.

        The one place replies are converted, for single commands and for each
        reply of a pipeline. Callbacks are keyed by upper-case name; a name
        given in another case (``"config get"``) is looked up upper-cased.
        """
        callback = self._callbacks.get(name)
        if callback is None:
            if type(name) is not str or name.isupper():
                return reply
            callback = self._callbacks.get(name.upper())
            if callback is None:
                return reply
        result = callback(reply, **options)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def request(self, packed: bytes, count: int, decode: bool = True) -> list[Any]:
        """Send ``count`` packed commands as one batch; return their raw replies."""
        if self.autopipeline:
            return await self.request_shared(packed, count, decode)
        return await self.request_exclusive(packed, count, decode)

    async def request_shared(self, packed: bytes, count: int, decode: bool) -> list[Any]:
        """Through the shared connection: see :mod:`._autopipeline`."""
        with self.breaker.attempt(is_failure):
            pool = self._pool
            shared = pool.shared_now()
            if shared is None:
                shared = await pool.shared()
            try:
                with command_deadline():
                    return await shared.execute(packed, count, decode)
            except RedisTimeout as timeout:
                # Redis is silent: commands queued behind this one would wait
                # as long. Fail them now and start afresh on a new connection.
                shared.fail(timeout)
                raise
            except ConnectionLost as error:
                raise connection_lost(error) from error

    async def request_exclusive(self, packed: bytes, count: int, decode: bool) -> list[Any]:
        """On a pooled connection of its own; closed if the reply is interrupted."""
        return await self._on_own_connection(packed, count, decode, command_deadline)

    async def _on_own_connection(
        self,
        packed: bytes,
        count: int,
        decode: bool,
        bound: Callable[[], AbstractContextManager[object]],
    ) -> list[Any]:
        """The one path of a batch on a pooled connection of its own.

        Inside the breaker: a connection from the pool, the round trip under
        ``bound()`` (the scope that bounds the wait for the replies), a lost
        connection named as ``RedisUnavailable``, and the connection given
        back whatever happened (``Connection.request`` closed it if the
        replies were cut off, and the pool drops closed connections).
        """
        with self.breaker.attempt(is_failure):
            connection = await self._pool.acquire()
            try:
                with bound():
                    return await connection.request(packed, count, decode)
            except ConnectionLost as error:
                raise connection_lost(error) from error
            finally:
                self._pool.release(connection)

    async def _execute_special(self, args: tuple[Any, ...], decode: bool) -> Any:
        name = args[0] if type(args[0]) is str else str(args[0])
        upper = name.upper()
        if upper in _USE_PIPELINE:
            raise RedisError(f"{upper} changes a connection's state: use client.pipeline()")
        if upper in _USE_PUBSUB:
            raise RedisError(f"{upper} needs a connection of its own: use client.pubsub()")
        if upper in _USE_URL:
            raise RedisError(f"{upper} is not available: set the database and password in the URL")
        if not is_blocking(args):
            packed = pack_command(args, self.encoder, utf8=self._utf8)
            return (await self.request(packed, 1, decode))[0]
        return await self._execute_blocking(args, decode)

    async def _execute_blocking(self, args: tuple[Any, ...], decode: bool) -> Any:
        remaining = trio.current_effective_deadline() - trio.current_time()
        args, server_s = with_server_timeout(args, remaining, self.block_margin_s)
        packed = pack_command(args, self.encoder, utf8=self._utf8)
        # With no deadline and no timeout it waits as long as the caller lets
        # it; cancelling closes the connection, which also ends the server's wait.
        bound: Callable[[], AbstractContextManager[object]] = (
            nullcontext if server_s <= 0 else partial(blocking_deadline, server_s)
        )
        return (await self._on_own_connection(packed, 1, decode, bound))[0]

    # -- what pipelines and subscriptions are given (see ``_interfaces``) ----

    async def connect(self) -> Connection:
        """A new ready connection outside the pool (a subscription's), within ``redis.connect``."""
        return await self._pool.connector.connect()

    async def acquire(self) -> Connection:
        """A pooled connection for exclusive use (a ``WATCH`` pipeline's), inside the breaker."""
        with self.breaker.attempt(is_failure):
            return await self._pool.acquire()

    def release(self, connection: Connection) -> None:
        """Give back a connection from :meth:`acquire`."""
        self._pool.release(connection)

    async def request_on(
        self, connection: Connection, packed: bytes, count: int, decode: bool
    ) -> list[Any]:
        """A batch on a connection from :meth:`acquire`: breaker, ``redis.command``.

        ``ConnectionLost`` propagates (the caller decides what it means).
        """
        with self.breaker.attempt(is_failure), command_deadline():
            return await connection.request(packed, count, decode)

    # -- pipelines, transactions, pub/sub ------------------------------------

    def pipeline(self, transaction: bool = True) -> Pipeline:
        """A :class:`Pipeline`: commands queued, then sent in one write by ``execute()``.

        With ``transaction=True`` (the default) they are wrapped in
        ``MULTI``/``EXEC``. Use it as ``async with client.pipeline() as pipe:``
        so a ``WATCH`` connection is given back on exit.
        """
        return Pipeline(self, transaction)

    async def transaction(
        self,
        func: Callable[[Pipeline], Any],
        *watches: Any,
        value_from_callable: bool = False,
    ) -> Any:
        """Run ``func(pipe)`` under ``WATCH watches``, retrying on a conflict.

        ``func`` reads through the pipeline (immediate while watching), calls
        ``pipe.multi()`` and queues writes; they are executed as one
        ``MULTI``/``EXEC``, repeated from the start if a watched key changed.
        Returns the ``EXEC`` results, or ``func``'s result with
        ``value_from_callable=True``.
        """
        async with self.pipeline(True) as pipe:
            while True:
                try:
                    if watches:
                        await pipe.watch(*watches)
                    result = func(pipe)
                    if inspect.isawaitable(result):
                        result = await result
                    executed = await pipe.execute()
                    return result if value_from_callable else executed
                except WatchError:
                    continue

    def pubsub(self) -> PubSub:
        """A :class:`PubSub` on a connection of its own; use as ``async with``."""
        return PubSub(self)

    # -- state ---------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool:
        return self._pool

    @property
    def endpoints(self) -> EndpointSource:
        return self._pool.connector.source

    def stats(self) -> dict[str, Any]:
        """Breaker, pool and endpoint state, for health and metrics."""
        return {
            "breaker": self.breaker.snapshot(),
            "recovery": self.recovery.stats(),
            "pool": self._pool.stats(),
            "endpoints": self.endpoints.describe(),
        }
