"""Pipelines and ``MULTI``/``EXEC`` transactions, with ``WATCH``.

A :class:`Pipeline` queues commands (each command method returns the
pipeline, so calls chain) and :meth:`Pipeline.execute` sends them in one
write and reads every reply, inside one ``redis.command`` deadline. Without
``WATCH`` the batch goes through the client's normal path (the shared
connection, where a batch is never interleaved with other tasks' commands,
so ``MULTI``...``EXEC`` stays contiguous).

``WATCH`` needs one connection for the whole read-check-write cycle, so a
watching pipeline takes a pooled connection of its own until ``execute()``
or ``reset()``. As in redis-py, commands issued after ``watch()`` and before
``multi()`` run immediately and return their results::

    async with client.pipeline() as pipe:
        await pipe.watch("balance")
        balance = int(await pipe.get("balance"))
        pipe.multi()
        pipe.set("balance", balance - 10)
        await pipe.execute()        # WatchError if "balance" changed meanwhile

A cancelled ``execute()`` on a watching pipeline closes its connection, as
for any interrupted reply; the watch is lost with it.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import trio
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.commands.core import AsyncCoreCommands
from redis.exceptions import ExecAbortError, RedisError, ResponseError, WatchError

from ._connection import Connection, ConnectionLost
from ._interfaces import PipelineHost
from ._protocol import decode_tree

__all__ = ["Pipeline"]

_MULTI = b"*1\r\n$5\r\nMULTI\r\n"
_EXEC = b"*1\r\n$4\r\nEXEC\r\n"

Command = tuple[tuple[Any, ...], dict[str, Any]]


def _annotate(error: Exception, number: int, args: tuple[Any, ...]) -> None:
    text = " ".join(str(arg) for arg in args)
    if len(text) > 100:
        text = text[:97] + "..."
    message = f"Command # {number} ({text}) of pipeline caused error: {error.args[0]}"
    error.args = (message, *error.args[1:])


class Pipeline(AsyncCoreCommands):
    """Commands queued on a client, sent together by :meth:`execute`.

    ``client`` is what the pipeline needs of the client that made it
    (:class:`~._interfaces.PipelineHost`; :class:`~._client.Redis` is one).
    """

    def __init__(self, client: PipelineHost, transaction: bool = True) -> None:
        self._client = client
        self.transaction = transaction
        self.command_stack: list[Command] = []
        self.watching = False
        self.explicit_transaction = False
        self._connection: Connection | None = None
        self.response_callbacks = client.response_callbacks

    def __len__(self) -> int:
        return len(self.command_stack)

    def __bool__(self) -> bool:
        return True

    def __await__(self) -> Generator[Any, None, Pipeline]:
        return self._itself().__await__()

    async def _itself(self) -> Pipeline:
        return self

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._reset()

    def get_encoder(self) -> Any:
        return self._client.get_encoder()

    def get_connection_kwargs(self) -> dict[str, Any]:
        return self._client.get_connection_kwargs()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Queue a command (returns the pipeline), or run it now while watching."""
        if (self.watching or args[0] == "WATCH") and not self.explicit_transaction:
            return self._immediate(args, options)
        self.command_stack.append((args, options))
        return self

    def multi(self) -> None:
        """Start the transactional block after ``watch()``; commands queue again."""
        if self.explicit_transaction:
            raise RedisError("Cannot issue nested calls to MULTI")
        if self.command_stack:
            raise RedisError("Commands without an initial WATCH have already been issued")
        self.explicit_transaction = True

    async def watch(self, *names: Any) -> bool:
        """``WATCH`` the keys on this pipeline's own connection."""
        if self.explicit_transaction:
            raise RedisError("Cannot issue a WATCH after a MULTI")
        return await self.execute_command("WATCH", *names)

    async def unwatch(self) -> bool:
        if not self.watching:
            return True
        return await self.execute_command("UNWATCH")

    async def _pinned(self) -> Connection:
        if self._connection is None:
            self._connection = await self._client.acquire()
        return self._connection

    async def _on_pinned(self, packed: bytes, count: int, decode: bool) -> list[Any]:
        connection = await self._pinned()
        try:
            return await self._client.request_on(connection, packed, count, decode)
        except ConnectionLost as error:
            self.watching = False
            raise WatchError(f"connection lost while watching: {error}") from error

    async def _immediate(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        options.pop("keys", None)
        decode = options.pop(NEVER_DECODE, None) is None
        [reply] = await self._on_pinned(self._client.pack(args), 1, decode)
        name = str(args[0]).upper()
        if isinstance(reply, Exception):
            raise reply
        if name == "WATCH":
            self.watching = True
        elif name == "UNWATCH":
            self.watching = False
        return await self._client.convert(args[0], reply, options)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send every queued command in one write; return their results in order.

        ``raise_on_error``: raise the first error reply (annotated with its
        command); otherwise error replies are returned in place as exceptions.
        Transactions raise ``WatchError`` when a watched key changed.
        The pipeline is reset afterwards, whatever happened.
        """
        stack = self.command_stack
        try:
            if not stack and not self.watching:
                return []
            if self.transaction or self.explicit_transaction:
                return await self._execute_transaction(stack, raise_on_error)
            return await self._execute_pipeline(stack, raise_on_error)
        finally:
            self._reset()

    async def _send(self, packed: bytes, count: int, decode: bool) -> list[Any]:
        if self._connection is not None or self.watching:
            return await self._on_pinned(packed, count, decode)
        return await self._client.request(packed, count, decode)

    def _pack_stack(self, stack: list[Command]) -> tuple[bytes, bool]:
        pack = self._client.pack
        decode = not any(NEVER_DECODE in options for _, options in stack)
        return b"".join(pack(args) for args, _ in stack), decode

    def _decoded(self, reply: Any, options: dict[str, Any], decoded: bool) -> Any:
        """Replies read undecoded (a NEVER_DECODE command was in the batch) are
        decoded here for the other commands, if the client decodes."""
        encoder = self._client.encoder
        if decoded or NEVER_DECODE in options or not encoder.decode_responses:
            return reply
        return decode_tree(reply, encoder)

    async def _convert_all(
        self, stack: list[Command], replies: list[Any], decoded: bool
    ) -> list[Any]:
        results: list[Any] = []
        for (args, options), reply in zip(stack, replies, strict=True):
            if isinstance(reply, Exception):
                results.append(reply)
                continue
            reply = self._decoded(reply, options, decoded)
            options = {
                key: value
                for key, value in options.items()
                if key not in ("keys", NEVER_DECODE, EMPTY_RESPONSE)
            }
            results.append(await self._client.convert(args[0], reply, options))
        return results

    @staticmethod
    def _raise_first_error(stack: list[Command], replies: list[Any]) -> None:
        for number, ((args, options), reply) in enumerate(zip(stack, replies, strict=True), 1):
            if isinstance(reply, ResponseError) and EMPTY_RESPONSE not in options:
                _annotate(reply, number, args)
                raise reply

    @staticmethod
    def _empty_responses(stack: list[Command], replies: list[Any]) -> list[Any]:
        return [
            options[EMPTY_RESPONSE]
            if isinstance(reply, ResponseError) and EMPTY_RESPONSE in options
            else reply
            for (_, options), reply in zip(stack, replies, strict=True)
        ]

    async def _execute_pipeline(self, stack: list[Command], raise_on_error: bool) -> list[Any]:
        packed, decode = self._pack_stack(stack)
        replies = self._empty_responses(stack, await self._send(packed, len(stack), decode))
        if raise_on_error:
            self._raise_first_error(stack, replies)
        return await self._convert_all(stack, replies, decode)

    async def _execute_transaction(self, stack: list[Command], raise_on_error: bool) -> list[Any]:
        packed, decode = self._pack_stack(stack)
        replies = await self._send(_MULTI + packed + _EXEC, len(stack) + 2, decode)
        queued, outcome = replies[1:-1], replies[-1]
        errors: list[tuple[int, Exception]] = []
        if isinstance(replies[0], Exception):
            errors.append((0, replies[0]))
        for number, ((args, _), reply) in enumerate(zip(stack, queued, strict=True)):
            if isinstance(reply, ResponseError):
                _annotate(reply, number + 1, args)
                errors.append((number, reply))
        if isinstance(outcome, ExecAbortError):
            if errors:
                raise errors[0][1] from outcome
            raise outcome
        if isinstance(outcome, Exception):
            raise outcome
        self.watching = False
        if outcome is None:
            raise WatchError("Watched variable changed.")
        if len(outcome) != len(stack):
            raise ResponseError("Wrong number of response items from pipeline execution")
        outcome = self._empty_responses(stack, outcome)
        if raise_on_error:
            self._raise_first_error(stack, outcome)
        return await self._convert_all(stack, outcome, decode)

    async def reset(self) -> None:
        """Forget queued commands and give back a ``WATCH`` connection (a checkpoint)."""
        self._reset()
        await trio.lowlevel.checkpoint()

    def _reset(self) -> None:
        self.command_stack = []
        connection, self._connection = self._connection, None
        watching, self.watching = self.watching, False
        self.explicit_transaction = False
        if connection is None:
            return
        if watching:
            # A watch must not outlive the pipeline on a pooled connection, and
            # sending UNWATCH would need a wait that a cancelled caller cannot
            # make: close the connection instead (only when a WATCH was left
            # without EXEC; EXEC itself ends the watch).
            connection.close()
        self._client.release(connection)

    async def discard(self) -> None:
        """Drop the queued commands (``DISCARD`` is implicit: nothing was sent)."""
        self.command_stack = []
        self.explicit_transaction = False
