"""The rtcodec command end to end, with full-size random weights in the published layout."""

from __future__ import annotations

import os
import random
import re
import signal
import struct
import subprocess
import sys
import threading
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import rtcodec
from rtcodec import audio
from rtcodec.bitstream import Bitstream, BitstreamError, pack_frames, pack_speaker
from rtcodec.cli import main, net, parser
from rtcodec.hub import from_pretrained
from rtcodec.pipelines import CodecReceiver, CodecSender, VoiceConversion, speaker_embedding

from .conftest import AUDIO, needs_audio, rel_err
from .helpers import write_checkpoint_dir

pytestmark = needs_audio


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """`rtcodec live` and `serve` set torch's threads for the process: give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    names = ("encoder", "decoder", "encoder_v2", "decoder_v2", "redecoder")
    return write_checkpoint_dir(tmp_path_factory.mktemp("ckpt"), names=names)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """1 s of each speech clip, and a 44.1 kHz stereo version of one."""
    folder = tmp_path_factory.mktemp("clips")
    out = {}
    for name in ("slt", "rms"):
        data, rate = sf.read(AUDIO / f"{name}.wav", dtype="float32")
        out[name] = folder / f"{name}.wav"
        sf.write(out[name], data[rate // 2 : 3 * rate // 2], rate)
    data, _ = sf.read(out["slt"], dtype="float32")
    stereo = np.stack([data, 0.5 * data], axis=1)
    out["stereo44k"] = folder / "stereo44k.flac"
    import soxr

    sf.write(out["stereo44k"], soxr.resample(stereo, 16000, 44100), 44100)
    return out


def run(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_encode_decode_round_trip_matches_reconstruct(ckpt, clips, tmp_path, capsys):
    fac, wav_out, recon = tmp_path / "a.fac", tmp_path / "a.wav", tmp_path / "r.wav"
    assert run(capsys, "encode", clips["slt"], fac, "--checkpoint-dir", ckpt)[0] == 0
    frames = Bitstream.load(fac).frames
    assert frames == 80
    assert fac.stat().st_size == 20 + 512 + (60 * frames + 7) // 8 + 4  # header, fp16 speaker, codes, CRC
    assert run(capsys, "decode", fac, wav_out, "--checkpoint-dir", ckpt)[0] == 0
    assert run(capsys, "reconstruct", clips["slt"], recon, "--checkpoint-dir", ckpt)[0] == 0
    decoded, rate = sf.read(wav_out, dtype="float32")
    assert rate == 16000 and decoded.shape == (frames * 200,)
    assert np.array_equal(decoded, sf.read(recon, dtype="float32")[0])
    # ... and the library's offline reconstruction, with the speaker embedding rounded as the file stores it.
    models = from_pretrained("v1", checkpoint_dir=ckpt)
    with torch.no_grad():
        emb, codes, _, _, spk = models.decoder(models.encoder(audio.read(clips["slt"])))
        assert torch.equal(codes[:, 0], Bitstream.load(fac).codes)
        expected = models.decoder.inference(emb, spk.half().float())[0, 0].clamp(-1, 1)
    assert rel_err(torch.from_numpy(decoded), expected) < 1e-4  # 16-bit PCM rounding


def test_any_rate_and_channel_count_is_accepted(ckpt, clips, tmp_path, capsys):
    code, err = run(capsys, "encode", clips["stereo44k"], tmp_path / "s.fac", "--checkpoint-dir", ckpt, "--model", "v2")
    assert code == 0
    assert "mixing 2 channels to mono" in err and "resampling 44100 Hz to 16000 Hz" in err
    bits = Bitstream.load(tmp_path / "s.fac")
    assert bits.model_version == 2 and bits.frames == 80
    assert run(capsys, "decode", tmp_path / "s.fac", tmp_path / "s.ogg", "--checkpoint-dir", ckpt)[0] == 0
    assert sf.info(tmp_path / "s.ogg").samplerate == 16000


@pytest.mark.parametrize("model", ["v1", "v2", "redecoder"])
def test_convert(ckpt, clips, tmp_path, capsys, model):
    out = tmp_path / "c.wav"
    args = ["convert", clips["slt"], clips["rms"], out, "--model", model, "--checkpoint-dir", ckpt]
    assert run(capsys, *args)[0] == 0
    converted = sf.read(out, dtype="float32")[0]
    assert converted.shape == (16000,) and np.isfinite(converted).all() and np.abs(converted).max() > 0


def test_a_long_clip_is_told_why_the_speaker_embedding_waits(ckpt, clips, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("rtcodec.cli.common.LONG_CLIP_SECONDS", 0.5)  # 1 s clips stand in for long ones
    code, err = run(capsys, "encode", clips["rms"], tmp_path / "o.fac", "--checkpoint-dir", ckpt)
    assert code == 0 and "the speaker embedding attends over all 0.0 min of the clip at once" in err


def test_bad_input_is_one_line_and_no_file(ckpt, clips, tmp_path, capsys):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio at all")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(4000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    short, silent = tmp_path / "short.wav", tmp_path / "silent.wav"
    sf.write(short, sf.read(clips["slt"], dtype="float32")[0][:1600], 16000)
    sf.write(silent, np.full(32000, 1e-5, dtype=np.float32), 16000, subtype="FLOAT")
    good = tmp_path / "good.fac"
    assert run(capsys, "encode", clips["rms"], good, "--checkpoint-dir", ckpt)[0] == 0
    truncated = tmp_path / "truncated.fac"
    truncated.write_bytes(good.read_bytes()[:-10])
    cases = [
        (["encode", tmp_path / "missing.wav", tmp_path / "o.fac"], "no such file"),
        (["encode", not_audio, tmp_path / "o.fac"], "not an audio file"),
        (["encode", empty, tmp_path / "o.fac"], "holds no samples"),
        (["encode", nan, tmp_path / "o.fac"], "NaN or infinite"),
        (["decode", truncated, tmp_path / "o.wav"], "truncated"),
        (["decode", clips["rms"], tmp_path / "o.wav"], "not a .fac file"),
        (["encode", clips["rms"], tmp_path / "o.fac", "--checkpoint-dir", tmp_path], "not found"),
        (["convert", clips["rms"], short, tmp_path / "o.wav"], "short.wav is 0.10 s long: a reference needs 1 s"),
        (["convert", clips["rms"], silent, tmp_path / "o.wav"], "silent.wav is silent (RMS 1.0e-05)"),
        (["live", "--reference", silent], "silent.wav is silent"),
    ]
    for args, message in cases:
        if "--checkpoint-dir" not in args:
            args = [*args, "--checkpoint-dir", ckpt]
        code, err = run(capsys, *args)
        assert code == 1, args
        assert err.startswith("rtcodec: error: ") and message in err and err.count("\n") == 1, err
        assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["notes.wav", "empty.wav", "nan.wav", "short.wav", "silent.wav", "good.fac", "truncated.fac"]
    )


def test_wrong_checkpoint_is_named(ckpt, clips, tmp_path, capsys):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "ns3_facodec_encoder.bin").symlink_to(ckpt / "ns3_facodec_decoder.bin")
    (wrong / "ns3_facodec_decoder.bin").symlink_to(ckpt / "ns3_facodec_decoder.bin")
    code, err = run(capsys, "encode", clips["rms"], tmp_path / "o.fac", "--checkpoint-dir", wrong)
    assert code == 1 and "ns3_facodec_encoder.bin" in err and "FACodecDecoder" in err
    assert not (tmp_path / "o.fac").exists()


def test_every_single_byte_change_of_a_fac_file_is_detected():
    gen = torch.Generator().manual_seed(0)
    bits = Bitstream(torch.randint(0, 1024, (6, 13), generator=gen), torch.randn(256, generator=gen))
    data = bits.to_bytes()
    back = Bitstream.from_bytes(data)
    assert torch.equal(back.codes, bits.codes) and torch.equal(back.speaker, bits.speaker.half().float())
    for i in range(len(data)):
        for delta in (1, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[i] = (damaged[i] + delta) % 256
            with pytest.raises(BitstreamError):
                Bitstream.from_bytes(bytes(damaged))
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            Bitstream.from_bytes(data[:cut])
    future = bytearray(data[:-4])
    future[4] = 3
    future += zlib.crc32(bytes(future)).to_bytes(4, "big")
    with pytest.raises(BitstreamError, match="format version 3"):
        Bitstream.from_bytes(bytes(future))


def test_format_version_1_files_still_read():
    codes = torch.randint(0, 1024, (6, 5))
    # Version 1: the same fields without the sample count; the audio is the frames' whole length.
    body = struct.pack(">4sBBIIBB", b"RTFC", 1, 2, 16000, 5, 6, 10) + pack_speaker(torch.ones(256)) + pack_frames(codes)
    bits = Bitstream.from_bytes(body + zlib.crc32(body).to_bytes(4, "big"))
    assert torch.equal(bits.codes, codes) and bits.model_version == 2 and bits.samples == 1000
    with pytest.raises(BitstreamError, match="do not fit"):
        Bitstream(codes, torch.ones(256), samples=800)


def test_outputs_are_as_long_as_inputs(ckpt, clips, tmp_path, capsys):
    """A clip that ends mid-frame: its last partial frame is coded, and every output is cut to its length."""
    odd = tmp_path / "odd.wav"
    data, rate = sf.read(AUDIO / "slt.wav", dtype="float32")
    sf.write(odd, data[:16077], rate)
    fac, decoded = tmp_path / "odd.fac", tmp_path / "decoded.wav"
    assert run(capsys, "encode", odd, fac, "--checkpoint-dir", ckpt)[0] == 0
    assert Bitstream.load(fac).frames == 81 and Bitstream.load(fac).samples == 16077
    for args, out in [
        (["decode", fac, decoded], decoded),
        (["reconstruct", odd, tmp_path / "r.wav"], tmp_path / "r.wav"),
        (["convert", odd, clips["rms"], tmp_path / "c.wav", "--model", "v1"], tmp_path / "c.wav"),
    ]:
        code, err = run(capsys, *args, "--checkpoint-dir", ckpt)
        assert code == 0, err
        assert sf.info(out).frames == 16077
    code = main(["reconstruct", str(odd), str(tmp_path / "r2.wav"), "--checkpoint-dir", str(ckpt)])
    assert code == 0 and f"wrote {tmp_path / 'r2.wav'}: 1.00 s of audio" in capsys.readouterr().out


def test_a_clip_too_short_is_named(ckpt, tmp_path, capsys):
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(100, np.float32), 16000)
    code, err = run(capsys, "encode", short, tmp_path / "o.fac", "--model", "v2", "--checkpoint-dir", ckpt)
    assert code == 1 and f"rtcodec: error: {short}: " in err and "too short" in err
    assert run(capsys, "encode", short, tmp_path / "o.fac", "--checkpoint-dir", ckpt)[0] == 0  # V1: one frame


def test_version():
    out = subprocess.run([sys.executable, "-m", "rtcodec", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"rtcodec {rtcodec.__version__}" and rtcodec.__version__[0].isdigit()


def test_the_first_run_offline_fails_at_once_saying_what_to_do(clips, tmp_path):
    """No weights in the cache and no hub to reach (a closed port here): no retries, the flag to use, the files."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)
    for args in (["reconstruct", str(clips["rms"]), str(tmp_path / "o.wav")], ["download"]):
        done = subprocess.run([sys.executable, "-m", "rtcodec", *args], capture_output=True, text=True, env=env)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert "Retrying" not in done.stderr and "--checkpoint-dir DIR" in done.stderr
        assert "ns3_facodec_encoder.bin, ns3_facodec_decoder.bin" in done.stderr
    missing = ["reconstruct", str(tmp_path / "missing.wav"), str(tmp_path / "o.wav")]
    done = subprocess.run([sys.executable, "-m", "rtcodec", *missing], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "missing.wav: no such file" in done.stderr  # the input first, then the models


def test_python_dash_m_shows_help():
    out = subprocess.run([sys.executable, "-m", "rtcodec", "--help"], capture_output=True, text=True, check=True)
    for command in ("download", "encode", "decode", "reconstruct", "convert", "live", "send", "receive"):
        assert command in out.stdout


def test_download_offline_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run(capsys, "download", "--version", "v1", "--cache-dir", tmp_path)
    assert code == 1 and "HF_HUB_OFFLINE is set" in err and "--checkpoint-dir DIR" in err and "Traceback" not in err


def test_download_reads_the_hub_cache_and_copies(ckpt, tmp_path, capsys, monkeypatch):
    from rtcodec.hub import REPO_ID

    snapshot = tmp_path / "hub" / ("models--" + REPO_ID.replace("/", "--")) / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in ("ns3_facodec_encoder_v2.bin", "ns3_facodec_decoder_v2.bin"):
        (snapshot / name).symlink_to(ckpt / name)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(
        ["download", "--version", "v2", "--cache-dir", str(tmp_path / "hub"), "--checkpoint-dir", str(tmp_path / "c")]
    )
    assert code == 0
    assert (tmp_path / "c" / "ns3_facodec_decoder_v2.bin").read_bytes() == (
        ckpt / "ns3_facodec_decoder_v2.bin"
    ).read_bytes()


class FakeSoundDevice:
    """Stands in for sounddevice: a Stream that feeds a file through the callback block by block.

    `in_step`: each callback waits until the worker has converted every block before (the worker keeps up, and the
    output is deterministic); otherwise callbacks come every `interval` seconds whatever the worker does."""

    class PortAudioError(Exception):
        pass

    def __init__(self, source: np.ndarray, devices=("0 Fake microphone", "1 Fake speakers"), in_step=True) -> None:
        self.source, self.played, self.devices, self.in_step, self.interval = source, [], list(devices), in_step, 0.02

    def query_devices(self):
        return self.devices

    def check_input_settings(self, **settings):
        if not self.devices:
            raise self.PortAudioError("Error querying device -1")

    check_output_settings = check_input_settings

    def Stream(self, samplerate, blocksize, channels, dtype, device, callback, latency):  # noqa: N802 (sounddevice's)
        fake = self
        fake.latency_asked = latency
        converter = callback.__self__

        class Stream:
            latency = (0.02, 0.03)  # what the devices gave: input, output

            def __enter__(self):
                for i in range(0, len(fake.source) - blocksize + 1, blocksize):
                    if fake.in_step:
                        converter.wait_idle()
                    else:  # not time.sleep: the tests make that raise KeyboardInterrupt
                        threading.Event().wait(fake.interval)
                    out = np.zeros((blocksize, 1), np.float32)
                    callback(fake.source[i : i + blocksize, None], out, blocksize, None, None)
                    fake.played.append(out[:, 0].copy())
                return self

            def __exit__(self, *exc):
                return False

        return Stream()


def _interrupt_the_status_loop(monkeypatch) -> None:
    def interrupt(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr("rtcodec.cli.live.time.sleep", interrupt)


@pytest.mark.parametrize(
    "flags", [["--save-input"], ["--backend", "compile"], ["--pipelined"], ["--precision", "bf16"]]
)
def test_live_converts_what_the_microphone_gives(ckpt, clips, capsys, monkeypatch, tmp_path, flags):
    source = sf.read(clips["slt"], dtype="float32")[0]
    fake = FakeSoundDevice(source)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    compiled = []  # with --backend compile, each stream goes to torch.compile (here a pass-through: no compiling)
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: compiled.append(fn) or fn)
    threads = []  # live leaves a core free by default (here recorded, not set: the other tests keep theirs)
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    _interrupt_the_status_loop(monkeypatch)
    compile, pipelined = "compile" in flags, "--pipelined" in flags
    saved = tmp_path / "microphone.wav"
    flags = [*flags, saved] if "--save-input" in flags else flags
    code, err = run(
        capsys, "live", "--reference", clips["rms"], "--checkpoint-dir", ckpt, "--latency", "exact", "--hops-per-block",
        2, *flags,
    )  # fmt: skip
    assert code == 0 and "stopped after 1.0 s, 0 xruns, 0 dropped blocks" in err and "warmed up in" in err
    assert fake.latency_asked == "high"  # the whole latency: lookahead, block and the devices' buffers
    # 683 ms of lookahead, a 25 ms block (two where pipelined: the encoder works a block ahead), 50 ms of devices
    latency = 783 if pipelined else 758
    assert (
        f"audio devices: 20 ms in + 30 ms out of buffering (--device-latency high); latency in all {latency} ms" in err
    )
    assert len(compiled) == (2 if compile else 0) and ("compiling the hop step" in err) == compile
    assert threads[0] == max(1, (os.cpu_count() or 2) - 1) and len(threads) == 1 + pipelined  # and the encoder's
    played = np.concatenate(fake.played)
    # The same blocks through the library's pipeline: what came out is that, after silence, block-aligned.
    models = from_pretrained("v1", checkpoint_dir=ckpt)
    pipeline = VoiceConversion(models.encoder, models.decoder, audio.read(clips["rms"]), pipelined=pipelined)
    wav = torch.from_numpy(source).view(1, 1, -1)
    expected = torch.cat([pipeline.push(wav[..., i : i + 400]) for i in range(0, 16000, 400)], 2)[0, 0].numpy()
    start = np.flatnonzero(played)[0]
    assert start >= 400 and start % 400 == 0
    played, expected = played[start:], expected[: len(played) - start]
    if "bf16" in flags:  # the synthesis in bf16: fp32's output within its rounding
        assert rel_err(torch.from_numpy(played), torch.from_numpy(expected)) < 0.1
    else:
        assert np.abs(played - expected).max() < 1e-5
    if saved in flags:  # every block the microphone gave, as it gave it
        assert np.array_equal(sf.read(saved, dtype="float32")[0], source[:16000])
        assert f"wrote {saved}: 1.0 s of the microphone" in err
    else:
        assert not saved.exists()
    assert run(capsys, "live", "--list-devices")[0] == 0
    code, err = run(capsys, "live", "--checkpoint-dir", ckpt)
    assert code == 1 and "--reference" in err


def test_live_drops_what_falls_behind_so_the_delay_stays_bounded():
    """A worker that stalls and then catches up: the oldest microphone blocks are dropped (not the newest), and the
    converted audio it then delivers in a burst is cut back to a block, so the delay returns to what the status
    line says instead of keeping the stall's length."""
    from rtcodec.cli.live import LiveConverter

    class Stalling:
        pipelined, release = False, threading.Event()

        def push(self, block):
            self.release.wait(30)
            return block * 0.5

    block = 1600  # 100 ms blocks: two may wait for the worker (0.2 s)
    converter = LiveConverter(Stalling(), block)
    converter.start()
    mic = np.arange(8 * block, dtype=np.float32)[:, None] / (8 * block)
    out = np.zeros((block, 1), np.float32)

    def device(n: int) -> None:  # the device hands over block n and takes a block to play
        converter.callback(mic[n * block : (n + 1) * block], out, block, None, None)

    device(0)
    while converter.inbox.qsize():  # until the worker holds it (and stalls on it)
        threading.Event().wait(0.01)
    for n in (1, 2, 3):
        device(n)
    assert converter.dropped == 1 and converter.inbox.qsize() == 2  # block 1 went; 2 and 3 wait
    assert converter.queued_ms == 200 and "queued 200 ms" in converter.status_line(683.0)  # beyond what it states
    Stalling.release.set()
    converter.wait_idle()
    assert converter.playback.samples.size == 3 * block and not converter.playback.started  # blocks 0, 2, 3
    assert converter.queued_ms == 200  # two blocks beyond the one held, to play
    device(4)  # playback starts with block 0; block 4 is converted: 2, 3 and 4 would wait to play
    converter.wait_idle()
    assert np.array_equal(out[:, 0], 0.5 * mic[:block, 0])
    assert converter.dropped == 3 and np.array_equal(converter.playback.samples, 0.5 * mic[4 * block : 5 * block, 0])
    converter.stop()


def test_live_stops_on_sigint_also_where_it_came_in_ignored(ckpt, clips, capsys, monkeypatch):
    """A shell script's background job starts with SIGINT ignored; `kill -INT` still ends the session cleanly."""
    monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice(sf.read(clips["slt"], dtype="float32")[0]))
    monkeypatch.setattr(VoiceConversion, "warm_up", lambda self, n: None)
    sleeps = []

    def signal_once(_seconds):
        sleeps.append(_seconds)
        assert len(sleeps) < 3, "SIGINT did not stop live"
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr("rtcodec.cli.live.time.sleep", signal_once)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code, err = run(capsys, "live", "--reference", clips["rms"], "--checkpoint-dir", ckpt, "--latency", "exact")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 0 and "stopped after" in err and len(sleeps) == 1, err
    assert signal.getsignal(signal.SIGINT) is previous  # given back


def test_live_counts_the_xruns_of_a_computer_too_slow(ckpt, clips, capsys, monkeypatch):
    """A conversion slower than real time: the callback plays gaps and drops input, and says so (the worker
    thread once ran inside the callback, where a late block was never counted)."""
    source = sf.read(clips["slt"], dtype="float32")[0]
    fake = FakeSoundDevice(source, in_step=False)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    _interrupt_the_status_loop(monkeypatch)

    def slow_push(self, block):  # 100 ms per 25 ms block, whatever the machine
        threading.Event().wait(0.1)
        return torch.full((1, 1, block.shape[2]), 0.1)

    monkeypatch.setattr(VoiceConversion, "push", slow_push)
    monkeypatch.setattr(VoiceConversion, "warm_up", lambda self, n: None)
    args = ["--reference", clips["rms"], "--checkpoint-dir", ckpt, "--latency", "exact", "--hops-per-block", 2]
    code, err = run(capsys, "live", *args)
    assert code == 0, err
    xruns, dropped = (int(x) for x in re.search(r"(\d+) xruns, (\d+) dropped blocks", err).groups())
    assert xruns > 0 and dropped > 0, err
    played = np.concatenate(fake.played)
    assert 0 < np.count_nonzero(played) < played.size  # gaps of silence between the converted blocks


def test_live_latency_auto_takes_the_lowest_preset_that_keeps_up(ckpt, clips, capsys, monkeypatch):
    """The default, `--latency auto`, times each preset's blocks (a stub here: the choice, not the machine, is
    tested) and converts with the lowest-latency preset whose block takes at most 80% of its audio."""
    from rtcodec import realtime

    block_ms = {("low", 8): 120.0, ("balanced", 8): 70.0, ("balanced", 1): 15.0, ("balanced", 2): 19.0}
    block_ms |= {("low, pipelined", 8): 70.0, ("low, pipelined", 1): 40.0, ("low, pipelined", 2): 30.0}
    block_ms |= {("low, pipelined", 4): 38.0}
    asked = []

    def block_seconds(encoder, decoder, reference, setting, hops, backend):
        asked.append((str(setting), hops))
        return block_ms[str(setting), hops] / 1000

    monkeypatch.setattr(realtime, "block_seconds", block_seconds)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # one core: nothing to pipeline on
    fake = FakeSoundDevice(sf.read(clips["slt"], dtype="float32")[0])
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    _interrupt_the_status_loop(monkeypatch)
    code, err = run(capsys, "live", "--reference", clips["rms"], "--checkpoint-dir", ckpt)
    assert code == 0, err
    # low does not fit at 100 ms blocks (120 ms of compute), balanced does: then its fewest hops that fit
    # (12.5 ms blocks take 15 ms, 25 ms blocks 19 ms, within 20).
    assert asked == [("low", 8), ("balanced", 8), ("balanced", 1), ("balanced", 2)]
    assert (
        "--latency auto: balanced at 2 hops per block (25.0 ms): a block took 19 ms here (RTF 0.76); low did not keep "
        "up with 80% headroom" in err
    )
    assert "latency in all 412 ms" in err  # balanced: 337.5 ms, a 25 ms block, 50 ms of devices
    # Two cores: low pipelined comes before balanced; it fits at 8 hops, and at 4 (38 ms of 50), not fewer.
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    asked.clear()
    code, err = run(capsys, "live", "--reference", clips["rms"], "--checkpoint-dir", ckpt)
    assert code == 0, err
    assert asked == [("low", 8), ("low, pipelined", 8), *(("low, pipelined", n) for n in (1, 2, 4))]
    assert (
        "--latency auto: low, pipelined at 4 hops per block (50.0 ms): a block took 38 ms here (RTF 0.76); low did "
        "not keep up" in err
    )
    assert "latency in all 262 ms" in err  # low: 112.5 ms, two 50 ms blocks (this one and the one before), devices
    # Nothing keeps up: the cheapest at the largest block, and it says so.
    block_ms.update({("low", 4): 100.0, ("balanced", 4): 100.0, ("exact", 4): 60.0})
    args = ["--hops-per-block", 4, "--no-pipelined"]
    code, err = run(capsys, "live", "--reference", clips["rms"], "--checkpoint-dir", ckpt, *args)
    assert code == 0 and "--latency auto: exact at 4 hops per block (50.0 ms), the cheapest tried, and still" in err
    assert "this machine does not convert in real time" in err


def test_a_virtual_microphone_where_none_can_be_made_says_what_to_do(capsys, monkeypatch, clips):
    """Named badly, or on macOS and Windows (no audio server to ask): one line, before anything loads."""
    code, err = run(capsys, "live", "--reference", clips["rms"], "--virtual-mic", "my mic")
    assert code == 1 and "a name is 1 to 64 letters" in err and err.count("\n") == 1
    for platform, driver in (("darwin", "BlackHole"), ("win32", "VB-CABLE")):
        monkeypatch.setattr(sys, "platform", platform)
        code, err = run(capsys, "live", "--reference", clips["rms"], "--virtual-mic")
        assert code == 1 and driver in err and "--output-device" in err and err.count("\n") == 1


def test_live_without_audio_devices_says_so_before_loading(capsys, monkeypatch, clips, tmp_path):
    monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice(np.zeros(0), devices=()))
    assert main(["live", "--list-devices"]) == 0
    assert capsys.readouterr().out.strip() == "no audio devices found"
    # An empty checkpoint folder: reaching the models would fail differently.
    code, err = run(capsys, "live", "--reference", clips["rms"], "--checkpoint-dir", tmp_path)
    assert code == 1 and err.startswith("rtcodec: error: no audio devices found") and err.count("\n") == 1


@pytest.mark.parametrize("command", [["send"], ["receive", "--port", "50621"]])
def test_send_from_the_microphone_and_receive_to_speakers_check_devices_before_loading(
    capsys, monkeypatch, tmp_path, command
):
    monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice(np.zeros(0), devices=()))
    code, err = run(capsys, *command, "--checkpoint-dir", tmp_path)  # empty: loading would fail differently
    assert code == 1 and err.startswith("rtcodec: error: no audio devices found") and err.count("\n") == 1, err


def test_send_save_input_is_for_the_microphone(ckpt, clips, tmp_path, capsys):
    code, err = run(capsys, "send", clips["rms"], "--save-input", tmp_path / "m.wav", "--checkpoint-dir", ckpt)
    assert code == 1 and "--save-input keeps what the microphone gave" in err and err.count("\n") == 1
    code, err = run(capsys, "send", "--save-input", tmp_path / "m.txt", "--checkpoint-dir", ckpt)
    assert code == 1 and "m.txt" in err and err.count("\n") == 1 and not (tmp_path / "m.txt").exists()


def _send_receive(ckpt, clip, out: Path, port: int, drop, timeout: float = 30.0, sending=()) -> str:
    ready = threading.Event()
    receive = parser().parse_args(
        ["receive", "--port", str(port), "--output", str(out), "--timeout", str(timeout), "--checkpoint-dir", str(ckpt)]
    )
    thread = threading.Thread(target=net.run_receive, args=(receive, ready.set))
    thread.start()
    assert ready.wait(60)
    send = parser().parse_args(
        ["send", str(clip), "--port", str(port), "--no-pacing", "--checkpoint-dir", str(ckpt), *sending]
    )
    net.run_send(send, drop)
    thread.join(120)
    assert not thread.is_alive()
    return str(out)


def test_send_receive_over_loopback_udp(ckpt, clips, tmp_path, capsys):
    clip = tmp_path / "clip.wav"  # 79.75 frames: the last partial frame goes too, and the output is as long
    sf.write(clip, sf.read(clips["slt"], dtype="float32")[0][:15950], 16000)
    models = from_pretrained("v1", checkpoint_dir=ckpt)
    wav = audio.read(clip)
    sender = CodecSender(models.encoder, models.decoder)
    codes = torch.cat([sender.push(wav), sender.flush()], dim=2)
    speaker = speaker_embedding(models.encoder, models.decoder, wav).half().float()
    receiver = CodecReceiver(models.decoder, speaker)
    expected = torch.cat([receiver.push(codes), receiver.flush(sender.padding)], dim=2)[0, 0].clamp(-1, 1).numpy()
    assert expected.shape == (15950,)

    clean = sf.read(_send_receive(ckpt, clip, tmp_path / "clean.wav", 50601, lambda seq: False))[0]
    err = capsys.readouterr().err
    assert "0 lost and concealed" in err and "joined mid-stream" not in err and "refused" not in err
    assert clean.shape == expected.shape and rel_err(torch.from_numpy(clean), torch.from_numpy(expected)) < 1e-4

    lost = {15, 18}  # packets of codes: 4 frames each (packet 0 is the speaker embedding)
    lossy = sf.read(_send_receive(ckpt, clip, tmp_path / "lossy.wav", 50602, lambda seq: seq in lost))[0]
    assert f"{4 * len(lost)} lost and concealed" in capsys.readouterr().err
    assert lossy.shape == expected.shape
    # Before the first loss's reach the audio is untouched; concealment keeps the rest close, not silent.
    first_lost_sample = (15 - 1) * 4 * 200
    untouched = first_lost_sample - 5725  # the decoder's lookahead reaches back this far
    assert np.abs(lossy[:untouched] - expected[:untouched]).max() < 1e-3
    assert rel_err(torch.from_numpy(lossy), torch.from_numpy(expected)) < 1.0


def test_receiver_asks_for_the_speaker_when_it_missed_it(ckpt, clips, tmp_path, capsys):
    out = _send_receive(ckpt, clips["rms"], tmp_path / "o.wav", 50603, lambda seq: seq == 0)
    assert sf.read(out)[0].shape == (16000,)


def test_a_receiver_that_missed_the_start_says_so(ckpt, clips, tmp_path, capsys):
    out = _send_receive(ckpt, clips["rms"], tmp_path / "o.wav", 50618, lambda seq: seq in (1, 2))
    assert "joined mid-stream: the first 8 frames (0.10 s) were sent before" in capsys.readouterr().err
    assert sf.read(out)[0].shape == (16000 - 8 * 200,)


def test_send_loss_drops_packets_at_random_and_the_receiver_conceals_them(ckpt, clips, tmp_path, capsys, monkeypatch):
    # Seeded, so that the run repeats: this seed keeps the speaker packet (sent first), whose loss at 50% and
    # unpaced could outlast the speaker requests and leave nothing decoded.
    monkeypatch.setattr(net, "random", types.SimpleNamespace(Random=lambda: random.Random(0)))
    out = _send_receive(ckpt, clips["rms"], tmp_path / "o.wav", 50620, lambda seq: False, 3.0, ["--loss", "50"])
    err = capsys.readouterr().err
    dropped = int(re.search(r"--loss 50: dropped (\d+) of the packets on purpose", err)[1])
    share = float(re.search(r"\d+ lost and concealed \(([\d.]+)% of the frames\)", err)[1])
    assert dropped > 0 and 0 < share < 100, err
    assert 0 < sf.info(out).frames <= 16000


def test_a_sender_with_nobody_listening_says_so(ckpt, clips, capsys):
    code, err = run(capsys, "send", clips["rms"], "--port", 50619, "--no-pacing", "--checkpoint-dir", ckpt)
    assert code == 0 and "packets were refused: nothing was listening on 127.0.0.1:50619" in err
    assert "0 speaker requests answered" in err


def test_a_lost_end_packet_ends_the_signal_after_the_timeout(ckpt, clips, tmp_path, capsys):
    # 1 s = 80 frames: the speaker packet, 20 packets of codes, then the end packet (sequence number 21).
    out = _send_receive(ckpt, clips["rms"], tmp_path / "o.wav", 50604, lambda seq: seq >= 21, timeout=3.0)
    assert "ending the signal here" in capsys.readouterr().err
    assert sf.read(out)[0].shape == (16000,)


@pytest.mark.parametrize(
    "args, message",
    [
        (["receive", "--port", "70000"], "a port is within 1..65535, got 70000"),
        (["send", "x.wav", "--port", "0"], "a port is within 1..65535, got 0"),
        (["receive", "--timeout", "0"], "must be more than 0 seconds"),
        (["receive", "--timeout", "nan"], "must be more than 0 seconds"),
        (["send", "x.wav", "--loss", "100"], "a loss is within [0, 100) percent, got 100"),
        (["live", "--device-latency", "3"], "a device latency is within (0, 2] seconds, got 3"),
        (["live", "--device-latency", "fast"], "low, high or a number of seconds, got 'fast'"),
    ],
)
def test_bad_network_options_are_refused_before_loading(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_an_output_that_is_an_input_is_refused(ckpt, clips, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice(np.zeros(0), devices=()))
    source = tmp_path / "in.wav"
    source.write_bytes(clips["rms"].read_bytes())
    before = source.read_bytes()
    live = ["live", "--reference", source, "--save-input", source]  # refused before the devices are asked
    for args in (["reconstruct", source, source], ["convert", clips["slt"], source, source], live):
        code, err = run(capsys, *args, "--checkpoint-dir", ckpt)
        assert code == 1 and "is also an input" in err and err.count("\n") == 1
    assert source.read_bytes() == before
    code, err = run(capsys, "reconstruct", source, tmp_path / "no" / "o.wav", "--checkpoint-dir", ckpt)
    assert code == 1 and "does not exist" in err


def test_a_hostile_sender_on_loopback_changes_nothing(ckpt, clips, tmp_path, capsys):
    """Once the real sender's first packet has locked the receiver, a second port injects codes, a voice and an
    END, malformed packets, huge frame indices and junk: the real stream is decoded exactly as without them."""
    import socket

    from rtcodec.transport import CODES, END, SPEAKER, codes_packet, end_packet, packet, speaker_packet

    port = 50611
    hostile = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacks = [
        codes_packet(0, 8, torch.full((6, 4), 5, dtype=torch.long)),
        speaker_packet(0, torch.full((256,), 3.0)),
        end_packet(0, 10),
        codes_packet(0, 2**32 - 5, torch.zeros(6, 4, dtype=torch.long)),
        end_packet(0, 2**32 - 1),
        packet(CODES, 0, b"\x00\x02"),
        packet(END, 0, b""),
        packet(CODES, 0, bytes([0, 0, 0, 0, 255]) + bytes(8)),
        packet(SPEAKER, 0, bytes(100)),
        packet(SPEAKER, 0, b"\x7e\x00" * 256),  # fp16 NaN
        b"junk",
    ]

    def drop(seq: int) -> bool:  # called before each real packet goes out
        if seq == 2:  # the speaker and the first codes are on their way: the real sender is the peer
            for data in attacks:
                hostile.sendto(data, ("127.0.0.1", port))
        return False

    try:
        clean = sf.read(_send_receive(ckpt, clips["slt"], tmp_path / "clean.wav", port - 1, lambda seq: False))[0]
        capsys.readouterr()
        out = sf.read(_send_receive(ckpt, clips["slt"], tmp_path / "attacked.wav", port, drop))[0]
    finally:
        hostile.close()
    err = capsys.readouterr().err
    assert out.shape == clean.shape and np.abs(out - clean).max() < 1e-4, err
    assert "0 lost and concealed, 0 late packets, 6 damaged, 5 from other senders" in err, err


def test_junk_does_not_keep_a_receiver_open(ckpt, clips, tmp_path, capsys):
    """Junk every 0.2 s after the real sender's packets stop: the timeout still ends the signal."""
    import socket

    from rtcodec.transport import Sender

    port, stop = 50613, threading.Event()
    receive = parser().parse_args(
        ["receive", "--port", str(port), "--output", str(tmp_path / "o.wav"), "--timeout", "1"]
        + ["--checkpoint-dir", str(ckpt)]
    )
    ready = threading.Event()
    thread = threading.Thread(target=net.run_receive, args=(receive, ready.set))
    thread.start()
    assert ready.wait(60)
    real, junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = Sender(lambda data: real.sendto(data, ("127.0.0.1", port)), torch.zeros(256))
    sender.push(torch.zeros(6, 1, 8, dtype=torch.long))  # 8 frames, no end packet
    try:
        for _ in range(300):  # junk every 0.2 s, for at most a minute
            if not thread.is_alive() or stop.wait(0.2):
                break
            junk.sendto(b"junk", ("127.0.0.1", port))
    finally:
        real.close()
        junk.close()
    thread.join(60)
    err = capsys.readouterr().err
    assert not thread.is_alive() and "ending the signal here" in err and "received 8 frames" in err
    assert sf.read(tmp_path / "o.wav")[0].shape == (1600,)


def test_a_receiver_started_long_before_the_sender_waits_for_it(ckpt, clips, tmp_path, capsys):
    """--timeout counts from the first packet: a receiver started 2 s before its sender (which then loads its
    models) with a 1 s timeout still receives the whole signal."""
    port, out = 50615, tmp_path / "o.wav"
    receive = parser().parse_args(
        ["receive", "--port", str(port), "--output", str(out), "--timeout", "1", "--checkpoint-dir", str(ckpt)]
    )
    ready = threading.Event()
    thread = threading.Thread(target=net.run_receive, args=(receive, ready.set))
    thread.start()
    assert ready.wait(60)
    threading.Event().wait(2.0)
    assert thread.is_alive()
    send = parser().parse_args(
        ["send", str(clips["rms"]), "--port", str(port), "--no-pacing", "--checkpoint-dir", str(ckpt)]
    )
    net.run_send(send)
    thread.join(120)
    err = capsys.readouterr().err
    assert not thread.is_alive() and sf.info(out).frames == 16000, err
    assert "sending to 127.0.0.1" in err and "received 80 frames" in err


def test_a_receiver_with_wait_gives_up_with_one_line(ckpt, capsys):
    code, err = run(capsys, "receive", "--port", 50617, "--wait", "0.5", "--output", "x.wav", "--checkpoint-dir", ckpt)
    assert code == 1 and "no packet for 0.5 s; is the sender running?" in err and not Path("x.wav").exists()


def test_a_folder_or_a_list_encodes_to_one_fac_per_clip(ckpt, clips, tmp_path, capsys):
    """In batches, each clip's codes are what encoding it alone writes; bad clips are skipped."""
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    data, rate = sf.read(AUDIO / "slt.wav", dtype="float32")
    sf.write(corpus / "a.wav", data[:16077], rate)
    sf.write(corpus / "sub" / "b.flac", data[20000:27000], rate)
    sf.write(corpus / "c.wav", data[:30000], rate)
    sf.write(corpus / "empty.wav", data[:0], rate)
    (corpus / "broken.wav").write_text("not audio")
    code, err = run(capsys, "encode", corpus, tmp_path / "out", "--batch-size", 2, "--checkpoint-dir", ckpt)
    assert code == 1 and "2 of 5 clips were skipped" in err and "empty.wav: " in err and "holds no samples" in err
    for clip, fac in [("a.wav", "a.fac"), ("sub/b.flac", "sub/b.fac"), ("c.wav", "c.fac")]:
        assert run(capsys, "encode", corpus / clip, tmp_path / "alone.fac", "--checkpoint-dir", ckpt)[0] == 0
        batched, alone = Bitstream.load(tmp_path / "out" / fac), Bitstream.load(tmp_path / "alone.fac")
        assert torch.equal(batched.codes, alone.codes) and batched.samples == alone.samples, clip
        # The CPU's kernels may round a batch differently from one clip (seen on an AMD EPYC, AVX2): the speaker
        # embedding then differs in a few fp16 steps.
        assert rel_err(batched.speaker, alone.speaker) < 1e-4, clip
    listing = tmp_path / "list.txt"
    listing.write_text(f"corpus/a.wav  # a comment\n{corpus / 'c.wav'}\n\n")
    code, err = run(capsys, "encode", listing, tmp_path / "listed", "--model", "v2", "--checkpoint-dir", ckpt)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "listed").iterdir()) == ["a.fac", "c.fac"]
    assert Bitstream.load(tmp_path / "listed" / "a.fac").model_version == 2


def test_bulk_outputs_that_would_collide_are_refused_before_any_encoding(ckpt, tmp_path, capsys):
    data, rate = sf.read(AUDIO / "slt.wav", dtype="float32")
    for names in (("a.wav", "a.flac"), ("b.wav", "b.WAV")):
        corpus = tmp_path / names[0].split(".")[0]
        corpus.mkdir()
        for name in names:
            sf.write(corpus / name, data[:20000], rate)
        code, err = run(capsys, "encode", corpus, tmp_path / "out", "--checkpoint-dir", tmp_path / "no-weights")
        assert code == 1 and "would both be written to" in err and names[0].split(".")[0] + ".fac" in err, err
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["encode", "{clip}", "/sys/x.fac"],
        ["encode", "{folder}", "/sys/corpus"],
        ["decode", "{fac}", "/sys/x.wav"],
        ["reconstruct", "{clip}", "/sys/x.wav"],
        ["convert", "{clip}", "{clip}", "/sys/x.wav"],
        ["receive", "--port", "50619", "--output", "/sys/x.wav"],
        ["export", "--onnx", "/sys/graphs"],
    ],
)
def test_an_unwritable_output_is_refused_before_the_models_load(clips, tmp_path, capsys, command):
    """/sys refuses new files even to root. The weights folder does not exist: a command that loaded the models
    first would fail naming them instead."""
    Bitstream(torch.zeros(6, 4, dtype=torch.long), torch.zeros(256)).save(tmp_path / "x.fac")
    values = {"clip": clips["slt"], "folder": clips["slt"].parent, "fac": tmp_path / "x.fac"}
    args = [part.format(**values) for part in command]
    code, err = run(capsys, *args, "--checkpoint-dir", tmp_path / "no-weights")
    assert code == 1 and "cannot write /sys/" in err and "no-weights" not in err, err


def test_export_onnx_refuses_bad_targets_before_any_work(ckpt, tmp_path, capsys):
    """A folder that holds something, or one whose parent is missing: one line, nothing touched (the export itself
    is tested as the README runs it, in test_usage)."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("mine")
    code, err = run(capsys, "export", "--onnx", taken, "--checkpoint-dir", ckpt)
    assert code == 1 and "exists and is not an empty folder" in err and (taken / "x").read_text() == "mine"
    code, err = run(capsys, "export", "--onnx", tmp_path / "nowhere" / "x", "--checkpoint-dir", ckpt)
    assert code == 1 and "does not exist" in err


def test_the_command_line_runs_without_the_optional_stacks(ckpt, clips, tmp_path):
    """Without the serve extra (Starlette, uvicorn) or onnxruntime: the other commands work, and `serve` says
    which extra it needs, in one line."""
    script = f"""
import sys
for name in ("starlette", "uvicorn", "onnxruntime", "ray"):
    sys.modules[name] = None  # as if not installed: importing them fails
from rtcodec.cli import main
code = main(["reconstruct", {str(clips["rms"])!r}, {str(tmp_path / "out.wav")!r}, "--checkpoint-dir", {str(ckpt)!r}])
print("reconstruct", code)
sys.exit(main(["serve", "--checkpoint-dir", {str(ckpt)!r}]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "reconstruct 0" in done.stdout and (tmp_path / "out.wav").exists(), done.stderr
    assert done.returncode == 1 and "pip install 'rtcodec[serve]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("latency", "message"),
    [
        ("fast", "--latency takes presets among exact, balanced, low, or auto alone, got 'fast'"),
        ("auto,exact", "or auto alone, got 'auto,exact'"),
        ("", "or auto alone, got ''"),
    ],
)
def test_serve_refuses_a_latency_it_does_not_offer(capsys, latency, message):
    pytest.importorskip("starlette", reason="the serve extra is not installed")
    code, err = run(capsys, "serve", "--latency", latency)
    assert code == 1 and message in err and err.count("\n") == 1, err


def test_serve_latency_auto_is_not_for_ray(capsys):
    pytest.importorskip("starlette", reason="the serve extra is not installed")
    code, err = run(capsys, "serve", "--latency", "auto", "--ray")
    assert code == 1 and "--latency auto times one machine; with --ray, name the presets" in err, err


def test_precision_runs_the_synthesis_in_half_and_keeps_the_codes(ckpt, clips, tmp_path, capsys):
    """`--precision bf16`: the audio close to fp32's (tests/test_precision.py holds the SNR on the golden models),
    as long, written as floats; `encode` has no such option (codes are always fp32's)."""
    outputs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.wav"
        code, err = run(capsys, "reconstruct", clips["slt"], out, "--checkpoint-dir", ckpt, "--precision", precision)
        assert code == 0, err
        outputs[precision] = torch.from_numpy(sf.read(out, dtype="float32")[0])
    assert outputs["bf16"].shape == outputs["fp32"].shape and rel_err(outputs["bf16"], outputs["fp32"]) < 0.1
    with pytest.raises(SystemExit):  # argparse's usage error
        main(["encode", str(clips["slt"]), str(tmp_path / "x.fac"), "--precision", "bf16"])
    assert "unrecognized arguments: --precision bf16" in capsys.readouterr().err


def test_the_receiver_takes_what_waits_in_its_socket_up_to_a_batch_without_waiting():
    import socket

    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
    ):
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5.0)  # as the receive loop leaves it
        assert list(net._waiting(sock)) == [] and sock.gettimeout() == 5.0  # nothing waits: no wait either
        for i in range(net.MAX_BATCH + 5):  # on the loopback, a datagram is in the socket once sent
            peer.sendto(bytes([i]), sock.getsockname())
        assert sock.recv(net.RECEIVE_BYTES) == bytes([0])
        waiting = [data for data, _ in net._waiting(sock)]
        assert waiting == [bytes([i]) for i in range(1, net.MAX_BATCH)]  # the batch's rest, in order
        assert len(list(net._waiting(sock))) == 5 and sock.gettimeout() == 5.0

    class Socket:  # an empty socket that says whether it was asked to wait
        timeout = 5.0

        def gettimeout(self):
            return self.timeout

        def settimeout(self, timeout):
            self.timeout = timeout

        def recvfrom(self, size):
            if self.timeout != 0:
                raise AssertionError(f"a read that would wait up to {self.timeout} s")
            raise BlockingIOError

    empty = Socket()
    assert list(net._waiting(empty)) == [] and empty.timeout == 5.0
