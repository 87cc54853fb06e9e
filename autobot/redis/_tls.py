"""TLS to Redis: ``ssl`` over memory BIOs, on the same non-blocking socket as plain TCP.

Why not :class:`trio.SSLStream`: the shared, automatically pipelined
connection (:mod:`._autopipeline`) relies on its connection being exact
about what was sent. A writer that is cancelled while the kernel's buffer is
full must leave the stream consistent, with the unsent remainder kept for the
next writer, because other tasks' replies are still owed on it. Trio's
``SSLStream`` makes no such promise: a cancelled ``send_all`` leaves it
broken, so every cancelled writer would fail every command in flight.

So :class:`TLSConnection` keeps the socket and the ``wait_readable`` /
``wait_writable`` loop of :class:`~._connection.Connection` and puts an
``ssl.SSLObject`` (``SSLContext.wrap_bio`` with two ``MemoryBIO``\\ s) between
the socket and the parser. Its promise is the plain connection's:

* :meth:`TLSConnection.send_some` encrypts what it accepts (up to 256 KiB at a
  time) into a buffer the connection owns, and hands the kernel what it takes
  now. Bytes it counted are committed: they reach the server in order even if
  the caller is cancelled, because the ciphertext waits in the connection
  (:attr:`unsent`) and the next writer flushes it before anything else
  (``SharedConnection`` and ``Connection.send_all`` keep writing until
  ``unsent`` is 0). It accepts nothing while 256 KiB of ciphertext is still
  waiting, so memory stays bounded.
* :meth:`TLSConnection.receive` takes bytes from the socket into the TLS
  object and decrypted bytes into the parser, all synchronously after one
  wait: a cancellation leaves nothing half-read.
* Only writers wait for the socket to be writable; the reader only waits to
  read. Redis keeps reading commands while its replies queue up, so a writer
  waiting on a full buffer cannot deadlock with a reader.

The TLS handshake runs in :meth:`TLSConnection.open`, inside the caller's
``redis.connect``. A failed certificate check raises :class:`TLSHandshakeError`
(an ``OSError``), which the connector reports as ``RedisUnavailable`` with the
reason. With TLS 1.3 a server that refuses the client's certificate says so
only after the client's handshake is done, in an alert that arrives with the
first reply; the connector therefore always sends at least a ``PING`` with a
new TLS connection's set-up commands, so that refusal too fails the connect.
"""

from __future__ import annotations

import errno
import socket
import ssl

import trio

from .._redis_url import TLSOptions
from ._connection import Connection, ConnectionLost, Target, connect_socket
from ._protocol import ReplyParser

__all__ = ["TLSConnection", "TLSHandshakeError", "client_context"]

# Plaintext encrypted per send_some call, and ciphertext allowed to wait for
# the kernel before send_some accepts no more: big enough for any command,
# small enough that a huge pipeline is not all encrypted up front.
_MAX_WRITE = 256 * 1024
_MAX_UNSENT = 256 * 1024

_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


class TLSHandshakeError(OSError):
    """The TLS handshake with a Redis node (or Sentinel) failed; ``str()`` says why."""


def _reason(error: ssl.SSLError) -> str:
    """The readable part of an ``ssl`` error: ``certificate verify failed: ...``."""
    verify = getattr(error, "verify_message", None)
    if verify:
        return f"certificate verify failed: {verify}"
    return (error.reason or str(error)).replace("_", " ").lower()


def client_context(options: TLSOptions) -> ssl.SSLContext:
    """The ``SSLContext`` for ``options``, built once per client.

    As redis-py does: the system's CAs, plus ``ca_certs``/``ca_path`` when
    given; ``cert_reqs`` as the verify mode; a client certificate from
    ``certfile``/``keyfile``. Raises ``ValueError`` naming the option whose
    file cannot be loaded.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = options.check_hostname and options.cert_reqs != "none"
    context.verify_mode = _CERT_REQS[options.cert_reqs]
    if options.ca_certs or options.ca_path:
        try:
            context.load_verify_locations(cafile=options.ca_certs, capath=options.ca_path)
        except (OSError, ssl.SSLError) as error:
            name, value = (
                ("ssl_ca_certs", options.ca_certs)
                if options.ca_certs
                else ("ssl_ca_path", options.ca_path)
            )
            raise ValueError(f"{name}={value!r}: cannot load: {error}") from None
    if options.certfile:
        try:
            context.load_cert_chain(options.certfile, options.keyfile)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(
                f"ssl_certfile={options.certfile!r}: cannot load the client certificate: {error}"
            ) from None
    return context


class TLSConnection(Connection):
    """A :class:`~._connection.Connection` that speaks TLS; see the module docstring."""

    __slots__ = ("_incoming", "_outgoing", "_tls", "_waiting")

    def __init__(
        self,
        sock: socket.socket,
        parser: ReplyParser,
        label: str,
        generation: int,
        tls: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        super().__init__(sock, parser, label, generation)
        self._tls = tls
        self._incoming = incoming
        self._outgoing = outgoing
        # Ciphertext taken from the TLS object that the kernel has not taken yet.
        self._waiting = bytearray()

    @classmethod
    async def open_tls(
        cls,
        target: Target,
        parser: ReplyParser,
        *,
        label: str,
        generation: int,
        context: ssl.SSLContext,
        server_hostname: str,
    ) -> TLSConnection:
        """Connect to ``target`` and complete the TLS handshake.

        The caller bounds the wait (``redis.connect``). Raises ``OSError`` if
        the connection fails and :class:`TLSHandshakeError` if the handshake
        does (a certificate that does not verify, a protocol mismatch).
        Cancelling it closes the socket.
        """
        sock = await connect_socket(target, label)
        try:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
        except BaseException:
            sock.close()
            raise
        connection = cls(sock, parser, label, generation, tls, incoming, outgoing)
        try:
            await connection._handshake_tls()
        except BaseException:
            connection.close()
            raise
        return connection

    async def _handshake_tls(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush_all()
                await self._receive_ciphertext()
                continue
            except ssl.SSLError as error:
                raise TLSHandshakeError(f"TLS handshake failed: {_reason(error)}") from error
            break
        await self._flush_all()

    async def _flush_all(self) -> None:
        self._flush_now()
        while self._waiting:
            await self._wait_socket_writable()
            self._flush_now()

    async def _receive_ciphertext(self) -> None:
        while not self._recv_now():
            await self._wait_socket_readable()

    # -- the socket side ------------------------------------------------------

    async def _wait_socket_writable(self) -> None:
        try:
            await trio.lowlevel.wait_writable(self._sock)
        except trio.ClosedResourceError:
            raise ConnectionLost(errno.EBADF, f"connection to {self.label} closed") from None

    async def _wait_socket_readable(self) -> None:
        try:
            await trio.lowlevel.wait_readable(self._sock)
        except trio.ClosedResourceError:
            raise ConnectionLost(errno.EBADF, f"connection to {self.label} closed") from None

    def _flush_now(self) -> None:
        """Hand the kernel what ciphertext it takes now; keep the rest. No wait."""
        if self._outgoing.pending:
            self._waiting += self._outgoing.read()
        if not self._waiting:
            return
        try:
            sent = self._sock.send(self._waiting)
        except BlockingIOError:
            return
        except OSError as error:
            raise self._lost("sending to", error) from error
        del self._waiting[:sent]

    def _recv_now(self) -> bool:
        """Move what the socket has into the TLS object; False if nothing was there."""
        try:
            count = self._sock.recv_into(self._buffer)
        except BlockingIOError:
            return False
        except OSError as error:
            raise self._lost("receiving from", error) from error
        if count == 0:
            raise ConnectionLost(errno.ECONNRESET, f"{self.label} closed the connection")
        self._incoming.write(memoryview(self._buffer)[:count])
        return True

    def _lost(self, action: str, error: OSError) -> ConnectionLost:
        """A broken socket, explained by the TLS alert the server sent first, if any.

        A server that refuses the client's certificate (TLS 1.3: after the
        client's handshake) sends an alert and resets the connection; the
        reset can reach the next ``send`` before the alert was read. The
        alert says what happened, the reset only that something did.
        """
        try:
            while count := self._sock.recv_into(self._buffer):
                self._incoming.write(memoryview(self._buffer)[:count])
        except OSError:
            pass
        try:
            while self._tls.read(len(self._buffer), self._buffer):
                pass
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        except ssl.SSLError as alert:
            return ConnectionLost(f"TLS error from {self.label}: {_reason(alert)}")
        return ConnectionLost(error.errno, f"{action} {self.label}: {error}")

    def _decrypt(self) -> bool:
        """Feed every decrypted byte to the parser; whether there were any."""
        fed = False
        while True:
            try:
                count = self._tls.read(len(self._buffer), self._buffer)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                raise ConnectionLost(
                    errno.ECONNRESET, f"{self.label} closed the TLS session"
                ) from None
            except ssl.SSLError as error:
                raise ConnectionLost(f"TLS error from {self.label}: {_reason(error)}") from error
            if not count:
                break
            self.parser.feed(self._buffer, count)
            fed = True
        if self._outgoing.pending:
            # Reading can make TLS answer (a key update): send it with the rest.
            self._flush_now()
        return fed

    # -- the Connection interface ---------------------------------------------

    @property
    def unsent(self) -> int:
        return len(self._waiting) + self._outgoing.pending

    def send_some(self, data: bytes | memoryview) -> int:
        """Encrypt and commit up to 256 KiB of ``data``; returns how much (no wait).

        Returns 0 while 256 KiB of ciphertext is still waiting for the kernel;
        the caller then waits with :meth:`wait_writable`.
        """
        self._check_open()
        self._flush_now()
        if len(self._waiting) >= _MAX_UNSENT:
            return 0
        chunk = data if len(data) <= _MAX_WRITE else memoryview(data)[:_MAX_WRITE]
        try:
            written = self._tls.write(chunk)
        except ssl.SSLError as error:
            raise ConnectionLost(f"TLS error sending to {self.label}: {_reason(error)}") from error
        self._flush_now()
        return written

    async def wait_writable(self) -> None:
        """Wait until the kernel takes more, and give it waiting ciphertext (a checkpoint)."""
        self._check_open()
        if not self.unsent:
            await trio.lowlevel.checkpoint()
            return
        await self._wait_socket_writable()
        self._flush_now()

    async def receive(self, wait_first: bool = False) -> None:
        """Wait for bytes, decrypt them, feed the parser (a checkpoint; safe to cancel).

        Returns once at least one decrypted byte was fed. Raises
        :class:`~._connection.ConnectionLost` when the server closed the
        connection or the TLS session, or sent a TLS alert (its reason is in
        the message: a refused client certificate reads ``certificate
        required``).
        """
        self._check_open()
        while not self._decrypt():
            if wait_first:
                wait_first = False
            elif self._recv_now():
                continue
            await self._wait_socket_readable()

    def peer_closed_or_dirty(self) -> bool:
        """Whether an idle connection is unusable: closed, or holding unasked-for bytes.

        Unlike a plain socket, a TLS one may legitimately have bytes waiting
        that are not replies (TLS 1.3 session tickets arrive after the
        handshake), so the check reads what is there through the TLS object:
        only decrypted bytes make it dirty. No wait.
        """
        if self._closed or self.parser.has_data() or self.unsent:
            return True
        try:
            while self._recv_now():
                pass
            return self._decrypt()
        except OSError:
            return True
