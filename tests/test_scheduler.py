"""Callers joining and leaving one batched stream: each one's output is its own single-caller pipeline's."""

from __future__ import annotations

import random

import pytest
import torch

from rtcodec.scheduler import CallerScheduler, SlotsFullError

from .conftest import golden_model, needs_golden, rel_err

BLOCK = 200


def reference(encoder, decoder, speaker, blocks, mode):
    """The caller alone: its blocks through one encoder stream and one decoder stream."""
    enc, dec = encoder.stream(), decoder.stream(speaker[None])
    outs = []
    with torch.inference_mode():
        for block in blocks:
            codes = decoder.quantize(enc.push(block.view(1, 1, -1)))
            emb = decoder.vq2emb(codes, mode == "codec") if codes.shape[2] else torch.zeros(1, 256, 0)
            outs.append(dec.push(emb))
    return torch.cat(outs, dim=2)[0, 0]


@needs_golden
@pytest.mark.parametrize("hops", [1, 3])
def test_callers_join_and_leave_at_random_ticks_and_each_gets_its_own_output(vectors, hops):
    """Six callers over three rows (rows reused), both modes, one caller late at some ticks; with 3 hops per tick a
    caller's first frame comes out mid-tick."""
    encoder, decoder = golden_model("encoder"), golden_model("decoder")
    wav = torch.cat([vectors["wav_a"], vectors["wav_b"]], dim=2)[0, 0]
    rng = random.Random(7)
    scheduler = CallerScheduler(encoder, decoder, slots=3, hops_per_tick=hops)
    block = BLOCK * hops
    plans = []  # (join tick, number of blocks, offset into the speech, mode, speaker, late ticks)
    for i in range(6):
        n = rng.randrange(70, 110) // hops  # the pipeline waits 55 hops for its first output
        plans.append((rng.randrange(0, 60), n, rng.randrange(0, wav.shape[0] - block * n), ("convert", "codec")[i % 2]))
    late_caller = 2  # misbehaves: its blocks skip some ticks (concealed with silence), and it sends a burst
    active, done, waiting = {}, {}, sorted(range(len(plans)), key=lambda i: plans[i][0])
    tick = 0
    while waiting or active:
        while waiting and plans[waiting[0]][0] // hops <= tick and scheduler.free_slots:
            i = waiting.pop(0)
            speaker = 0.1 * torch.randn(256, generator=torch.Generator().manual_seed(i))
            active[i] = {"caller": scheduler.join(speaker, plans[i][3]), "sent": 0, "out": [], "speaker": speaker}
        for i, state in active.items():
            _, n, offset, _ = plans[i]
            if i == late_caller and tick % 9 == 4:
                continue  # nothing this tick
            if state["sent"] < n:
                start = offset + block * state["sent"]
                scheduler.put(state["caller"], wav[start : start + block])
                state["sent"] += 1
        for caller, out in scheduler.tick().items():
            for state in active.values():
                if state["caller"] is caller:
                    state["out"].append(out)
        for i in [i for i, s in active.items() if s["caller"].blocks == plans[i][1]]:
            state = active.pop(i)
            scheduler.leave(state["caller"])
            done[i] = state
        tick += 1
        if not active and waiting:  # nobody in the call: jump to the next join
            tick = max(tick, plans[waiting[0]][0] // hops)
    assert len(done) == len(plans)
    for i, state in done.items():
        _, n, offset, mode = plans[i]
        got = torch.cat(state["out"])
        blocks = [wav[offset + block * j : offset + block * (j + 1)] for j in range(n)]
        if i == late_caller:
            assert state["caller"].late_blocks > 0
            continue
        expected = reference(encoder, decoder, state["speaker"], blocks, mode)
        assert state["caller"].late_blocks == 0
        assert got.shape == expected.shape and got.numel() > 0, i
        assert rel_err(got, expected) < 1e-5, i


@needs_golden
def test_a_full_scheduler_refuses_and_a_freed_row_is_reused():
    scheduler = CallerScheduler(golden_model("encoder"), golden_model("decoder"), slots=2)
    a, b = scheduler.join(torch.zeros(256)), scheduler.join(torch.zeros(256), "codec")
    with pytest.raises(SlotsFullError, match="all 2 slots are taken"):
        scheduler.join(torch.zeros(256))
    scheduler.leave(a)
    assert scheduler.join(torch.ones(256)).row == a.row and scheduler.free_slots == 0
    with pytest.raises(ValueError, match="mode must be one of"):
        scheduler.leave(b) or scheduler.join(torch.zeros(256), "karaoke")
    with pytest.raises(ValueError, match="a block is 200 samples"):
        scheduler.put(scheduler.callers[a.row], torch.zeros(100))
    with pytest.raises(ValueError, match="256 finite values"):
        scheduler.join(torch.full((256,), float("nan")))


@needs_golden
def test_a_caller_sending_too_fast_is_bounded():
    scheduler = CallerScheduler(golden_model("encoder"), golden_model("decoder"), slots=1, max_queued_blocks=5)
    caller = scheduler.join(torch.zeros(256))
    for _ in range(12):
        scheduler.put(caller, torch.zeros(BLOCK))
    assert len(caller.inbox) == 5 and caller.dropped_blocks == 7
