"""Opening one connection, plain or TLS: the choice the URL's scheme made.

The connector (commands), the failover probes and the Sentinel queries all
open connections; a :class:`Dialer` built once per client from the URL's TLS
options is what they share, so ``rediss://`` means TLS to every node and,
with ``rediss+sentinel://``, to every Sentinel.
"""

from __future__ import annotations

import ssl

from .._redis_url import TLSOptions
from ._connection import Connection, Target
from ._protocol import ReplyParser
from ._tls import TLSConnection, client_context

__all__ = ["Dialer"]


class Dialer:
    """Opens connections: plain TCP, or TLS with ``context``.

    The caller bounds the wait (``redis.connect``, ``redis.probe``,
    ``redis.sentinel``); for TLS the handshake is part of it.
    """

    __slots__ = ("context",)

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context

    @classmethod
    def for_options(cls, options: TLSOptions | None) -> Dialer:
        """A dialer for a URL's TLS options (``None``: plain TCP); ``ValueError``
        if a certificate or CA file cannot be loaded."""
        return cls(client_context(options) if options is not None else None)

    @property
    def tls(self) -> bool:
        return self.context is not None

    async def open(
        self,
        target: Target,
        parser: ReplyParser,
        *,
        label: str,
        generation: int,
        host: str | None = None,
    ) -> Connection:
        """A connected :class:`Connection` (a :class:`TLSConnection` with TLS).

        ``host`` is the name the URL gave, for the certificate's host name
        check and SNI; without it the address connected to is used.
        """
        if self.context is None:
            return await Connection.open(target, parser, label=label, generation=generation)
        return await TLSConnection.open_tls(
            target,
            parser,
            label=label,
            generation=generation,
            context=self.context,
            server_hostname=host or str(target[1][0]),
        )
