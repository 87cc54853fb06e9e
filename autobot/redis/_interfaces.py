"""The small interfaces that pipelines and subscriptions are given, instead of the client.

A :class:`~._pipeline.Pipeline` and a :class:`~._pubsub.PubSub` need a few
things from the client that made them: how to pack a command, a connection
of their own, and (for pipelines) the client's ways of sending a batch and
converting replies. They get exactly that, as the protocols below, the way
redis-py hands a ``PubSub`` a connection pool rather than a client and
httpcore's connections see their pool through a narrow interface: neither
reaches through the client into its pool or connector, so either can be
driven by anything that provides these few methods, and the client's
internals can change without touching them.

:class:`~._client.Redis` implements both.
"""

from __future__ import annotations

from typing import Any, Protocol

from redis._parsers.encoders import Encoder

from ._connection import Connection

__all__ = ["CommandPacker", "PipelineHost", "SubscriptionHost"]


class CommandPacker(Protocol):
    """Encodes arguments and packs commands the way the client does."""

    encoder: Encoder

    def pack(self, args: tuple[Any, ...]) -> bytes:
        """The RESP bytes of one command (``args[0]`` is its name)."""
        ...


class SubscriptionHost(CommandPacker, Protocol):
    """What a :class:`~._pubsub.PubSub` needs: connections of its own, and a setting."""

    #: Silence on a subscribed connection after which a ``PING`` checks it.
    pubsub_idle_s: float

    async def connect(self) -> Connection:
        """A new ready connection, not from the pool, within ``redis.connect``.

        Goes where the client's commands go (the preferred node, Sentinel's
        master). Raises ``RedisUnavailable`` when no node can be reached.
        """
        ...


class PipelineHost(CommandPacker, Protocol):
    """What a :class:`~._pipeline.Pipeline` needs from its client."""

    response_callbacks: Any

    def get_encoder(self) -> Encoder: ...

    def get_connection_kwargs(self) -> dict[str, Any]: ...

    async def request(self, packed: bytes, count: int, decode: bool = True) -> list[Any]:
        """Send ``count`` packed commands as one batch the client's usual way; raw replies."""
        ...

    async def convert(self, name: Any, reply: Any, options: dict[str, Any]) -> Any:
        """Apply the client's response callback for command ``name`` to ``reply``."""
        ...

    async def acquire(self) -> Connection:
        """A pooled connection for exclusive use (a ``WATCH``), inside the breaker."""
        ...

    def release(self, connection: Connection) -> None:
        """Give back a connection from :meth:`acquire` (closed ones are dropped)."""
        ...

    async def request_on(
        self, connection: Connection, packed: bytes, count: int, decode: bool
    ) -> list[Any]:
        """Send on a connection from :meth:`acquire`, inside the breaker and ``redis.command``.

        A lost connection propagates as ``ConnectionLost``: only the caller
        knows what was lost with it (a pipeline: its ``WATCH``).
        """
        ...
