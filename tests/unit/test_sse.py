"""The SSE parser state machine: line endings, split feeds, fields, comments and size limits."""

from __future__ import annotations

import pytest

from services.common.sse import (
    DONE,
    MAX_EVENT_BYTES,
    MAX_LINE_BYTES,
    SseError,
    SseEvent,
    SseParser,
    frame,
)

LINE_ENDINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


def stream_with(eol: bytes) -> bytes:
    """Three events (one named, one multi-line, one with UTF-8), a comment, and [DONE]."""
    lines = [
        b": keep-alive",
        b"",
        b'data: {"n":1}',
        b"",
        b"event: ping",
        b"data: first",
        b"data: second",
        b"",
        "data: héllo 🌏".encode(),
        b"id: 7",
        b"retry: 1000",
        b"",
        b"data: [DONE]",
        b"",
    ]
    return b"".join(line + eol for line in lines)


EXPECTED = [
    SseEvent(b'{"n":1}'),
    SseEvent(b"first\nsecond", "ping"),
    SseEvent("héllo 🌏".encode()),
    SseEvent(b"[DONE]"),
]


def feed_all(parser: SseParser, pieces: list[bytes]) -> list[SseEvent]:
    events: list[SseEvent] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    return events


@pytest.mark.parametrize("eol", LINE_ENDINGS.values(), ids=LINE_ENDINGS.keys())
def test_whole_stream_in_one_feed(eol: bytes) -> None:
    assert SseParser().feed(stream_with(eol)) == EXPECTED


@pytest.mark.parametrize("eol", LINE_ENDINGS.values(), ids=LINE_ENDINGS.keys())
def test_stream_fed_one_byte_at_a_time(eol: bytes) -> None:
    raw = stream_with(eol)
    pieces = [raw[i : i + 1] for i in range(len(raw))]
    assert feed_all(SseParser(), pieces) == EXPECTED


@pytest.mark.parametrize("eol", LINE_ENDINGS.values(), ids=LINE_ENDINGS.keys())
def test_stream_split_at_every_point(eol: bytes) -> None:
    raw = stream_with(eol)
    for cut in range(1, len(raw)):
        assert feed_all(SseParser(), [raw[:cut], raw[cut:]]) == EXPECTED, f"split at {cut}"


def test_event_is_returned_by_the_feed_that_completes_it() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"\n") == [SseEvent(b"a")]
    assert parser.feed(b"data: b\r\n") == []
    assert parser.feed(b"\r\n") == [SseEvent(b"b")]


def test_cr_terminated_event_is_returned_without_waiting_for_more_bytes() -> None:
    # A lone \r ends a line; the blank line that dispatches the event must not wait
    # for the next byte, or the last event of a \r-delimited stream ([DONE]) is lost.
    parser = SseParser()
    assert parser.feed(b"data: x\r\r") == [SseEvent(b"x")]
    assert parser.feed(b"data: [DONE]\r\r") == [SseEvent(b"[DONE]")]


def test_crlf_split_between_cr_and_lf_is_one_line_ending() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    # The \n belongs to the \r before it: it is not a blank line ending the event.
    assert parser.feed(b"\ndata: b\r\n") == []
    assert parser.feed(b"\r\n") == [SseEvent(b"a\nb")]


def test_mixed_line_endings_in_one_stream() -> None:
    raw = b"data: a\r\n\ndata: b\n\r\ndata: c\r\n\r\n"
    assert SseParser().feed(raw) == [SseEvent(b"a"), SseEvent(b"b"), SseEvent(b"c")]


def test_several_events_in_one_feed_keep_their_order() -> None:
    raw = b"".join(frame(str(i).encode()) for i in range(5))
    assert SseParser().feed(raw) == [SseEvent(str(i).encode()) for i in range(5)]


def test_comments_and_blank_lines_alone_yield_nothing() -> None:
    assert SseParser().feed(b": ping\n\n\n:\n\n: another comment\r\n\r\n") == []


def test_comment_inside_an_event_is_ignored() -> None:
    assert SseParser().feed(b"data: a\n: note\ndata: b\n\n") == [SseEvent(b"a\nb")]


def test_multi_line_data_joined_with_newlines() -> None:
    raw = b'data: {\ndata:   "k": 1\ndata: }\n\n'
    assert SseParser().feed(raw) == [SseEvent(b'{\n  "k": 1\n}')]


@pytest.mark.parametrize(
    ("line", "data"),
    [
        (b"data:x", b"x"),  # no space after the colon
        (b"data: x", b"x"),  # exactly one leading space is dropped
        (b"data:  x", b" x"),  # only one
        (b"data: x ", b"x "),  # trailing spaces are kept
        (b"data", b""),  # a field name alone is an empty value
        (b"data:", b""),
        (b"data: a:b: c", b"a:b: c"),  # only the first colon separates
    ],
)
def test_data_field_value(line: bytes, data: bytes) -> None:
    assert SseParser().feed(line + b"\n\n") == [SseEvent(data)]


def test_event_name_applies_to_one_event_only() -> None:
    parser = SseParser()
    raw = b"event: error\ndata: {}\n\ndata: next\n\n"
    assert parser.feed(raw) == [SseEvent(b"{}", "error"), SseEvent(b"next", "message")]


def test_event_name_without_data_is_discarded_at_the_blank_line() -> None:
    assert SseParser().feed(b"event: ping\n\ndata: x\n\n") == [SseEvent(b"x", "message")]


def test_id_retry_and_unknown_fields_are_ignored() -> None:
    raw = b"id: 42\nretry: 10\nfoo: bar\ndata: x\nDATA: upper-case is another field\n\n"
    assert SseParser().feed(raw) == [SseEvent(b"x")]


def test_event_without_trailing_blank_line_is_not_returned() -> None:
    parser = SseParser()
    assert parser.feed(b"data: incomplete\n") == []
    assert parser.feed(b"data: still\n") == []
    assert parser.feed(b"\n") == [SseEvent(b"incomplete\nstill")]


def test_utf8_character_split_across_feeds() -> None:
    raw = "data: 日本🌏\n\n".encode()
    cut = raw.index("本".encode()) + 1  # inside a 3-byte character
    assert feed_all(SseParser(), [raw[:cut], raw[cut:]]) == [SseEvent("日本🌏".encode())]


def test_line_at_the_size_limit_is_accepted() -> None:
    parser = SseParser()
    prefix = b"data: "
    assert parser.feed(prefix + b"a" * (MAX_LINE_BYTES - len(prefix))) == []
    assert parser.feed(b"\n\n") == [SseEvent(b"a" * (MAX_LINE_BYTES - len(prefix)))]


def test_unterminated_line_over_the_size_limit_is_an_error() -> None:
    parser = SseParser()
    piece = b"a" * (1024 * 1024)
    parser.feed(b"data: ")
    with pytest.raises(SseError):
        for _ in range(MAX_LINE_BYTES // len(piece) + 1):
            parser.feed(piece)


def test_event_over_the_size_limit_is_an_error() -> None:
    parser = SseParser()
    line = b"data: " + b"a" * (1024 * 1024) + b"\n"
    with pytest.raises(SseError):
        for _ in range(MAX_EVENT_BYTES // (1024 * 1024) + 1):
            parser.feed(line)


def test_event_size_counter_resets_after_each_event() -> None:
    parser = SseParser()
    line = b"data: " + b"a" * (1024 * 1024) + b"\n"
    half = MAX_EVENT_BYTES // (1024 * 1024) // 2 + 1  # two of these exceed the limit
    for _ in range(2):
        events = parser.feed(line * half + b"\n")
        assert len(events) == 1
        assert len(events[0].data) == half * 1024 * 1024 + (half - 1)


def test_frame_and_done() -> None:
    assert frame(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert DONE == b"data: [DONE]\n\n"
    assert SseParser().feed(frame(b'{"a":1}') + DONE) == [
        SseEvent(b'{"a":1}'),
        SseEvent(b"[DONE]"),
    ]
