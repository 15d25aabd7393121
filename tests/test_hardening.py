"""Safe outputs, bounded memory and checked inputs: each case is something that once went wrong."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch

from rtcodec import FACodecDecoder, FACodecEncoder, audio, streaming
from rtcodec.bitstream import Bitstream, BitstreamError
from rtcodec.checkpoint import CheckpointError
from rtcodec.pipelines import CodecReceiver

from .conftest import GOLDEN, golden_kwargs, golden_model, needs_golden, rel_err


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_get_the_umask_and_overwrites_keep_their_mode(tmp_path):
    old = os.umask(0o027)
    try:
        audio.write(tmp_path / "new.wav", torch.zeros(1, 1, 100))
        assert _mode(tmp_path / "new.wav") == 0o640  # mkstemp alone gave 0600 whatever the umask
        kept = tmp_path / "kept.wav"
        kept.write_bytes(b"")
        os.chmod(kept, 0o604)
        audio.write(kept, torch.zeros(1, 1, 100))
        assert _mode(kept) == 0o604 and sf.info(kept).frames == 100
        with audio.AudioWriter(tmp_path / "streamed.wav") as writer:
            writer.write(torch.zeros(1, 1, 50))
        assert _mode(tmp_path / "streamed.wav") == 0o640
    finally:
        os.umask(old)


def test_a_streamed_output_keeps_what_was_written_whatever_stops_it(tmp_path):
    out = tmp_path / "partial.wav"
    with pytest.raises(KeyboardInterrupt), audio.AudioWriter(out) as writer:
        writer.write(torch.full((1, 1, 300), 0.25))
        writer.write(torch.full((1, 1, 100), -0.25))
        raise KeyboardInterrupt
    data, rate = sf.read(out)
    assert rate == 16000 and data.shape == (400,) and abs(data[0] - 0.25) < 1e-3 and abs(data[-1] + 0.25) < 1e-3
    with audio.AudioWriter(tmp_path / "nothing.wav"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partial.wav"]  # nothing written, no file, no temp


def test_a_full_disk_is_one_clear_error_and_leaves_no_file(tmp_path):
    # RLIMIT_FSIZE makes writes past 10 kB fail with EFBIG, as a full disk fails them with ENOSPC.
    script = f"""
import resource, signal, torch
from rtcodec import audio
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))
def streamed(path):
    with audio.AudioWriter(path) as writer:
        writer.write(torch.zeros(1, 1, 16000))
for write in (lambda path: audio.write(path, torch.zeros(1, 1, 16000)), streamed):
    try:
        write({str(tmp_path / "big.wav")!r})
    except audio.AudioError as err:
        print(err)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 2, done.stderr
    assert all(line.startswith(f"cannot write {tmp_path / 'big.wav'}") for line in lines), lines
    assert "Traceback" not in done.stderr and list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_a_read_only_folder_is_one_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("this user writes into read-only folders (root without CAP_DAC_OVERRIDE dropped)")
        with pytest.raises(audio.AudioError, match="cannot write .*Permission denied"):
            audio.write(folder / "o.wav", torch.zeros(1, 1, 10))
    finally:
        folder.chmod(0o700)


def test_outputs_that_cannot_be_written_are_refused_before_the_work(tmp_path):
    with pytest.raises(audio.AudioError, match="unknown audio format XYZ"):
        audio.check_output(tmp_path / "x.xyz")
    audio.check_output(tmp_path / "x.mp3")  # written as MPEG layer III (16-bit PCM once made it fail at the end)
    audio.write(tmp_path / "x.mp3", torch.zeros(1, 1, 16000))
    assert sf.info(tmp_path / "x.mp3").format == "MP3"
    with pytest.raises(audio.AudioError, match="does not exist"):
        audio.check_output(tmp_path / "missing" / "x.wav")
    with pytest.raises(audio.AudioError, match="is a folder"):
        audio.check_output(tmp_path, audio=False)


@pytest.mark.parametrize("rate", [1, 3999, 1_000_000])
def test_an_absurd_sample_rate_is_refused(tmp_path, rate):
    path = tmp_path / "odd.wav"
    sf.write(path, np.zeros(100, np.float32), rate)
    with pytest.raises(audio.AudioError, match=f"sample rate is {rate} Hz"):
        audio.read(path)


def test_a_huge_fac_file_is_refused_without_reading_it(tmp_path):
    good = Bitstream(torch.zeros(6, 10, dtype=torch.long), torch.zeros(256)).to_bytes()
    huge = tmp_path / "huge.fac"
    with huge.open("wb") as file:
        file.write(good)
        file.truncate(2 << 30)  # 2 GB, sparse: nothing on disk
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError, match="too long: 2147483648 bytes"):
            Bitstream.load(huge)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20  # the peak: the file was never read whole
    finally:
        tracemalloc.stop()
    short = tmp_path / "short.fac"
    short.write_bytes(good[:-3])
    with pytest.raises(BitstreamError, match="truncated"):
        Bitstream.load(short)


@needs_golden
def test_a_long_push_runs_in_bounded_ticks(vectors):
    """Memory stays flat whatever the push size: no tick of the engine is longer than MAX_TICK_HOPS."""
    encoder = golden_model("encoder")
    wav = vectors["wav_a"].repeat(1, 1, 3)[..., : 200 * 2 * streaming.MAX_TICK_HOPS + 333]
    with torch.no_grad():
        offline = encoder(wav)
    stream = encoder.stream()
    ticks = []
    step = stream.op.step
    stream.op.step = lambda x, clock: ticks.append(x.shape[2]) or step(x, clock)
    got = torch.cat([stream.push(wav), stream.flush()], dim=2)
    assert got.shape == offline.shape and rel_err(got, offline) < 1e-5
    assert max(ticks) <= 200 * streaming.MAX_TICK_HOPS and len(ticks) >= 3


def _small_encoder_state() -> dict:
    return dict(FACodecEncoder(ngf=4, out_channels=16).state_dict())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.to_sparse(), "block.0.weight is a torch.sparse_coo tensor"),
        (lambda t: torch.empty_like(t, device="meta"), "block.0.weight is a meta tensor"),
        (lambda t: t.long(), "block.0.weight is torch.int64"),
        (lambda t: t.clone().fill_(float("nan")), "block.0.weight holds NaN or infinite values"),
        (lambda t: t.clone().fill_(float("inf")), "block.0.weight holds NaN or infinite values"),
    ],
)
def test_bad_checkpoint_tensors_name_their_key(change, message):
    state = _small_encoder_state()
    state["block.0.weight"] = change(state["block.0.weight"])
    with pytest.raises(CheckpointError, match=message):
        FACodecEncoder(ngf=4, out_channels=16).load_state_dict(state)


def test_a_zero_weight_norm_direction_is_named():
    state = _small_encoder_state()
    weight = state.pop("block.0.weight")
    state["block.0.weight_g"], state["block.0.weight_v"] = torch.ones(weight.shape[0], 1, 1), torch.zeros_like(weight)
    with pytest.raises(CheckpointError, match="block.0.weight holds NaN"):
        FACodecEncoder(ngf=4, out_channels=16).load_state_dict(state)


@needs_golden
def test_a_file_with_keys_missing_is_called_damaged_not_another_config():
    state = torch.load(GOLDEN / "decoder.pt")
    del state["model.0.bias"]
    with pytest.raises(CheckpointError) as err:
        FACodecDecoder(**golden_kwargs("decoder")).load_state_dict(state)
    assert "damaged or incomplete" in str(err.value) and "other constructor arguments" not in str(err.value)


@needs_golden
def test_uint8_codes_are_codes(vectors):
    decoder = golden_model("decoder")
    codes = torch.randint(0, 256, (6, 1, 12))
    spk = torch.randn(1, 256)
    wide = CodecReceiver(decoder, spk)
    narrow = CodecReceiver(decoder, spk)
    expected = torch.cat([wide.push(codes), wide.flush()], dim=2)
    got = torch.cat([narrow.push(codes.to(torch.uint8)), narrow.flush()], dim=2)
    assert torch.equal(got, expected)  # refused as out of range before: 1024 compared as uint8 is 0


@pytest.mark.parametrize("batch_size", [1.5, True, "2", 0])
def test_a_batch_size_that_is_not_a_count_is_refused(batch_size):
    with pytest.raises(ValueError, match="batch_size must be an integer of at least 1"):
        FACodecEncoder(ngf=4, out_channels=16).stream(batch_size=batch_size)
