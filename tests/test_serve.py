"""`rtcodec serve` over its WebSocket protocol: exact per-caller output, refusals, and hostile clients."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import struct
import time

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("starlette", reason="the serve extra is not installed (pip install 'rtcodec[serve]')")
from starlette.testclient import TestClient  # noqa: E402

from rtcodec.hub import Pretrained  # noqa: E402
from rtcodec.pipelines import LATENCY_PRESETS  # noqa: E402
from rtcodec.scheduler import CallerScheduler  # noqa: E402
from rtcodec.serve import ServeOptions, create_app  # noqa: E402
from rtcodec.serve.engine import JITTER_BLOCKS, OVERLOAD_SECONDS, STALL_SECONDS, Engine  # noqa: E402
from rtcodec.serve.protocol import AUDIO, HEADER, REFERENCE, SILENCE, VERSION  # noqa: E402

from .conftest import golden_model, needs_golden  # noqa: E402
from .test_scheduler import reference  # noqa: E402

pytestmark = needs_golden
BLOCK = 200
WS = "ws://127.0.0.1:8000/ws"  # TestClient's own default host, testserver, is not one of the server's names


@pytest.fixture(scope="module")
def models() -> Pretrained:
    return Pretrained(golden_model("encoder"), golden_model("decoder"))


def client_of(app) -> TestClient:
    """A test client that calls the app by one of its names, as a browser on this machine does."""
    return TestClient(app, base_url="http://127.0.0.1:8000")


def hello(**settings) -> str:
    return json.dumps({"version": VERSION, "mode": "convert", "voice": "bright", "latency": "exact", **settings})


def audio_message(seq: int, samples: np.ndarray) -> bytes:
    samples = np.asarray(samples, np.float32)
    return HEADER.pack(VERSION, AUDIO, seq) + (samples * 32768).round().clip(-32768, 32767).astype("<i2").tobytes()


def receive_until(ws, outputs: int) -> list[tuple[int, np.ndarray]]:
    """(consumed block, samples) of the next `outputs` AUDIO messages; stats messages skipped."""
    got = []
    while len(got) < outputs:
        message = ws.receive()
        if message.get("bytes") is not None:
            data = message["bytes"]
            consumed = struct.unpack_from(">I", data, HEADER.size)[0]
            got.append((consumed, np.frombuffer(data[HEADER.size + 4 :], "<i2").astype(np.float32) / 32768))
        elif message.get("text") is None:
            raise AssertionError(f"the server closed the call: {message}")
    return got


def expected_output(models, speaker, blocks: list[np.ndarray], consumed: list[int], mode: str) -> np.ndarray:
    """The library's own pipeline, fed the blocks each tick consumed (silence where a block came late), clipped
    as the int16 wire clips it."""
    fed = [torch.zeros(BLOCK) if c == SILENCE else torch.from_numpy(blocks[c]) for c in consumed]
    return np.clip(reference(models.encoder, models.decoder, speaker, fed, mode).numpy(), -1, 1)


def wire_equal(got: np.ndarray, expected: np.ndarray) -> bool:
    """Equal up to the rounding of int16 on the wire."""
    return got.shape == expected.shape and got.size > 0 and np.abs(got - expected).max() <= 1.5 / 32768


def speech(seconds: float, seed: int) -> list[np.ndarray]:
    from .conftest import AUDIO

    data, _ = sf.read(AUDIO / ("slt.wav" if seed % 2 else "rms.wav"), dtype="float32")
    data = data[seed * 1000 : seed * 1000 + int(seconds * 16000)]
    data = (data * 32768).round().clip(-32768, 32767) / 32768  # what int16 carries
    return [data[i : i + BLOCK].astype(np.float32) for i in range(0, len(data) - BLOCK + 1, BLOCK)]


def test_two_callers_each_get_their_own_exact_output(models):
    app = create_app(models, ServeOptions(slots=3))
    server = app.state.server
    with client_of(app) as client:
        assert client.get("/healthz").text == "ok\n"
        info = client.get("/info").json()
        assert info["voices"] == ["bright", "low"] and info["latencies"] == ["exact"] and info["block"] == BLOCK
        assert info["max_reference_bytes"] == 2 << 20
        assert "rtcodec" in client.get("/").text
        with client.websocket_connect(WS) as a, client.websocket_connect(WS) as b:
            a.send_text(hello())
            b.send_text(hello(mode="codec", voice="low"))
            ready_a, ready_b = json.loads(a.receive_text()), json.loads(b.receive_text())
            assert ready_a["type"] == "ready" and ready_a["block"] == BLOCK and ready_b["mode"] == "codec"
            assert ready_a["slot"] != ready_b["slot"] and ready_a["latency_samples"] == 10925 + BLOCK
            blocks_a, blocks_b = speech(1.2, 1), speech(1.2, 2)
            got_a, got_b = [], []
            for i in range(len(blocks_a)):  # both in step, as two live callers
                a.send_bytes(audio_message(i, blocks_a[i]))
                b.send_bytes(audio_message(i, blocks_b[i]))
                got_a += receive_until(a, 1)
                got_b += receive_until(b, 1)
            metrics = client.get("/metrics").text
            assert 'rtcodec_slots_active{latency="exact"} 2' in metrics and "rtcodec_tick_compute_seconds" in metrics
            for slot in (ready_a["slot"], ready_b["slot"]):  # per caller, labelled by its slot
                for name in ("late_blocks", "dropped_blocks", "delay_seconds"):
                    assert f'rtcodec_caller_{name}{{latency="exact",slot="{slot}"}}' in metrics
            assert "rtcodec_block_seconds 0.0125" in metrics and 'rtcodec_overloaded{latency="exact"}' in metrics
    for got, blocks, voice, mode in ((got_a, blocks_a, "bright", "convert"), (got_b, blocks_b, "low", "codec")):
        out = np.concatenate([samples for _, samples in got])
        expected = expected_output(models, server.voice(voice), blocks, [c for c, _ in got], mode)
        assert wire_equal(out, expected)


def test_a_server_with_half_precision_synthesis_answers_in_fp32s_voice(models):
    """`rtcodec serve --precision bf16`: the batch's synthesis in bf16, the codes in fp32; a caller hears what the
    fp32 pipeline gives, within bf16's rounding (tests/test_precision.py states its SNR)."""
    half = Pretrained(models.encoder, copy.deepcopy(models.decoder).set_synthesis_dtype(torch.bfloat16))
    app = create_app(half, ServeOptions(slots=1))
    with client_of(app) as client, client.websocket_connect(WS) as ws:
        ws.send_text(hello())
        assert json.loads(ws.receive_text())["type"] == "ready"
        blocks, got = speech(1.2, 1), []
        for i, block in enumerate(blocks):
            ws.send_bytes(audio_message(i, block))
            got += receive_until(ws, 1)
    out = np.concatenate([samples for _, samples in got])
    speaker = app.state.server.voice("bright").float()
    expected = expected_output(models, speaker, blocks, [c for c, _ in got], "convert")
    assert out.shape == expected.shape and np.abs(expected).max() > 0.01
    assert 10 * np.log10(np.sum(expected**2) / np.sum((out - expected) ** 2)) > 30


def close_of(ws) -> tuple[int, str]:
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return message["code"], message.get("reason") or ""


@pytest.mark.parametrize(
    "first, then, code, reason",
    [
        ("not json", None, 1008, "not JSON"),
        (json.dumps({"version": 9}), None, 1008, "version 1"),
        (hello(version=True), None, 1008, "version 1 (an integer)"),
        (hello(version=1.0), None, 1008, "version 1 (an integer)"),
        (hello(voice="../../etc/passwd"), None, 1008, "voice must be one of"),
        (hello(mode="karaoke"), None, 1008, "mode must be"),
        (hello(latency="zero"), None, 1008, "latency must be one of"),
        ("x" * 5000, None, 1008, "at most 1024"),
        (b"\x01\x01\x00\x00\x00\x00", None, 1008, "hello, as text"),
        (hello(), b"\x01", 1008, "shorter than its header"),
        (hello(), HEADER.pack(2, AUDIO, 0) + bytes(400), 1008, "protocol version 2"),
        (hello(), HEADER.pack(VERSION, 7, 0) + bytes(400), 1008, "unknown message type 7"),
        (hello(), HEADER.pack(VERSION, AUDIO, 0) + bytes(399), 1008, "200 int16 samples"),
        (hello(), HEADER.pack(VERSION, REFERENCE, 0) + bytes(10), 1008, "AUDIO messages"),
        (hello(), [audio_message(5, np.zeros(BLOCK)), audio_message(4, np.zeros(BLOCK))], 1008, "out of order"),
        (hello(voice="upload"), HEADER.pack(VERSION, REFERENCE, 0) + b"not audio", 1008, "not usable audio"),
        (hello(voice="upload"), HEADER.pack(VERSION, REFERENCE, 0) + bytes(3 << 20), 1009, "at most 2097152"),
    ],
)
def test_a_misbehaving_client_is_closed_with_a_reason_and_others_go_on(models, first, then, code, reason):
    app = create_app(models, ServeOptions(slots=2))
    with client_of(app) as client, client.websocket_connect(WS) as good:
        good.send_text(hello())
        assert json.loads(good.receive_text())["type"] == "ready"
        with client.websocket_connect(WS) as bad:
            bad.send_text(first) if isinstance(first, str) else bad.send_bytes(first)
            if then is not None:
                if '"upload"' not in first:  # with an upload, the server waits for the clip before it is ready
                    assert json.loads(bad.receive_text())["type"] == "ready"
                for message in then if isinstance(then, list) else [then]:
                    bad.send_bytes(message)
            got_code, got_reason = close_of(bad)
        assert (got_code, reason in got_reason) == (code, True), got_reason
        blocks = speech(0.2, 3)
        for i, block in enumerate(blocks):  # the good caller is still served
            good.send_bytes(audio_message(i, block))
        assert len(receive_until(good, len(blocks))) == len(blocks)
        assert app.state.server.engines["exact"].scheduler.free_slots == 1  # the bad caller's slot is free


def test_callers_beyond_the_slots_are_refused_and_an_upload_is_a_voice(models, tmp_path):
    app = create_app(models, ServeOptions(slots=1))
    clip = io.BytesIO()
    sf.write(clip, np.concatenate(speech(2.0, 5)), 16000, format="FLAC")
    with client_of(app) as client, client.websocket_connect(WS) as first:
        first.send_text(hello(voice="upload"))
        first.send_bytes(HEADER.pack(VERSION, REFERENCE, 0) + clip.getvalue())
        assert json.loads(first.receive_text())["type"] == "ready"
        with client.websocket_connect(WS) as second:
            second.send_text(hello())
            assert close_of(second) == (1013, "all 1 slot is taken: try again later")
        assert "rtcodec_refused_total 1" in client.get("/metrics").text


def test_audio_faster_than_real_time_is_cut_off(models):
    app = create_app(models, ServeOptions(slots=1, max_pending_s=0.1))  # 8 blocks ahead at most
    with client_of(app) as client, client.websocket_connect(WS) as ws:
        ws.send_text(hello())
        assert json.loads(ws.receive_text())["type"] == "ready"
        for i in range(400):  # 5 s of audio at once
            ws.send_bytes(audio_message(i, np.zeros(BLOCK, np.float32)))
        assert close_of(ws) == (1008, "audio faster than real time")


def test_a_caller_vanishing_mid_stream_frees_its_slot(models):
    app = create_app(models, ServeOptions(slots=1))
    engine = app.state.server.engines["exact"]
    with client_of(app) as client:
        with client.websocket_connect(WS) as ws:
            ws.send_text(hello())
            assert json.loads(ws.receive_text())["type"] == "ready"
            for i, block in enumerate(speech(0.1, 4)):
                ws.send_bytes(audio_message(i, block))
        # The connection dropped without a close handshake of the caller's own: the next caller gets the slot.
        for _ in range(100):
            if engine.scheduler.free_slots == 1:
                break
            time.sleep(0.05)
        with client.websocket_connect(WS) as again:
            again.send_text(hello())
            assert json.loads(again.receive_text())["type"] == "ready"


def test_a_fault_of_the_server_ends_that_call_with_1011_and_the_server_goes_on(models, monkeypatch):
    app = create_app(models, ServeOptions(slots=1))
    server = app.state.server
    with client_of(app) as client:
        real = server.voice
        monkeypatch.setattr(server, "voice", lambda name: (_ for _ in ()).throw(RuntimeError("boom")))
        with client.websocket_connect(WS) as ws:
            ws.send_text(hello())
            assert close_of(ws) == (1011, "server error")
        monkeypatch.setattr(server, "voice", real)
        with client.websocket_connect(WS) as ws:
            ws.send_text(hello())
            assert json.loads(ws.receive_text())["type"] == "ready"


class Lockstep:
    """The engine's clock and sleep for a test: time moves only when the test lets a sleep end (`advance`)."""

    def __init__(self) -> None:
        self.now, self.sleeping = 0.0, None

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeping = asyncio.get_running_loop().create_future()
        try:
            await self.sleeping
        finally:
            self.sleeping = None
        self.now += delay

    def advance(self) -> bool:
        """End the engine's sleep, if it sleeps."""
        if self.sleeping is None or self.sleeping.done():
            return False
        self.sleeping.set_result(None)
        return True


def test_ticks_keep_the_clock_whatever_a_stalled_or_slow_caller_does(models):
    """A good caller, one at 0.9x real time and one that sends one block and stops, on one engine for 4 s of its
    clock, each block sent at its time: no tick ever waits past its due time (the clock ends where the schedule
    says), the good caller's every block is used on its own tick (its output that of its pipeline alone), the
    slow one is concealed with silence and stays, the stalled one loses its slot after STALL_SECONDS with a
    reason."""
    from rtcodec.serve.protocol import ProtocolError

    speaker = torch.randn(256, generator=torch.Generator().manual_seed(3)) * 0.1
    blocks = speech(4.0, 1)

    async def main():
        lock = Lockstep()
        engine = Engine(CallerScheduler(models.encoder, models.decoder, slots=3), 80, lock.clock, lock.sleep)
        runner = asyncio.create_task(engine.run())
        good, slow, stalled = [await engine.join(speaker, "convert") for _ in range(3)]
        for k, block in enumerate(blocks):
            assert engine.put(good, k, torch.from_numpy(block))
            if k % 10:
                assert engine.put(slow, k, torch.zeros(BLOCK))
            if k == 0:
                assert engine.put(stalled, 0, torch.zeros(BLOCK))
            while engine.ticks < k + 1:  # tick k, now or at its due time
                lock.advance()
                await asyncio.sleep(0.001)
        runner.cancel()
        return engine, lock, good, slow, stalled

    engine, lock, good, slow, stalled = asyncio.run(main())
    # The clock moved only by waits for tick k's due time, k * period + JITTER_BLOCKS periods after the first
    # block: a schedule that moved with the ticks (each due 1.5 periods after the last) would end far later.
    assert engine.ticks == len(blocks) and 0 < lock.now <= (len(blocks) - 1 + JITTER_BLOCKS) * engine.period
    outputs = [good.outbox.get_nowait() for _ in range(good.outbox.qsize())]
    assert [consumed for _, consumed, _ in outputs] == list(range(len(blocks))) and good.caller.late_blocks == 0
    got = np.concatenate([audio.numpy() for _, _, audio in outputs])
    want = reference(models.encoder, models.decoder, speaker, [torch.from_numpy(b) for b in blocks], "convert")
    assert got.shape == tuple(want.shape) and np.abs(got - want.numpy()).max() < 1e-5
    assert slow in engine.sessions.values() and slow.caller.late_blocks == (len(blocks) - 1) // 10
    assert stalled not in engine.sessions.values() and engine.evicted == 1
    messages = [stalled.outbox.get_nowait() for _ in range(stalled.outbox.qsize())]
    assert len(messages) == round(STALL_SECONDS / engine.period) + 1  # its outputs up to the stall, then the close
    assert isinstance(messages[-1], ProtocolError) and "less than half of the audio" in messages[-1].reason


def test_a_full_server_refuses_an_upload_before_reading_it(models):
    app = create_app(models, ServeOptions(slots=1))
    with client_of(app) as client, client.websocket_connect(WS) as first:
        first.send_text(hello())
        assert json.loads(first.receive_text())["type"] == "ready"
        with client.websocket_connect(WS) as second:
            second.send_text(hello(voice="upload"))  # and no clip: the refusal comes first
            assert close_of(second) == (1013, "all 1 slot is taken: try again later")


def test_uploads_in_decoding_are_bounded_and_never_hold_back_a_bundled_voice(models, monkeypatch):
    """Two uploads held in decoding: a third is refused (1013), and a caller with a bundled voice gets ready and
    is served meanwhile."""
    import threading

    from rtcodec.serve.app import MAX_UPLOADS

    app = create_app(models, ServeOptions(slots=4))
    server = app.state.server
    release = threading.Event()
    real = server.upload_worker.embed

    async def held(data):
        await asyncio.to_thread(release.wait, 60)
        return await real(data)

    monkeypatch.setattr(server.upload_worker, "embed", held)
    clip = io.BytesIO()
    sf.write(clip, np.concatenate(speech(1.5, 5)), 16000, format="WAV")
    upload = HEADER.pack(VERSION, REFERENCE, 0) + clip.getvalue()
    with client_of(app) as client:
        held_calls = [client.websocket_connect(WS) for _ in range(MAX_UPLOADS)]
        for ws in held_calls:
            ws.__enter__()
            ws.send_text(hello(voice="upload"))
            ws.send_bytes(upload)
        while server.uploads < MAX_UPLOADS:
            time.sleep(0.01)
        with client.websocket_connect(WS) as third:
            third.send_text(hello(voice="upload"))
            third.send_bytes(upload)
            code, reason = close_of(third)
        assert code == 1013 and "too many voice uploads at once" in reason
        with client.websocket_connect(WS) as bundled:
            bundled.send_text(hello())
            assert json.loads(bundled.receive_text())["type"] == "ready"
            blocks = speech(0.2, 3)
            for i, block in enumerate(blocks):
                bundled.send_bytes(audio_message(i, block))
            assert len(receive_until(bundled, len(blocks))) == len(blocks)
        release.set()
        for ws in held_calls:
            assert json.loads(ws.receive_text())["type"] == "ready"
            ws.__exit__(None, None, None)


def test_an_upload_worker_that_dies_is_replaced(models):
    """Killed (say, out of memory): the next upload is refused with 1013 "try again", the one after it is decoded
    by a new worker."""
    import os
    import signal

    app = create_app(models, ServeOptions(slots=1))
    clip = io.BytesIO()
    sf.write(clip, np.concatenate(speech(1.5, 5)), 16000, format="WAV")
    upload = HEADER.pack(VERSION, REFERENCE, 0) + clip.getvalue()
    with client_of(app) as client:
        pool = app.state.server.upload_worker.pool
        for pid in pool._processes:
            os.kill(pid, signal.SIGKILL)
        for _ in range(600):  # the pool notices (its management thread)
            if pool._broken:
                break
            time.sleep(0.05)
        outcomes = []
        for _ in range(2):
            with client.websocket_connect(WS) as ws:
                ws.send_text(hello(voice="upload"))
                ws.send_bytes(upload)
                message = ws.receive()
                outcomes.append(json.loads(message["text"])["type"] if message.get("text") else message.get("code"))
    assert outcomes == [1013, "ready"], outcomes


def test_a_server_that_cannot_keep_up_says_so(models):
    """On a machine whose ticks take 1.5 blocks' time (a fake clock advanced by each tick), a caller sending in
    real time: the clock restarts, the engine says it is overloaded, the caller's added delay grows and is reported
    in its stats; a fast machine is not overloaded."""
    speaker = torch.zeros(256)

    async def main(tick_blocks: float):
        lock, sent = Lockstep(), 0
        scheduler = CallerScheduler(models.encoder, models.decoder, slots=1)

        def send_due() -> None:  # the caller sends block k at k periods
            nonlocal sent
            while sent <= lock.now / engine.period:
                assert engine.put(session, sent, torch.zeros(BLOCK))
                sent += 1

        async def sleep(delay: float) -> None:  # the blocks sent while the engine slept are there when it wakes
            await lock.sleep(delay)
            send_due()

        engine = Engine(scheduler, 80, lock.clock, sleep)
        tick = scheduler.tick

        def timed_tick():
            lock.now += tick_blocks * engine.period
            return tick()

        scheduler.tick = timed_tick
        runner = asyncio.create_task(engine.run())
        session = await engine.join(speaker, "convert")
        while engine.ticks < 40:
            send_due()
            lock.advance()
            await asyncio.sleep(0.001)
        runner.cancel()
        return engine, session

    engine, session = asyncio.run(main(1.5))
    assert engine.restarts >= 1 and engine.overloaded()
    assert session.delay_blocks() >= 10  # 40 ticks took 60 blocks' time: the rest waits
    engine, session = asyncio.run(main(0.5))
    assert engine.restarts == 0 and not engine.overloaded() and session.delay_blocks() <= 1
    assert session.caller.late_blocks == 0


def test_the_overload_rule_looks_at_the_recent_ticks_and_restarts(models):
    lock = Lockstep()
    engine = Engine(CallerScheduler(models.encoder, models.decoder, slots=1), 80, lock.clock, lock.sleep)
    assert not engine.overloaded()  # no tick yet
    session = asyncio.run(engine.join(torch.zeros(256), "convert"))
    engine.put(session, 0, torch.zeros(BLOCK))
    engine.compute_s.extend([0.5 * engine.period] * 1000)
    assert not engine.overloaded()
    engine.compute_s.extend([1.2 * engine.period] * 1000)  # the recent ticks: slower than real time
    assert engine.overloaded()
    engine.compute_s.extend([0.5 * engine.period] * 1000)
    engine.last_restart = lock.now - 1.0
    assert engine.overloaded()
    lock.now += OVERLOAD_SECONDS
    assert not engine.overloaded()


def test_the_block_size_is_the_fewest_hops_that_keep_up():
    """`choose` from measured tick times (a stub here): the first block whose full tick fits 80 % of it."""
    from rtcodec.realtime import HEADROOM
    from rtcodec.serve.sizing import choose

    tick_ms = {1: 20.0, 2: 30.0, 4: 35.0, 8: 50.0}  # one slot, blocks of 12.5, 25, 50, 100 ms
    asked = []

    def measure(slots, hops):
        asked.append((slots, hops))
        return slots * tick_ms[hops] / 1000  # a tick's cost grows with the slots

    sizing = choose(measure)
    # 4 and 2 slots do not fit at 100 ms (200 and 100 ms of compute against 80), 1 does; then the fewest hops.
    assert asked == [(4, 8), (2, 8), (1, 8), (1, 1), (1, 2), (1, 4)] and 35.0 <= HEADROOM * 50
    assert (sizing.slots, sizing.hops_per_tick, sizing.keeps_up) == (1, 4, True)
    assert sizing.describe() == (
        "1 slot per preset, blocks of 4 hops (50.0 ms): a full tick took 35 ms here, 70% of the 50.0 ms of audio it "
        "carries"
    )
    assert (
        choose(measure, slots=(2,), hops=(8,))
        .describe()
        .endswith("this machine cannot serve 2 callers per preset in real time; offer fewer presets, or use a GPU")
    )


def test_latency_auto_offers_the_lowest_preset_that_keeps_up():
    """`choose_preset` from stubbed sizings: the lowest latency first, the first that keeps up; exact (the cheapest)
    where none does."""
    from rtcodec.serve.sizing import AUTO_ORDER, Sizing, choose_preset, describe_preset

    rtf = {"low": 2.4, "balanced": 0.7, "exact": 0.3}  # of a one-slot tick at 4 hops
    asked = []

    def size(preset):
        asked.append(preset)
        return Sizing(1, 4, rtf[preset] * 0.05, rtf[preset] <= 0.8)

    preset, tried = choose_preset(size)
    assert AUTO_ORDER == ("low", "balanced", "exact") and asked == ["low", "balanced"] and preset == "balanced"
    line = describe_preset(preset, tried)
    assert line.startswith("--latency auto: balanced (low does not keep up (240% of real time)); 1 slot per preset")
    rtf.update(balanced=1.5, exact=1.2)
    preset, tried = choose_preset(size)
    assert preset == "exact" and list(tried) == ["low", "balanced", "exact"]
    assert "this machine cannot serve 1 caller per preset in real time" in describe_preset(preset, tried)


def test_the_block_size_is_measured_on_the_models(models):
    from rtcodec.serve.sizing import CANDIDATE_HOPS

    app = create_app(models, ServeOptions(slots=2, hops_per_tick=None))
    sizing = app.state.server.sizing
    assert sizing.slots == 2 and sizing.hops_per_tick in CANDIDATE_HOPS and sizing.tick_seconds > 0
    assert app.state.server.info()["block"] == 200 * sizing.hops_per_tick
    assert app.state.server.engines["exact"].scheduler.slots == 2


def test_latency_auto_serves_one_preset_measured_on_the_models(models):
    server = create_app(models, ServeOptions(slots=1, hops_per_tick=8, latencies=("auto",))).state.server
    (preset,) = server.engines  # one batch, of the preset chosen
    assert preset in LATENCY_PRESETS and server.options.latencies == (preset,)
    assert server.info()["latencies"] == [preset]
    assert server.sizing.slots == 1 and server.sizing.hops_per_tick == 8
    assert server.sizing_line.startswith(f"--latency auto: {preset}")
