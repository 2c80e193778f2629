"""Following a streamed request on a real nats-server: repeats dropped, gaps filled from the result, an answer that
changed under the stream is an error, never silently wrong text."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as Nats

from costwise.client import Delta, DeltaStream, chunks
from costwise.contracts import ErrorCode, ErrorInfo, Output, Result, StreamDelta, encode, subjects


def _result(tenant: str, text: str | None) -> Result:
    if text is None:
        return Result(
            request_id="r", tenant=tenant, status="error", error=ErrorInfo(code=ErrorCode.ENGINE_ERROR, message="x")
        )
    return Result(request_id="r", tenant=tenant, status="ok", output=Output(text=text, finish_reason="stop"))


async def _follow(
    nc: Nats, tenant: str, pieces: list[tuple[int, int, str]], result: Result, *, expect: int
) -> list[Delta]:
    """Publish ``pieces``, then let ``result`` arrive once ``expect`` pieces came through (the pipeline publishes
    the result after the last delta)."""
    stream = await DeltaStream.open(nc, tenant, "r")
    try:
        for offset, tokens, text in pieces:
            delta = StreamDelta(request_id="r", tenant=tenant, offset=offset, text=text, tokens=tokens)
            await nc.publish(subjects.deltas(tenant, "r"), encode(delta))
        await nc.flush()
        arriving: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        got: list[Delta] = []
        async for delta in stream.follow(arriving):
            got.append(delta)
            if len(got) == expect:
                arriving.set_result(result)
        return got
    finally:
        await stream.close()


async def test_repeats_are_dropped_and_the_last_delta_carries_the_result(nc: Nats, unique: str) -> None:
    pieces = [(0, 1, "a"), (1, 2, "bc"), (0, 1, "a"), (3, 1, "d")]
    got = await _follow(nc, unique, pieces, _result(unique, "abcd"), expect=3)
    assert [d.text for d in got] == ["a", "bc", "d", ""] and [d.offset for d in got[:3]] == [0, 1, 3]
    assert got[-1].result is not None and got[-1].error is None


async def test_after_a_gap_the_rest_comes_from_the_result(nc: Nats, unique: str) -> None:
    got = await _follow(
        nc, unique, [(0, 1, "one"), (5, 1, " six")], _result(unique, "one two three four five six"), expect=1
    )
    assert "".join(d.text for d in got) == "one two three four five six"
    assert got[0].offset == 0 and all(d.offset is None for d in got[1:])


async def test_an_answer_that_changed_under_the_stream_is_an_error(nc: Nats, unique: str) -> None:
    got = await _follow(nc, unique, [(0, 1, "yes")], _result(unique, "no"), expect=1)
    assert got[-1].error is not None and got[-1].error.code == ErrorCode.INTERNAL and "changed" in got[-1].error.message


async def test_an_error_result_ends_the_stream_with_its_error(nc: Nats, unique: str) -> None:
    stream = await DeltaStream.open(nc, unique, "r")
    try:
        arriving: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        arriving.set_result(_result(unique, None))
        got = [d async for d in stream.follow(arriving)]
    finally:
        await stream.close()
    assert len(got) == 1 and got[0].error is not None and got[0].error.code == ErrorCode.ENGINE_ERROR


def test_a_whole_answer_is_cut_into_word_chunks_that_add_up() -> None:
    text = "  The quick brown fox\njumps over the lazy dog.  "
    assert "".join(chunks(text)) == text and len(chunks(text)) == 3
    assert chunks("") == []
