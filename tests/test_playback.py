"""The playback buffer between a producer (live's worker, the receiver's decoder) and a device's callback."""

from __future__ import annotations

import numpy as np

from rtcodec.cli.playback import PlaybackBuffer

CHUNK = 4  # samples per chunk and per callback here


def chunk(n: int) -> np.ndarray:
    """Chunk n: its samples say which chunk they are from (n + 1, never silence)."""
    return np.full(CHUNK, n + 1, np.float32)


def play(buffer: PlaybackBuffer) -> np.ndarray:
    out = np.full(CHUNK, np.nan, np.float32)  # every sample must be written
    buffer.take(out)
    return out


def test_playback_starts_once_enough_waits_and_then_rides_out_a_late_chunk():
    buffer = PlaybackBuffer(start=2 * CHUNK, slack=2 * CHUNK)
    buffer.put(chunk(0))
    assert np.array_equal(play(buffer), np.zeros(CHUNK)) and buffer.xruns == 0  # not started: silence, no xrun
    buffer.put(chunk(1))
    assert np.array_equal(play(buffer), chunk(0))  # started with two chunks waiting
    assert np.array_equal(play(buffer), chunk(1))  # chunk 2 is late: what waited plays, no gap
    buffer.put(chunk(2))
    buffer.put(chunk(3))  # it came with chunk 3: nothing skipped (within the slack)
    assert [play(buffer)[0] for _ in range(2)] == [3, 4] and buffer.xruns == buffer.skipped == 0


def test_an_empty_buffer_after_the_start_is_an_xrun_of_silence():
    buffer = PlaybackBuffer(start=CHUNK)
    buffer.put(chunk(0)[:2])
    assert np.array_equal(play(buffer), np.zeros(CHUNK)) and not buffer.started  # less than `start`
    buffer.put(chunk(0)[2:])
    assert np.array_equal(play(buffer), chunk(0)) and buffer.xruns == 0
    buffer.put(chunk(1)[:1])
    assert np.array_equal(play(buffer), [2, 0, 0, 0]) and buffer.xruns == 1
    assert np.array_equal(play(buffer), np.zeros(CHUNK)) and buffer.xruns == 2


def test_a_burst_after_a_stall_is_skipped_down_to_the_slack_ahead_of_the_newest_chunk():
    buffer = PlaybackBuffer(start=CHUNK, slack=CHUNK)
    buffer.put(chunk(0))
    play(buffer)
    for n in range(1, 5):  # a stall, then four chunks at once
        buffer.put(chunk(n))
    # Chunks 3 and 4 each came with two waiting ahead, a chunk beyond the slack: chunks 1 and 2 were skipped.
    assert buffer.skipped == 2 * CHUNK
    assert [play(buffer)[0] for _ in range(3)] == [4, 5, 0] and buffer.xruns == 1


def test_a_partial_chunk_left_over_is_never_skipped():
    """Chunks of another size than the callback's (a decoder's first output): what is left of one is played."""
    buffer = PlaybackBuffer(start=CHUNK)
    buffer.put(np.arange(1, 7, dtype=np.float32))  # a chunk and a half
    assert np.array_equal(play(buffer), [1, 2, 3, 4])
    buffer.put(chunk(9))  # half a chunk waits ahead of it: less than a chunk beyond the slack of 0
    assert np.array_equal(play(buffer), [5, 6, 10, 10]) and buffer.skipped == 0


def test_finish_plays_what_waits_however_short():
    buffer = PlaybackBuffer(start=3 * CHUNK, slack=3 * CHUNK)
    buffer.put(chunk(0))
    assert np.array_equal(play(buffer), np.zeros(CHUNK))
    buffer.finish()
    assert np.array_equal(play(buffer), chunk(0)) and buffer.samples.size == 0
