"""The embedded backend's durability: restarts, torn writes, compaction, crashes."""

from __future__ import annotations

import pathlib
import signal
import sys

import pytest
import trio

from autobot import StorageUnavailable
from autobot.storage import Priority, open_embedded_store
from autobot.storage._fact_log import MemoryFactLog
from tests.support.polling import eventually
from tests.support.process import ROOT


def journal_files(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(("journal", "snapshot")))


async def test_everything_survives_a_restart(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "store"
    async with open_embedded_store(directory) as store:
        chat = await store.create_chat("kept")
        await store.append_message(chat.id, "user", "remember me")
        fact = await store.put_fact("durable", {"n": 1})
        await store.put_operation({"id": "op", "status": "running"})
        await store.put_checkpoint("op", {"cursor": 7})
        await store.push_inbox("agent", {"n": 1}, Priority.HIGH)
        deleted = await store.create_chat("gone")
        await store.delete_chat(deleted.id)
    async with open_embedded_store(directory) as store:
        assert [c.title for c in await store.list_chats()] == ["kept"]
        assert [m.content for m in await store.get_messages(chat.id)] == ["remember me"]
        assert await store.get_fact(fact.id) == fact
        assert await store.get_operation("op") == {"id": "op", "status": "running"}
        assert await store.get_checkpoint("op") == {"cursor": 7}
        assert [m.body for m in await store.pop_inbox("agent", 5)] == [{"n": 1}]
    async with open_embedded_store(directory) as store:
        assert await store.pop_inbox("agent", 5) == []  # the take was durable too


@pytest.mark.parametrize(
    "tail",
    [
        b'0badc0de {"kind":"chat","id":"torn"',  # cut off mid-line, no newline
        b"garbage that is not a record\n",
        b'00000000 {"kind":"chat","id":"x","title":"t","created_at":"a","updated_at":"a"}\n',
    ],
)
async def test_damaged_tail_is_cut_off_and_the_rest_kept(
    tmp_path: pathlib.Path, tail: bytes
) -> None:
    directory = tmp_path / "store"
    async with open_embedded_store(directory) as store:
        chat = await store.create_chat("whole")
        await store.append_message(chat.id, "user", "before the crash")
    (journal,) = directory.glob("journal-*.jsonl")
    good_size = journal.stat().st_size
    with journal.open("ab") as file:
        file.write(tail)
    async with open_embedded_store(directory) as store:
        assert [m.content for m in await store.get_messages(chat.id)] == ["before the crash"]
        assert journal.stat().st_size == good_size
        await store.append_message(chat.id, "user", "after the crash")
    async with open_embedded_store(directory) as store:
        assert [m.content for m in await store.get_messages(chat.id)] == [
            "before the crash",
            "after the crash",
        ]


async def test_second_process_on_the_same_directory_is_refused(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "store"
    async with open_embedded_store(directory):
        with pytest.raises(StorageUnavailable) as caught:
            async with open_embedded_store(directory):
                pass
    assert caught.value.code == "storage_locked"
    async with open_embedded_store(directory):
        pass  # free again once the first one closed


async def test_compaction_snapshots_and_drops_old_journals(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "store"
    async with open_embedded_store(directory, compact_after_bytes=20_000) as store:
        chats = [await store.create_chat(f"chat {i}") for i in range(5)]
        expected: dict[str, list[str]] = {chat.id: [] for chat in chats}

        async def write(chat_id: str) -> None:
            for n in range(120):
                content = f"{chat_id[:4]}-{n}-" + "p" * 200
                await store.append_message(chat_id, "user", content)
                expected[chat_id].append(content)

        async with trio.open_nursery() as nursery:
            for chat in chats:
                nursery.start_soon(write, chat.id)
        await store.delete_chat(chats[0].id)
        del expected[chats[0].id]

        async def compaction_done() -> bool:
            return not store._journal._compacting

        with trio.fail_after(10):
            await eventually(compaction_done)
        assert store._journal.compactions >= 1
        order = [c.id for c in await store.list_chats()]

    files = journal_files(directory)
    assert not [name for name in files if name.endswith(".tmp")]
    snapshots = [name for name in files if name.startswith("snapshot")]
    assert len(snapshots) == 1
    journals = [name for name in files if name.startswith("journal")]
    assert all(name >= snapshots[0].replace("snapshot", "journal") for name in journals)

    async with open_embedded_store(directory) as store:
        assert [c.id for c in await store.list_chats()] == order
        for chat_id, contents in expected.items():
            assert [m.content for m in await store.get_messages(chat_id)] == contents


async def run_writer(directory: pathlib.Path, *args: str, acks: int) -> list[str]:
    """Start the writer process, wait for ``acks`` acknowledged appends, then SIGKILL it.

    Returns every whole line it printed, including those still in the pipe at the kill.
    """
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.support.store_writer", str(directory), *args],
        stdout=-1,
        cwd=str(ROOT),
    )
    assert process.stdout is not None
    output = b""
    try:
        with trio.fail_after(60):
            while output.count(b"\nack ") < acks:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    break
                output += chunk
    finally:
        process.send_signal(signal.SIGKILL)
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
    while chunk := await process.stdout.receive_some():
        output += chunk
    *whole_lines, _torn = output.split(b"\n")
    return [line.decode() for line in whole_lines]


@pytest.mark.parametrize("compact_after_bytes", [64 * 1024 * 1024, 50_000])
async def test_sigkill_mid_burst_loses_no_acknowledged_write(
    tmp_path: pathlib.Path, compact_after_bytes: int
) -> None:
    directory = tmp_path / "store"
    lines = await run_writer(directory, str(compact_after_bytes), acks=3000)
    acked = [line[4:] for line in lines if line.startswith("ack ")]
    assert len(acked) >= 3000
    chat_id = next(line.split()[1] for line in lines if line.startswith("ready "))

    async with open_embedded_store(directory) as store:
        stored = [m.content for m in await store.get_messages(chat_id)]
        # Every acknowledged write is there, once; unacknowledged ones may be too.
        assert set(acked) <= set(stored)
        assert len(set(stored)) == len(stored)
        # Within each writer, order is kept and there are no gaps.
        for worker in range(8):
            numbers = [int(c.split("-")[1]) for c in stored if c.startswith(f"w{worker}-")]
            assert numbers == list(range(len(numbers)))
        # The store opens cleanly and takes writes again.
        await store.append_message(chat_id, "user", "after restart")


async def test_failed_writes_are_refused_whole_and_the_journal_recovers(
    tmp_path: pathlib.Path,
) -> None:
    directory = tmp_path / "store"
    async with open_embedded_store(directory):
        pass  # create the directory and an empty journal first
    size_now = sum(p.stat().st_size for p in directory.iterdir())
    lines = await run_writer(directory, str(64 * 1024 * 1024), str(size_now + 20_000), acks=2000)
    failed = [line.split(" ", 2)[2] for line in lines if line.startswith("failed ")]
    assert failed, "the file size limit never made a write fail"
    assert all(
        line.split()[1] == "storage_unavailable" for line in lines if line.startswith("failed")
    )
    assert "recovered" in lines
    acked = [line[4:] for line in lines if line.startswith("ack ")]
    chat_id = next(line.split()[1] for line in lines if line.startswith("ready "))

    async with open_embedded_store(directory) as store:
        stored = [m.content for m in await store.get_messages(chat_id)]
    assert set(acked) <= set(stored)
    assert not set(failed) & set(stored)
    assert len(set(stored)) == len(stored)
    assert next(directory.glob("journal-*.jsonl")).stat().st_size > 20_000


async def test_the_memory_fact_log_keeps_the_latest_changes() -> None:
    log = MemoryFactLog(retained=3)
    log.append("add", [f"f{n}" for n in range(7)])
    assert log.position == 7
    assert await log.read(0, 10) is None  # the first changes are gone
    kept = await log.read(4, 10)
    assert kept is not None and [c.id for c in kept] == ["f4", "f5", "f6"]
    assert await log.read(8, 10) is None
