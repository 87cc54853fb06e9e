"""The sans-I/O stream parsers, fed bytes only: no network, no Trio."""

from __future__ import annotations

import json

import pytest

from autobot.llm import (
    MalformedStream,
    NDJSONChatParser,
    ServerSentEvent,
    SSEChatParser,
    SSEDecoder,
    StreamDone,
    StreamError,
    TextDelta,
)


def ollama_line(content: str, *, done: bool = False, **extra: object) -> bytes:
    item = {"model": "m", "message": {"role": "assistant", "content": content}, "done": done}
    return json.dumps({**item, **extra}, ensure_ascii=False).encode() + b"\n"


def openai_event(content: str | None, finish_reason: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"


OLLAMA_STREAM = (
    ollama_line("Grüß ")
    + ollama_line("dich, ")
    + ollama_line("🌍")
    + ollama_line("", done=True, eval_count=3, done_reason="stop")
)
OPENAI_STREAM = (
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    + openai_event("Grüß ")
    + b": keep-alive comment\n\n"
    + openai_event("dich, ")
    + openai_event("🌍")
    + openai_event(None, "stop")
    + b'data: {"choices":[],"usage":{"completion_tokens":3}}\n\n'
    + b"data: [DONE]\n\n"
)
PARSERS = {"ollama": (NDJSONChatParser, OLLAMA_STREAM), "openai": (SSEChatParser, OPENAI_STREAM)}


def events(parser, chunks, *, end: bool = True) -> list[object]:
    """Feed ``chunks`` one by one, collecting events as they become available."""
    found: list[object] = []
    for chunk in chunks:
        parser.feed(chunk)
        while (event := parser.next_event()) is not None:
            found.append(event)
    if end:
        parser.end_of_input()
        while (event := parser.next_event()) is not None:
            found.append(event)
    return found


def deltas(found: list[object]) -> str:
    return "".join(event.text for event in found if isinstance(event, TextDelta))


@pytest.mark.parametrize("fmt", ["ollama", "openai"])
def test_whole_stream_in_one_chunk(fmt: str) -> None:
    parser_type, stream = PARSERS[fmt]
    found = events(parser_type(), [stream])
    assert found[:3] == [TextDelta("Grüß "), TextDelta("dich, "), TextDelta("🌍")]
    assert isinstance(found[3], StreamDone) and len(found) == 4


@pytest.mark.parametrize("fmt", ["ollama", "openai"])
def test_every_split_point_gives_the_same_events(fmt: str) -> None:
    # Cutting the stream in two anywhere (inside a line, a CRLF, a UTF-8
    # character) must not change what comes out.
    parser_type, stream = PARSERS[fmt]
    expected = events(parser_type(), [stream])
    for cut in range(1, len(stream)):
        assert events(parser_type(), [stream[:cut], stream[cut:]]) == expected, cut


@pytest.mark.parametrize("fmt", ["ollama", "openai"])
def test_byte_by_byte(fmt: str) -> None:
    parser_type, stream = PARSERS[fmt]
    found = events(parser_type(), [stream[i : i + 1] for i in range(len(stream))])
    assert deltas(found) == "Grüß dich, 🌍"


@pytest.mark.parametrize("fmt", ["ollama", "openai"])
def test_events_come_out_as_soon_as_their_line_is_complete(fmt: str) -> None:
    parser_type, stream = PARSERS[fmt]
    parser = parser_type()
    line_end = stream.index(b"\n", stream.index(b"Gr"))  # the first line carrying text
    parser.feed(stream[:line_end])
    assert parser.next_event() is None  # the line is not finished yet
    parser.feed(stream[line_end : line_end + 2])
    assert parser.next_event() == TextDelta("Grüß ")


def test_ollama_done_stats_exclude_the_message() -> None:
    [*_, done] = events(NDJSONChatParser(), [OLLAMA_STREAM])
    assert done == StreamDone({"model": "m", "done": True, "eval_count": 3, "done_reason": "stop"})


def test_ollama_final_object_may_carry_text() -> None:
    found = events(NDJSONChatParser(), [ollama_line("a"), ollama_line("b", done=True)])
    assert found == [TextDelta("a"), TextDelta("b"), StreamDone({"model": "m", "done": True})]


def test_ollama_crlf_and_blank_lines() -> None:
    stream = ollama_line("a").replace(b"\n", b"\r\n") + b"\r\n\n" + ollama_line("", done=True)
    found = events(NDJSONChatParser(), [stream])
    assert deltas(found) == "a" and isinstance(found[-1], StreamDone)


def test_ollama_error_object_mid_stream() -> None:
    found = events(NDJSONChatParser(), [ollama_line("par") + b'{"error":"out of memory"}\n'])
    assert found == [TextDelta("par"), StreamError("out of memory")]


def test_ollama_lines_after_done_are_ignored() -> None:
    found = events(NDJSONChatParser(), [ollama_line("", done=True), b"garbage\n", ollama_line("x")])
    assert len(found) == 1 and isinstance(found[0], StreamDone)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"message": {"content": "x"\n', "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"message": "text"}\n', "no message text"),
        (b'{"message": {"content": 7}}\n', "no message text"),
        (b'{"message": {"content": "\xff"}}\n', "not valid UTF-8"),
    ],
)
def test_ollama_malformed_line_after_good_ones(line: bytes, reason: str) -> None:
    parser = NDJSONChatParser()
    parser.feed(ollama_line("ok") + line + ollama_line("", done=True))
    assert parser.next_event() == TextDelta("ok")  # what came before is delivered first
    with pytest.raises(MalformedStream, match=reason):
        parser.next_event()


def test_ollama_end_without_done() -> None:
    parser = NDJSONChatParser()
    parser.feed(ollama_line("half"))
    parser.end_of_input()
    assert parser.next_event() == TextDelta("half")
    with pytest.raises(MalformedStream, match="without its final 'done' object"):
        parser.next_event()


def test_ollama_unterminated_last_line_counts_at_the_end() -> None:
    found = events(NDJSONChatParser(), [ollama_line("", done=True).rstrip(b"\n")])
    assert isinstance(found[-1], StreamDone)


def test_line_length_limit() -> None:
    parser = NDJSONChatParser(max_line_bytes=100)
    parser.feed(b'{"message": {"content": "' + b"x" * 200)
    with pytest.raises(MalformedStream, match="longer than 100 bytes"):
        parser.next_event()


# -- SSE framing -------------------------------------------------------------------


def sse(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    found = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (event := decoder.next_event()) is not None:
            found.append(event)
    return found


def test_sse_multi_line_data_event_type_and_id() -> None:
    found = sse(b"event: note\nid: 7\ndata: one\ndata:two\ndata\n\n")
    assert found == [ServerSentEvent("one\ntwo\n", "note", "7")]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_sse_line_endings(newline: bytes) -> None:
    stream = b"data: a" + newline + newline + b"data: b" + newline + newline
    assert [e.data for e in sse(stream)] == ["a", "b"]
    # ... also when a chunk ends between the \r and the \n of a CRLF
    assert [e.data for e in sse(*(stream[i : i + 1] for i in range(len(stream))))] == ["a", "b"]


def test_sse_comments_retry_and_unknown_fields_are_skipped() -> None:
    decoder = SSEDecoder()
    decoder.feed(b": ping\nretry: 100\nfoo: bar\n\n: ping\ndata: x\n\n")
    assert decoder.next_event() == ServerSentEvent("x")
    assert decoder.comments == 2


def test_sse_byte_order_mark_and_event_type_reset() -> None:
    found = sse(b"\xef\xbb\xbfevent: a\ndata: 1\n\ndata: 2\n\n")
    assert [(e.event, e.data) for e in found] == [("a", "1"), ("message", "2")]


def test_sse_unfinished_event_is_dropped_at_the_end() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: 1\n\ndata: 2\n")
    decoder.end_of_input()
    assert decoder.next_event() == ServerSentEvent("1")
    assert decoder.next_event() is None


# -- OpenAI chat over SSE --------------------------------------------------------------


def test_openai_done_stats() -> None:
    [*_, done] = events(SSEChatParser(), [OPENAI_STREAM])
    assert done == StreamDone({"finish_reason": "stop", "usage": {"completion_tokens": 3}})


def test_openai_role_chunk_with_empty_content_is_not_a_delta() -> None:
    parser = SSEChatParser()
    parser.feed(b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n')
    assert parser.next_event() is None


@pytest.mark.parametrize(
    "error",
    [
        b'data: {"error": {"message": "context too long", "type": "invalid_request"}}\n\n',
        b'event: error\ndata: {"error": {"message": "context too long"}}\n\n',
        b"event: error\ndata: context too long\n\n",
    ],
)
def test_openai_error_mid_stream(error: bytes) -> None:
    found = events(SSEChatParser(), [openai_event("par"), error])
    assert found == [TextDelta("par"), StreamError("context too long")]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (b"data: {oops\n\n", "not JSON"),
        (b"data: 42\n\n", "not a JSON object"),
        (b'data: {"choices": {}}\n\n', "not a list"),
        (b'data: {"choices": [{"index": 0}]}\n\n', "no 'delta'"),
        (b'data: {"choices": [{"delta": {"content": 1}}]}\n\n', "not text"),
    ],
)
def test_openai_malformed_event(event: bytes, reason: str) -> None:
    parser = SSEChatParser()
    parser.feed(openai_event("ok") + event)
    assert parser.next_event() == TextDelta("ok")
    with pytest.raises(MalformedStream, match=reason):
        parser.next_event()


def test_openai_end_without_done_marker() -> None:
    parser = SSEChatParser()
    parser.feed(openai_event("half") + openai_event(None, "stop"))
    parser.end_of_input()
    assert parser.next_event() == TextDelta("half")
    with pytest.raises(MalformedStream, match=r"without 'data: \[DONE\]'"):
        parser.next_event()


def test_openai_events_after_done_are_ignored() -> None:
    found = events(SSEChatParser(), [b"data: [DONE]\n\n" + openai_event("late")])
    assert found == [StreamDone({})]
