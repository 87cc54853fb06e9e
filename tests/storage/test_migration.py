"""``python -m autobot export`` / ``import`` move everything between the backends."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from autobot.redis import open_redis
from autobot.storage import Priority, Store, open_embedded_store, open_redis_store
from tests.support.process import ROOT


def cli(command: str, environ: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOBOT_")} | environ
    return subprocess.run(
        [sys.executable, "-m", "autobot", command],
        input=stdin,
        env=env,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )


async def snapshot(store: Store) -> dict:
    chats = await store.list_chats()
    return {
        "chats": chats,
        "messages": {chat.id: await store.get_messages(chat.id) for chat in chats},
        "facts": await store.list_facts(),
        "operations": await store.list_operations(),
        "checkpoint": await store.get_checkpoint("op-1"),
        "agents": await store.list_agents(),
    }


async def test_embedded_to_redis_and_back(tmp_path: pathlib.Path, shared_redis) -> None:
    shared_redis.command("FLUSHALL")
    first_dir = tmp_path / "first"
    async with open_embedded_store(first_dir / "store") as store:
        for n in range(3):
            chat = await store.create_chat(f"chat {n}")
            for i in range(4):
                await store.append_message(chat.id, "user" if i % 2 else "assistant", f"{n}.{i} é")
        await store.put_fact("water is wet", {"confidence": 0.9})
        await store.put_operation({"id": "op-1", "type": "index", "status": "cancelled"})
        await store.put_checkpoint("op-1", {"done": 12})
        await store.register_agent("idle")
        await store.push_inbox("worker", {"type": "request", "payload": {"x": 1}}, Priority.HIGH)
        await store.push_inbox("worker", {"type": "event", "payload": {}}, Priority.LOW)
        original = await snapshot(store)

    exported = cli("export", {"AUTOBOT_DATA_DIR": str(first_dir)})
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert (
        len(lines) == 3 + 12 + 1 + 1 + 1 + 2 + 2
    )  # chats, messages, fact, op, checkpoint, agents, inbox
    assert b"exported 22 records" in exported.stderr

    imported = cli("import", {"AUTOBOT_REDIS_URL": shared_redis.url}, stdin=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    async with open_redis(shared_redis.url, decode_responses=True) as client:
        async with open_redis_store(client) as store:
            assert await snapshot(store) == original
            inbox = await store.pop_inbox("worker", 10)
            assert [m.body["type"] for m in inbox] == ["request", "event"]
            assert [m.priority for m in inbox] == [Priority.HIGH, Priority.LOW]
            # Put the inbox back for the round trip home.
            await store.push_inbox("worker", inbox[0].body, Priority.HIGH)
            await store.push_inbox("worker", inbox[1].body, Priority.LOW)

    exported_again = cli("export", {"AUTOBOT_REDIS_URL": shared_redis.url})
    assert exported_again.returncode == 0, exported_again.stderr
    second_dir = tmp_path / "second"
    imported_again = cli("import", {"AUTOBOT_DATA_DIR": str(second_dir)}, exported_again.stdout)
    assert imported_again.returncode == 0, imported_again.stderr
    async with open_embedded_store(second_dir / "store") as store:
        assert await snapshot(store) == original
        assert [m.priority for m in await store.pop_inbox("worker", 10)] == [
            Priority.HIGH,
            Priority.LOW,
        ]


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        (b"not json\n", "error: line 1 is not JSON"),
        (b'{"kind": "chat_deleted", "id": "x"}\n', "error: record 1 has an unknown kind"),
    ],
)
def test_import_rejects_bad_input(tmp_path: pathlib.Path, stdin: bytes, message: str) -> None:
    result = cli("import", {"AUTOBOT_DATA_DIR": str(tmp_path)}, stdin=stdin)
    assert result.returncode == 1
    assert message in result.stderr.decode()
