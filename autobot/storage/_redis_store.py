"""The Redis backend: the store interface on the Trio Redis client.

Any number of AutoBot processes can share one Redis through it. Each
multi-step change is one Lua script (see ``_redis_scripts.py``), so it is
atomic and survives cancellation whole or not at all. Every command runs under
``redis.command`` inside the client; when Redis is down the client's breaker
makes calls fail fast with ``RedisUnavailable`` (503 ``redis_unavailable``).

Publish/subscribe crosses processes through Redis pub/sub. Each process keeps
a single subscription to the pattern ``<prefix>chan:*`` and fans messages out
to its local subscribers, so it needs one connection for pub/sub however many
listeners it serves, at the cost of receiving every channel's messages.
Agent inboxes block with ``BLPOP`` on a doorbell list rather than popping
messages directly: a cancelled ``BLPOP`` can only lose a doorbell ring, never
a message; messages are taken by a script once one is known to be there.

The relay runs as the supervised service ``storage.pubsub``. Anyone who can
reach Redis can publish on our channels, so what arrives is outside input: a
message that is not a JSON object is dropped and reported through the
supervisor (logged, counted), never allowed to end the relay.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from .._deadlines import deadline
from .._health import HealthCheck, WatchedCheck, breaker_fingerprint
from .._logging import log_fields
from .._supervisor import RestartPolicy, Supervisor, using_supervisor
from ..redis import Redis, RedisHealthCheck
from ._answer_progress import ANSWER_PROGRESS_TTL_S, AnswerProgress
from ._fact_log import FACT_LOG_RETAINED, FACT_LOG_WAIT_S, FactChange
from ._fanout import Fanout
from ._models import (
    UNFINISHED_OPERATION_STATUSES,
    Chat,
    Fact,
    InboxMessage,
    Message,
    Priority,
    chat_not_found,
    fact_not_found,
    new_id,
    now,
)
from ._records import checked_import, inbox_record
from ._redis_scripts import SCRIPTS

__all__ = ["RedisStore", "open_redis_store"]

log = logging.getLogger("autobot.storage")

_SCORE_BAND = 1_000_000_000_000  # inbox score = (3 - priority) * band + arrival sequence
_VECTORS_PER_RECORD = 256  # embeddings per fact_vectors record of an export
_BARRIER = "\x00barrier"  # a channel no caller can name by accident
# Re-subscribing soon after Redis comes back matters more than for other services.
RELAY_RESTARTS = RestartPolicy(first_s=0.05, max_s=2.0)
_Drop = Callable[..., None]


def _log_drop(source: str, reason: str, **detail: Any) -> None:
    log.warning("bad payload dropped", extra=log_fields(source=source, reason=reason, **detail))


def _stream_entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """The entries of an ``XREAD`` of one stream, in either protocol's shape."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3: {stream: [entries]}
        (entries,) = reply.values()
        if entries and isinstance(entries[0], list) and len(entries) == 1:
            entries = entries[0]
        return list(entries)
    ((_, entries),) = reply
    return list(entries)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class RedisStore:
    """The :class:`~autobot.storage.Store` over Redis. Open with :func:`open_redis_store`."""

    backend = "redis"

    def __init__(self, client: Redis, prefix: str = "autobot:", *, drop: _Drop = _log_drop) -> None:
        self.client = client
        self.prefix = prefix
        self._drop = drop
        self._fanout = Fanout()
        self._listening = trio.Event()
        self._barriers: dict[str, trio.Event] = {}

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def health_checks(self) -> list[HealthCheck]:
        return [WatchedCheck(RedisHealthCheck(self.client), breaker_fingerprint(self.breakers))]

    def breakers(self) -> list[dict[str, Any]]:
        return [{"dependency": "redis", "target": "", **self.client.breaker.snapshot()}]

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return await SCRIPTS[script](self.client, keys, args)

    # -- chats ------------------------------------------------------------------------

    async def _create_chat_record(self, record: dict[str, Any]) -> None:
        await self._run(
            "create_chat",
            [self._key("chats"), self._key("clock"), self._key("chat", record["id"])],
            [record["id"], record["title"], record["created_at"], record["updated_at"]],
        )

    async def create_chat(self, title: str | None = None) -> Chat:
        created_at, _ = now()
        chat = Chat(new_id(), title or "New chat", created_at, created_at, 0)
        await self._create_chat_record(chat.to_json())
        return chat

    async def get_chat(self, chat_id: str) -> Chat:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._key("chat", chat_id))
            pipe.llen(self._key("chat", chat_id, "messages"))
            fields, count = await pipe.execute()
        if not fields:
            raise chat_not_found(chat_id)
        return Chat(
            fields["id"], fields["title"], fields["created_at"], fields["updated_at"], count
        )

    async def list_chats(self, limit: int = 100, offset: int = 0) -> list[Chat]:
        ids = await self.client.zrevrange(self._key("chats"), offset, offset + limit - 1)
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for chat_id in ids:
                pipe.hgetall(self._key("chat", chat_id))
                pipe.llen(self._key("chat", chat_id, "messages"))
            replies = await pipe.execute()
        chats = []
        for fields, count in zip(replies[::2], replies[1::2], strict=True):
            if fields:  # deleted between the two reads
                chats.append(
                    Chat(
                        fields["id"],
                        fields["title"],
                        fields["created_at"],
                        fields["updated_at"],
                        count,
                    )
                )
        return chats

    async def delete_chat(self, chat_id: str) -> None:
        deleted = await self._run(
            "delete_chat",
            [
                self._key("chats"),
                self._key("chat", chat_id),
                self._key("chat", chat_id, "messages"),
                self._key("answering", chat_id),
            ],
            [chat_id],
        )
        if not deleted:
            raise chat_not_found(chat_id)

    async def _append_message_record(self, chat_id: str, message: Message) -> bool:
        return bool(
            await self._run(
                "append_message",
                self._chat_keys(chat_id),
                [chat_id, _dumps(message.to_json()), message.created_at],
            )
        )

    async def append_message(
        self,
        chat_id: str,
        role: str,
        content: str,
        status: str = "complete",
        *,
        sources: list[dict[str, Any]] | None = None,
        knowledge_error: dict[str, Any] | None = None,
    ) -> Message:
        created_at, _ = now()
        message = Message(new_id(), role, content, created_at, status, sources, knowledge_error)
        if not await self._append_message_record(chat_id, message):
            raise chat_not_found(chat_id)
        return message

    async def get_messages(
        self, chat_id: str, start: int = 0, stop: int | None = None
    ) -> list[Message]:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.exists(self._key("chat", chat_id))
            pipe.lrange(self._key("chat", chat_id, "messages"), 0, -1)
            exists, raw = await pipe.execute()
        if not exists:
            raise chat_not_found(chat_id)
        # Slice in Python: LRANGE's inclusive, clamped indexes differ from slice rules.
        return [Message.from_json(json.loads(item)) for item in raw[start:stop]]

    # -- knowledge facts ------------------------------------------------------------------

    async def _list_ordered(self, kind: str, newest_first: bool) -> list[dict[str, Any]]:
        order = self._key(kind + "s")
        ids = await (
            self.client.zrevrange(order, 0, -1)
            if newest_first
            else self.client.zrange(order, 0, -1)
        )
        if not ids:
            return []
        values = await self.client.mget([self._key(kind, item_id) for item_id in ids])
        return [json.loads(value) for value in values if value is not None]

    async def put_fact(self, text: str, metadata: dict[str, Any] | None = None) -> Fact:
        created_at, _ = now()
        fact = Fact(new_id(), text, dict(metadata or {}), created_at)
        await self._put_fact_record(fact.to_json())
        return fact

    async def _put_fact_record(self, record: dict[str, Any]) -> None:
        await self._run(
            "put_fact",
            [
                self._key("facts"),
                self._key("clock"),
                self._key("fact", record["id"]),
                *self._log_keys(),
            ],
            [record["id"], _dumps(record), FACT_LOG_RETAINED],
        )

    def _log_keys(self) -> list[str]:
        return [self._key("factlog"), self._key("factlog", "seq")]

    async def get_fact(self, fact_id: str) -> Fact:
        raw = await self.client.get(self._key("fact", fact_id))
        if raw is None:
            raise fact_not_found(fact_id)
        return Fact(**json.loads(raw))

    async def delete_fact(self, fact_id: str) -> None:
        if not await self._run(
            "delete_fact",
            [
                self._key("facts"),
                self._key("fact", fact_id),
                *self._log_keys(),
                self._key("vectors"),
            ],
            [fact_id, FACT_LOG_RETAINED, self._key("vectors", "")],
        ):
            raise fact_not_found(fact_id)

    async def list_facts(self) -> list[Fact]:
        return [Fact(**data) for data in await self._list_ordered("fact", newest_first=False)]

    async def get_facts(self, fact_ids: Sequence[str]) -> dict[str, Fact]:
        if not fact_ids:
            return {}
        values = await self.client.mget([self._key("fact", fact_id) for fact_id in fact_ids])
        facts = (Fact(**json.loads(value)) for value in values if value is not None)
        return {fact.id: fact for fact in facts}

    async def fact_log_position(self) -> int:
        return int(await self.client.get(self._key("factlog", "seq")) or 0)

    async def read_fact_log(self, after: int, max_count: int = 1000) -> list[FactChange] | None:
        log = self._key("factlog")
        reply = await self.client.xread(
            {log: f"{after}-0"}, count=max_count, block=int(FACT_LOG_WAIT_S * 1000)
        )
        entries = _stream_entries(reply)
        if not entries:
            # Nothing new, unless the log was reset under us (a flushed or new Redis).
            return None if await self.fact_log_position() < after else []
        changes = [
            FactChange(int(entry_id.partition("-")[0]), fields["op"], fields["id"])
            for entry_id, fields in entries
        ]
        if changes[0].seq != after + 1:
            return None  # trimmed: the changes right after ``after`` are gone
        return changes

    async def put_fact_vectors(self, model: str, vectors: Mapping[str, bytes]) -> list[str]:
        if not vectors:
            return []
        args: list[Any] = [model, FACT_LOG_RETAINED, self._key("fact", "")]
        for fact_id, vector in vectors.items():
            args += [fact_id, base64.b64encode(vector).decode("ascii")]
        return list(
            await self._run(
                "put_fact_vectors",
                [self._key("vectors", model), self._key("vectors"), *self._log_keys()],
                args,
            )
        )

    async def get_fact_vectors(self, model: str, fact_ids: Sequence[str]) -> dict[str, bytes]:
        if not fact_ids:
            return {}
        values = await self.client.hmget(self._key("vectors", model), list(fact_ids))
        return {
            fact_id: base64.b64decode(value)
            for fact_id, value in zip(fact_ids, values, strict=True)
            if value is not None
        }

    async def list_fact_vectors(self, model: str) -> dict[str, bytes]:
        stored = await self.client.hgetall(self._key("vectors", model))
        return {fact_id: base64.b64decode(value) for fact_id, value in stored.items()}

    # -- answers in progress --------------------------------------------------------------

    def _answer_keys(self, chat_id: str, answer_id: str) -> list[str]:
        return [self._key("answering", chat_id), self._key("answer", answer_id)]

    async def begin_answer(self, chat_id: str, answer_id: str) -> None:
        await self._run(
            "begin_answer",
            self._answer_keys(chat_id, answer_id),
            [answer_id, ANSWER_PROGRESS_TTL_S],
        )

    def _chat_keys(self, chat_id: str) -> list[str]:
        """The keys a change to a chat's messages touches (as _APPEND_MESSAGE takes them)."""
        return [
            self._key("chats"),
            self._key("clock"),
            self._key("chat", chat_id),
            self._key("chat", chat_id, "messages"),
        ]

    async def start_answer(
        self,
        chat_id: str,
        answer_id: str,
        content: str,
        *,
        lease: str,
        lease_ttl_s: float,
        history: int,
    ) -> tuple[Message, list[Message]] | None:
        created_at, _ = now()
        message = Message(new_id(), "user", content, created_at)
        reply = await self._run(
            "start_answer",
            [
                *self._chat_keys(chat_id),
                self._key("lease", lease),
                *self._answer_keys(chat_id, answer_id),
            ],
            [
                chat_id,
                answer_id,
                max(1, round(lease_ttl_s * 1000)),
                _dumps(message.to_json()),
                created_at,
                max(1, history),
                ANSWER_PROGRESS_TTL_S,
            ],
        )
        if reply == -1:
            raise chat_not_found(chat_id)
        if reply == 0:
            return None
        return message, [Message.from_json(json.loads(item)) for item in reply]

    async def append_answer_tokens(
        self,
        chat_id: str,
        answer_id: str,
        first_seq: int,
        deltas: Sequence[str],
        channel: str,
        events: Sequence[dict[str, Any]],
    ) -> bool:
        args: list[Any] = [answer_id, ANSWER_PROGRESS_TTL_S, first_seq]
        for delta, event in zip(deltas, events, strict=True):
            args += [delta, _dumps(event)]
        keys = [*self._answer_keys(chat_id, answer_id), self._key("chan", channel)]
        return bool(await self._run("append_answer_tokens", keys, args))

    async def answering(self, chat_id: str) -> str | None:
        return await self.client.get(self._key("answering", chat_id))

    async def answer_progress(self, chat_id: str) -> AnswerProgress | None:
        reply = await self._run(
            "answer_progress", [self._key("answering", chat_id)], [self._key("answer", "")]
        )
        if not reply:
            return None
        answer_id, deltas = reply
        return AnswerProgress(answer_id, tuple(deltas))

    async def end_answer(self, chat_id: str, answer_id: str) -> None:
        await self._run("end_answer", self._answer_keys(chat_id, answer_id), [answer_id])

    async def finish_answer(
        self,
        chat_id: str,
        answer_id: str,
        message: Message | None,
        *,
        lease: str,
        channel: str,
        events: Sequence[dict[str, Any]],
        gone_events: Sequence[dict[str, Any]],
    ) -> bool:
        stored = await self._run(
            "finish_answer",
            [
                *self._chat_keys(chat_id),
                self._key("lease", lease),
                *self._answer_keys(chat_id, answer_id),
                self._key("chan", channel),
            ],
            [
                chat_id,
                answer_id,
                "" if message is None else _dumps(message.to_json()),
                now()[0] if message is None else message.created_at,
                len(events),
                *map(_dumps, events),
                *map(_dumps, gone_events),
            ],
        )
        return bool(stored)

    # -- long-running operations ----------------------------------------------------------

    async def put_operation(self, operation: dict[str, Any]) -> None:
        await self._put_operation(operation)

    async def _put_operation(self, operation: dict[str, Any], checkpoint: str = "") -> None:
        """The record (and its unfinished index) and, unless ``""``, its checkpoint: one script."""
        operation_id = operation["id"]
        unfinished = operation.get("status") in UNFINISHED_OPERATION_STATUSES
        await self._run(
            "put_operation",
            [
                self._key("operations"),
                self._key("clock"),
                self._key("operation", operation_id),
                self._key("operations", "unfinished"),
                self._key("checkpoint", operation_id),
            ],
            [operation_id, _dumps(operation), "1" if unfinished else "0", checkpoint],
        )

    async def get_operation(self, operation_id: str) -> dict[str, Any] | None:
        raw = await self.client.get(self._key("operation", operation_id))
        return None if raw is None else json.loads(raw)

    async def list_operations(self, *, unfinished_only: bool = False) -> list[dict[str, Any]]:
        if not unfinished_only:
            return await self._list_ordered("operation", newest_first=True)
        ids = list(await self.client.smembers(self._key("operations", "unfinished")))
        if not ids:
            return []
        scores = await self.client.zmscore(self._key("operations"), ids)
        ordered = sorted(
            (score, item_id) for score, item_id in zip(scores, ids, strict=True) if score
        )
        values = await self.client.mget([self._key("operation", i) for _, i in reversed(ordered)])
        records = [json.loads(value) for value in values if value is not None]
        return [r for r in records if r.get("status") in UNFINISHED_OPERATION_STATUSES]

    async def put_checkpoint(
        self,
        operation_id: str,
        checkpoint: dict[str, Any],
        *,
        operation: dict[str, Any] | None = None,
    ) -> None:
        if operation is None:
            await self.client.set(self._key("checkpoint", operation_id), _dumps(checkpoint))
        else:
            await self._put_operation(operation, _dumps(checkpoint))

    async def get_checkpoint(self, operation_id: str) -> dict[str, Any] | None:
        raw = await self.client.get(self._key("checkpoint", operation_id))
        return None if raw is None else json.loads(raw)

    async def delete_checkpoint(self, operation_id: str) -> None:
        await self.client.delete(self._key("checkpoint", operation_id))

    # -- leases ------------------------------------------------------------------------------

    async def _lease(self, script: str, name: str, *args: Any) -> bool:
        return bool(await self._run(script, [self._key("lease", name)], list(args)))

    async def claim_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        return await self._lease("claim_lease", name, owner, max(1, round(ttl_s * 1000)))

    async def renew_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        return await self._lease("renew_lease", name, owner, max(1, round(ttl_s * 1000)))

    async def release_lease(self, name: str, owner: str) -> bool:
        return await self._lease("release_lease", name, owner)

    async def lease_owner(self, name: str) -> str | None:
        return await self.client.get(self._key("lease", name))

    # -- agent inboxes ------------------------------------------------------------------------

    async def register_agent(self, agent: str) -> None:
        await self.client.sadd(self._key("agents"), agent)

    async def list_agents(self) -> list[str]:
        return sorted(await self.client.smembers(self._key("agents")))

    async def touch_agent(self, agent: str, ttl_s: float) -> None:
        await self._run(
            "touch_agent",
            [self._key("agents"), self._key("agents", "live")],
            [agent, max(1, round(ttl_s * 1000))],
        )

    async def live_agents(self) -> list[str]:
        return sorted(await self._run("live_agents", [self._key("agents", "live")], []))

    async def _push(
        self, agent: str, message_id: str, priority: Priority, data: dict[str, Any], seq: Any
    ) -> None:
        await self._run(
            "push_inbox",
            [
                self._key("agents"),
                self._key("inbox_seq"),
                self._key("inbox", agent),
                self._key("inbox", agent, "data"),
                self._key("inbox", agent, "bell"),
            ],
            [agent, message_id, int(priority), _dumps(data), seq],
        )

    async def push_inbox(self, agent: str, body: dict[str, Any], priority: Priority) -> str:
        created_at, _ = now()
        message_id = new_id()
        await self._push(agent, message_id, priority, {"body": body, "created_at": created_at}, "")
        return message_id

    async def _push_many(self, entries: list[tuple[str, str, Priority, str, Any]]) -> None:
        """One script for ``(agent, id, priority, data json, seq or '')`` entries."""
        keys = [self._key("agents"), self._key("inbox_seq")]
        args: list[Any] = []
        for agent, message_id, priority, data, seq in entries:
            keys += [
                self._key("inbox", agent),
                self._key("inbox", agent, "data"),
                self._key("inbox", agent, "bell"),
            ]
            args += [agent, message_id, int(priority), data, seq]
        await self._run("push_inbox_many", keys, args)

    async def push_inbox_many(
        self, agents: Sequence[str], body: dict[str, Any], priority: Priority
    ) -> list[str]:
        created_at, _ = now()
        data = _dumps({"body": body, "created_at": created_at})
        entries = [(agent, new_id(), priority, data, "") for agent in dict.fromkeys(agents)]
        if entries:
            await self._push_many(entries)
        return [entry[1] for entry in entries]

    async def return_inbox(self, agent: str, messages: Sequence[InboxMessage]) -> None:
        entries = [
            (
                agent,
                message.id,
                message.priority,
                _dumps({"body": message.body, "created_at": message.created_at}),
                message.seq,
            )
            for message in messages
        ]
        if entries:
            await self._push_many(entries)

    @staticmethod
    def _inbox_message(message_id: str, score: Any, raw: str) -> InboxMessage:
        data = json.loads(raw)
        score = int(float(score))
        priority = Priority(3 - score // _SCORE_BAND)
        return InboxMessage(
            message_id, priority, data["body"], data["created_at"], score % _SCORE_BAND
        )

    async def pop_inbox(self, agent: str, max_count: int) -> list[InboxMessage]:
        # Shielded: once the script may have run, its reply must be read, or the
        # messages it took would be lost. The command's own deadline bounds it.
        with trio.CancelScope(shield=True):
            reply = await self._run(
                "pop_inbox",
                [self._key("inbox", agent), self._key("inbox", agent, "data")],
                [max_count],
            )
        return [
            self._inbox_message(reply[i], reply[i + 1], reply[i + 2])
            for i in range(0, len(reply), 3)
            if reply[i + 2] is not None
        ]

    async def wait_inbox(self, agent: str, max_count: int) -> list[InboxMessage]:
        bell = self._key("inbox", agent, "bell")
        while True:
            messages = await self.pop_inbox(agent, max_count)
            if messages:
                return messages
            # Blocks until a push rings (or the caller's deadline); losing a ring
            # to cancellation is harmless, the next wait pops first.
            await self.client.blpop([bell])

    # -- publish / subscribe ----------------------------------------------------------------

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self.client.publish(self._key("chan", channel), _dumps(message))

    @asynccontextmanager
    async def _subscription(self, channel: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        # A barrier: once our own marker came back through the relay, everything
        # published before this call has been relayed, so the new subscriber sees
        # only what is published from now on. It also proves the relay is live.
        token = new_id()
        arrived = self._barriers[token] = trio.Event()
        try:
            with deadline("redis.command"):
                await self._listening.wait()
                await self.client.publish(self._key("chan", _BARRIER), token)
                await arrived.wait()
        finally:
            del self._barriers[token]
        async with self._fanout.subscribe(channel) as messages:
            yield messages

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        return self._subscription(channel)

    def follow(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        return self._fanout.subscribe(channel)

    async def listen(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Relay ``<prefix>chan:*`` to local subscribers; runs until cancelled.

        Reports started once the pattern subscription is confirmed; local
        subscribers wait for that (within ``redis.command``). Raises
        ``RedisUnavailable`` when the subscription cannot be made (the
        supervisor tries again with backoff); once made, the subscription
        reconnects by itself when the connection drops.
        """
        offset = len(self._key("chan", ""))
        async with self.client.pubsub() as pubsub:
            await pubsub.psubscribe(self._key("chan", "*"))
            self._listening.set()
            task_status.started()
            async for message in pubsub:
                self._relay(message["channel"][offset:], message["data"])

    def _relay(self, channel: str, data: Any) -> None:
        if channel == _BARRIER:
            arrived = self._barriers.get(data)
            if arrived is not None:
                arrived.set()
            return
        try:
            payload = json.loads(data)
        except (ValueError, TypeError) as error:  # not JSON text at all
            self._drop("storage.pubsub", "not_json", channel=channel, error=str(error))
            return
        if not isinstance(payload, dict):
            self._drop("storage.pubsub", "not_an_object", channel=channel)
            return
        self._fanout.deliver(channel, payload)

    # -- migration ----------------------------------------------------------------------------

    async def export_records(self, write: Callable[[dict[str, Any]], Awaitable[None]]) -> int:
        count = 0

        async def emit(record: dict[str, Any]) -> None:
            nonlocal count
            count += 1
            await write(record)

        for agent in await self.list_agents():
            await emit({"kind": "agent", "agent": agent})
        for chat_id in await self.client.zrange(self._key("chats"), 0, -1):
            fields = await self.client.hgetall(self._key("chat", chat_id))
            if not fields:
                continue
            await emit({"kind": "chat", **fields})
            for raw in await self.client.lrange(self._key("chat", chat_id, "messages"), 0, -1):
                await emit({"kind": "message", "chat_id": chat_id, **json.loads(raw)})
        for fact in await self._list_ordered("fact", newest_first=False):
            await emit({"kind": "fact", **fact})
        for model in sorted(await self.client.smembers(self._key("vectors"))):
            stored = list((await self.client.hgetall(self._key("vectors", model))).items())
            for start in range(0, len(stored), _VECTORS_PER_RECORD):
                chunk = dict(stored[start : start + _VECTORS_PER_RECORD])
                await emit({"kind": "fact_vectors", "model": model, "vectors": chunk})
        for operation in reversed(await self._list_ordered("operation", newest_first=True)):
            await emit({"kind": "operation", "operation": operation})
        async for key in self.client.scan_iter(match=self._key("checkpoint", "*")):
            raw = await self.client.get(key)
            if raw is not None:
                operation_id = key[len(self._key("checkpoint", "")) :]
                await emit(
                    {
                        "kind": "checkpoint",
                        "operation_id": operation_id,
                        "checkpoint": json.loads(raw),
                    }
                )
        for agent in await self.list_agents():
            entries = await self.client.zrange(self._key("inbox", agent), 0, -1, withscores=True)
            for message_id, score in entries:
                raw = await self.client.hget(self._key("inbox", agent, "data"), message_id)
                if raw is None:
                    continue
                message = self._inbox_message(message_id, score, raw)
                await emit(inbox_record(agent, message, message.seq))
        return count

    async def import_records(self, records: Iterable[dict[str, Any]]) -> int:
        batch = checked_import(records)
        for record in batch:
            kind = record["kind"]
            if kind == "chat":
                await self._create_chat_record(record)
            elif kind == "message":
                await self._append_message_record(record["chat_id"], Message.from_json(record))
            elif kind == "fact":
                fact = Fact(
                    record["id"], record["text"], record.get("metadata") or {}, record["created_at"]
                )
                await self._put_fact_record(fact.to_json())
            elif kind == "fact_vectors":
                vectors = {i: base64.b64decode(v) for i, v in record["vectors"].items()}
                await self.put_fact_vectors(record["model"], vectors)
            elif kind == "operation":
                await self.put_operation(record["operation"])
            elif kind == "checkpoint":
                await self.put_checkpoint(record["operation_id"], record["checkpoint"])
            elif kind == "agent":
                await self.register_agent(record["agent"])
            else:
                data = {"body": record["body"], "created_at": record["created_at"]}
                priority = Priority[record["priority"].upper()]
                await self._push(record["agent"], record["id"], priority, data, record["seq"])
        return len(batch)

    def close(self) -> None:
        self._fanout.close()


@asynccontextmanager
async def open_redis_store(
    client: Redis, prefix: str = "autobot:", *, supervisor: Supervisor | None = None
) -> AsyncIterator[RedisStore]:
    """A :class:`RedisStore` on ``client``, relaying pub/sub until the block ends.

    The relay runs under ``supervisor`` (else under one of the block's own).
    """
    async with using_supervisor(supervisor) as supervisor:
        store = RedisStore(client, prefix, drop=supervisor.drop)
        try:
            async with supervisor.running("storage.pubsub", store.listen, policy=RELAY_RESTARTS):
                yield store
        finally:
            store.close()
