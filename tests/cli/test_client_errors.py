"""Client commands that cannot do their work: one clear line on stderr, exit 1 or 2."""

from __future__ import annotations

import pathlib

import pytest

from .helpers import assert_one_error_line, cli, closed_port, server_for

CLIENT_COMMANDS = [["chat"], ["ops", "list"], ["ops", "watch", "x"], ["timeouts"]]


@pytest.mark.parametrize("command", CLIENT_COMMANDS, ids=" ".join)
async def test_no_server_is_one_line_and_status_1(command: list[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = await cli("--url", url, *command)
    assert_one_error_line(result, 1, f"cannot reach the AutoBot server at {url}")
    assert "Traceback" not in result.stdout


async def test_a_url_that_is_not_http_is_status_2() -> None:
    result = await cli("ops", "list", "--url", "ftp://example.org")
    assert_one_error_line(result, 2, "--url", "ftp://example.org")


@pytest.mark.slow
async def test_the_token_from_the_option_or_the_environment(tmp_path: pathlib.Path) -> None:
    token = "s3cret-token"
    async with server_for(tmp_path / "data", AUTOBOT_API_TOKEN=token) as server:
        url = ["--url", server.url]
        missing = await cli(*url, "ops", "list")
        assert_one_error_line(missing, 2, "needs an API token", "--token", "AUTOBOT_API_TOKEN")
        wrong = await cli(*url, "timeouts", "--token", "nope")
        assert_one_error_line(wrong, 2, "the token was refused")
        websocket = await cli(*url, "ops", "watch", "x", "--token", "nope")
        assert_one_error_line(websocket, 2, "the token was refused")

        by_option = await cli(*url, "--token", token, "ops", "list")
        assert by_option.returncode == 0, by_option.stderr
        by_env = await cli(*url, "ops", "list", env={"AUTOBOT_API_TOKEN": token})
        assert by_env.returncode == 0, by_env.stderr
        # The chat's WebSocket carries the token too: a line piped in gets its answer
        # (an error here: the LLM is on a closed port), then end of input leaves.
        chat = await cli(*url, "chat", "--token", token, stdin=b"hi\n")
        assert chat.returncode == 0, chat.stderr
        assert "error: llm_unavailable" in chat.stderr
