"""``autobot chat [CHAT_ID]``: a terminal chat over the chat's WebSocket.

Without an id it creates a chat; with one it prints the history first. At the
``you>`` prompt a line is sent as a message and the answer streams in as its
tokens arrive. Ctrl-C while an answer streams sends ``cancel``: the server
stops the answer (for every client of the chat) and stores what had arrived
as ``cancelled``, and the prompt comes back. Ctrl-C at the prompt, a second
Ctrl-C before the cancel came through, or Ctrl-D at the prompt leaves.

Three tasks share the session, all in one nursery: one reads the socket and
prints what comes (tokens, the end of an answer, errors, answers other
clients asked for), one turns SIGINT into cancel-or-leave, and one holds the
conversation. SIGINT is taken from Trio with :func:`trio.open_signal_receiver`
for the whole session, so it never lands as a ``KeyboardInterrupt`` in some
task's middle. ``input()`` blocks, so it runs in a worker thread; leaving at
the prompt abandons that thread (it is a daemon, and the process is exiting)
and the terminal's modes are restored, since ``readline`` changes them while
it reads. Waiting for the person at the prompt has no deadline, as a person
is not a dependency; waiting for an answer's end has ``llm.total``.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, TextIO

import trio
import trio_websocket

from .._deadlines import deadline
from .._errors import DeadlineExceeded
from ._client import ClientError, ServerClient, describe_api_error, path_segment, run_async

__all__ = ["run_chat"]

PROMPT = "you> "
ANSWER = "bot> "
_ROLES = {"user": PROMPT, "assistant": ANSWER}


@contextmanager
def _terminal_restored(stream: TextIO) -> Iterator[None]:
    """Give the terminal back in the modes it had, whatever ``readline`` left set."""
    try:
        import termios

        fd = stream.fileno()
        saved = termios.tcgetattr(fd) if stream.isatty() else None
    except (ImportError, OSError, ValueError):
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            with suppress(OSError):
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _enable_line_editing() -> None:
    """Arrow keys and history at the prompt, where the platform has ``readline``."""
    if sys.stdin.isatty():
        with suppress(ImportError):
            import readline  # noqa: F401  (importing it is what makes input() use it)


class _Session:
    """One terminal on one chat's WebSocket."""

    def __init__(self, socket: trio_websocket.WebSocketConnection, url: str) -> None:
        self._socket = socket
        self._url = url
        self._out = sys.stdout
        # Set while one of this terminal's answers streams; set() when it ends.
        self._answer_done: trio.Event | None = None
        self._cancel_sent = False
        self._mid_line = False  # the cursor is after streamed text, not at a line start
        self._input_limiter = trio.CapacityLimiter(1)

    # -- output -----------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        if text:
            self._out.write(text)
            self._out.flush()
            self._mid_line = not text.endswith("\n")

    def _end_line(self) -> None:
        if self._mid_line:
            self._write("\n")

    def _error(self, error: dict[str, Any]) -> None:
        self._end_line()
        print(f"error: {describe_api_error(error)}", file=sys.stderr, flush=True)

    def _answer_ended(self) -> None:
        if self._answer_done is not None:
            self._answer_done.set()

    # -- the three tasks -----------------------------------------------------------------------

    async def run(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT) as interrupts:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive)
                nursery.start_soon(self._interrupt, interrupts, nursery.cancel_scope)
                await self._converse()
                nursery.cancel_scope.cancel()

    async def _receive(self) -> None:
        """Print every event of the chat as it arrives."""
        while True:
            try:
                raw = await self._socket.get_message()
            except trio_websocket.ConnectionClosed as closed:
                reason = closed.reason
                why = f" ({reason.code} {reason.reason or reason.name})" if reason else ""
                self._end_line()
                raise ClientError(f"{self._url} closed the chat's WebSocket{why}") from None
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._show(event)

    def _show(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "token":
            self._write(str(event.get("delta", "")))
        elif kind == "snapshot":  # joined while an answer streams
            self._end_line()
            content = str((event.get("message") or {}).get("content", ""))
            self._write(f"{ANSWER}(already answering) {content}")
        elif kind == "done":
            self._end_line()
            self._answer_ended()
        elif kind == "cancelled":
            self._end_line()
            self._write("[cancelled]\n")
            self._answer_ended()
        elif kind == "error":
            error = event.get("error")
            self._error(error if isinstance(error, dict) else {"message": str(error)})
            self._answer_ended()

    async def _interrupt(
        self, interrupts: trio.abc.ReceiveChannel[int], leave: trio.CancelScope
    ) -> None:
        """Ctrl-C: cancel this terminal's answer if one streams, else leave."""
        async for _ in interrupts:
            if self._answer_done is not None and not self._cancel_sent:
                self._cancel_sent = True
                await self._socket.send_message(json.dumps({"type": "cancel"}))
            else:
                self._end_line()
                self._write("\n")
                leave.cancel()

    async def _converse(self) -> None:
        """Prompt, send, wait for the answer's end; until Ctrl-D."""
        while True:
            self._mid_line = True  # the prompt: what another client's answer prints goes below
            try:
                line = await trio.to_thread.run_sync(
                    input, PROMPT, abandon_on_cancel=True, limiter=self._input_limiter
                )
            except EOFError:
                self._write("\n")
                return
            self._mid_line = False  # the Enter that ended the line moved to the next one
            if not line.strip():
                continue
            await self._ask(line)

    async def _ask(self, line: str) -> None:
        self._answer_done = done = trio.Event()
        self._cancel_sent = False
        self._write(ANSWER)
        try:
            await self._socket.send_message(json.dumps({"type": "message", "content": line}))
            with deadline("llm.total"):
                await done.wait()
        except DeadlineExceeded as error:
            self._error(
                {
                    "code": "no_answer",
                    "message": "the answer did not end in time",
                    "scope": error.scope,
                    "deadline_s": error.deadline_s,
                }
            )
            await self._socket.send_message(json.dumps({"type": "cancel"}))
        finally:
            self._answer_done = None


async def _chat(url: str, token: str | None, chat_id: str | None) -> int:
    async with ServerClient(url, token) as client:
        if chat_id is None:
            chat = (await client.request("POST", "/api/chats", json_body={}))["chat"]
            print(f"chat {chat['id']} (new)")
        else:
            detail = await client.request("GET", f"/api/chats/{path_segment(chat_id)}")
            chat = detail["chat"]
            print(f"chat {chat['id']}: {chat.get('title', '')}")
            for message in detail["messages"]:
                status = message.get("status")
                mark = f" [{status}]" if status not in (None, "complete") else ""
                role = _ROLES.get(message["role"], f"{message['role']}> ")
                print(f"{role}{message['content']}{mark}")
        print("Ctrl-C stops an answer; Ctrl-D, or Ctrl-C at the prompt, leaves.", flush=True)
        async with client.websocket(f"/api/chats/{path_segment(chat['id'])}/ws") as socket:
            await _Session(socket, client.url).run()
    return 0


def run_chat(url: str, token: str | None, chat_id: str | None) -> int:
    """The command: 0 when the person left, else a :class:`ClientError` for the caller."""
    _enable_line_editing()
    with _terminal_restored(sys.stdin):
        return run_async(_chat, url, token, chat_id)
