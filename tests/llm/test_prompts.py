"""Prompt templates: read from ``<data_dir>/prompts``, cached until the file changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from autobot import BadRequest, NotFound
from autobot.llm import PromptTemplates


async def set_mtime_ns(path: trio.Path, mtime_ns: int) -> None:
    def utime() -> None:
        os.utime(path, ns=(mtime_ns, mtime_ns))

    await trio.to_thread.run_sync(utime)


@pytest.fixture
async def prompts(tmp_path: Path) -> trio.Path:
    directory = trio.Path(tmp_path) / "prompts"
    await directory.mkdir()
    await (directory / "assistant.md").write_text("You are AutoBot.")
    return directory


async def test_loaded_once_then_served_from_the_cache(prompts: trio.Path, tmp_path: Path) -> None:
    templates = PromptTemplates(tmp_path, recheck_s=0)
    assert await templates.get("assistant") == "You are AutoBot."
    assert await templates.get("assistant") == "You are AutoBot."
    assert templates.loads == 1


async def test_reloaded_after_the_file_changes(prompts: trio.Path, tmp_path: Path) -> None:
    templates = PromptTemplates(tmp_path, recheck_s=0)
    await templates.get("assistant")
    path = prompts / "assistant.md"
    await path.write_text("You are AutoBot, terse.")
    assert await templates.get("assistant") == "You are AutoBot, terse."
    assert templates.loads == 2

    # Same size and the same modification time: an editor saving by rename
    # still changes the inode.
    stat = await path.stat()
    replacement = prompts / "assistant.md.tmp"
    await replacement.write_text("You are AutoBot, TERSE.")
    await set_mtime_ns(replacement, stat.st_mtime_ns)
    await replacement.rename(path)
    assert await templates.get("assistant") == "You are AutoBot, TERSE."
    assert templates.loads == 3


async def test_same_size_rewrite_is_seen_through_the_mtime(
    prompts: trio.Path, tmp_path: Path
) -> None:
    templates = PromptTemplates(tmp_path, recheck_s=0)
    await templates.get("assistant")
    path = prompts / "assistant.md"
    stat = await path.stat()
    await path.write_text("You are RoboCop.")  # same length
    await set_mtime_ns(path, stat.st_mtime_ns + 1_000_000)
    assert await templates.get("assistant") == "You are RoboCop."


async def test_missing_template(prompts: trio.Path, tmp_path: Path) -> None:
    templates = PromptTemplates(tmp_path, recheck_s=0)
    with pytest.raises(NotFound, match="no prompt template 'planner'") as caught:
        await templates.get("planner")
    assert caught.value.code == "prompt_not_found"
    # A cached template that disappears is missing too, not served stale.
    await templates.get("assistant")
    await (prompts / "assistant.md").unlink()
    with pytest.raises(NotFound):
        await templates.get("assistant")


async def test_subdirectories_and_rendering(prompts: trio.Path, tmp_path: Path) -> None:
    await (prompts / "agents").mkdir()
    await (prompts / "agents" / "planner.md").write_text("Plan for $user. Budget: $5, $missing.")
    templates = PromptTemplates(tmp_path, recheck_s=0)
    rendered = await templates.render("agents/planner", user="Ada")
    assert rendered == "Plan for Ada. Budget: $5, $missing."


@pytest.mark.parametrize(
    "name", ["../secret", "/etc/passwd", ".hidden", "a/../../secret", "", "a\\b", "a//b"]
)
async def test_names_that_could_leave_the_directory_are_refused(
    prompts: trio.Path, tmp_path: Path, name: str
) -> None:
    await (trio.Path(tmp_path) / "secret.md").write_text("not a prompt")
    with pytest.raises(BadRequest) as caught:
        await PromptTemplates(tmp_path, recheck_s=0).get(name)
    assert caught.value.code == "invalid_prompt_name"


async def test_a_symlink_out_of_the_directory_is_refused(
    prompts: trio.Path, tmp_path: Path
) -> None:
    outside = trio.Path(tmp_path) / "secret.md"
    await outside.write_text("not a prompt")
    await (prompts / "evil.md").symlink_to(outside)
    with pytest.raises(BadRequest, match="leads outside"):
        await PromptTemplates(tmp_path, recheck_s=0).get("evil")


async def test_lookups_within_the_recheck_window_touch_no_file(
    prompts: trio.Path, tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    templates = PromptTemplates(tmp_path, recheck_s=1.0)
    assert await templates.get("assistant") == "You are AutoBot."
    with pytest.raises(NotFound):
        await templates.get("planner")
    # Change both files: within the window the cache answers, as it was.
    await (prompts / "assistant.md").write_text("You are AutoBot, changed.")
    await (prompts / "planner.md").write_text("You plan.")
    mock_clock.jump(0.9)
    assert await templates.get("assistant") == "You are AutoBot."
    with pytest.raises(NotFound):
        await templates.get("planner")
    # After it, one look at the disk sees both changes.
    mock_clock.jump(0.2)
    assert await templates.get("assistant") == "You are AutoBot, changed."
    assert await templates.get("planner") == "You plan."
    assert templates.loads == 3


async def test_a_burst_of_lookups_shares_one_look_at_the_file(
    prompts: trio.Path, tmp_path: Path
) -> None:
    templates = PromptTemplates(tmp_path, recheck_s=1.0)
    texts: list[str] = []
    missing: list[str] = []

    async def look(name: str) -> None:
        try:
            texts.append(await templates.get(name))
        except NotFound as error:
            missing.append(error.code)

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(look, "assistant")
            nursery.start_soon(look, "planner")
    assert texts == ["You are AutoBot."] * 50
    assert missing == ["prompt_not_found"] * 50
    assert templates.loads == 1
