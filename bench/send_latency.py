"""`rtcodec send` from a microphone to `rtcodec receive --play` on one machine, mouth to ear:
`python -m bench.send_latency`.

The private PulseAudio of `bench.live_latency`: `send` hears the monitor of `rtc_in` as its microphone and sends
codes over UDP on 127.0.0.1 to `receive`, which plays into `rtc_speakers`; a probe plays speech into `rtc_in`
(the sender's enrollment, then what it streams) and records `rtc_speakers`. Per packet size and `--loss`, it
measures the delay from speech played to its decoded voice recorded, as `bench.live_latency` does: `send
--save-input` keeps what its microphone gave, so the library's coding and decoding of that file (through the same
packets, in process, without loss) is what `receive` played, and each 25 ms of it is found in the recording.
Under loss the concealed stretches differ from it and are not found; the share concealed is what `receive`
reports. Writes `bench/results/send-latency-DATE.{md,json}`.

Each command runs on one thread (OMP_NUM_THREADS=1): the two share the machine, as two callers' machines would
not. Needs what `bench.live_latency` needs.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from rtcodec.cli.net import JITTER_SECONDS

from .live_latency import (
    RATE,
    Command,
    glass_to_glass,
    play_and_record,
    probe_round_trip,
    pulseaudio,
    write_checkpoints,
)

PORT = "50711"
TAIL_S = 3.0  # silence played after the speech, while the rest of the decoding comes out


def transmission(
    checkpoint_dir: Path, microphone: np.ndarray, frames_per_packet: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """What `receive` played for what `send`'s microphone gave (its enrollment first, then what it streamed), with
    no packet lost: the streamed part, its decoding through the same packets in process (sample i of one is
    sample i of the other), and the algorithmic latency in samples (both lookaheads and a packet's frames)."""
    import torch

    from rtcodec import HOP_LENGTH
    from rtcodec.cli.net import enrollment_blocks
    from rtcodec.hub import from_pretrained
    from rtcodec.pipelines import CodecReceiver, CodecSender, speaker_embedding
    from rtcodec.transport import Receiver, Sender

    models = from_pretrained("v1", checkpoint_dir=checkpoint_dir)
    block = frames_per_packet * HOP_LENGTH
    wav = torch.from_numpy(microphone).view(1, 1, -1)
    enrolled = enrollment_blocks(block) * block
    out, decoders = [], []

    def start(speaker: torch.Tensor) -> CodecReceiver:
        decoders.append(CodecReceiver(models.decoder, speaker[None]))
        return decoders[-1]

    receiver = Receiver(start=start, on_audio=out.append, codebook_sizes=tuple(models.decoder.codebook_sizes))
    speaker = speaker_embedding(models.encoder, models.decoder, wav[..., :enrolled])[0]
    sender = Sender(receiver.handle, speaker, frames_per_packet)
    codec = CodecSender(models.encoder, models.decoder)
    with torch.inference_mode():
        for i in range(enrolled, wav.shape[2], block):
            sender.push(codec.push(wav[..., i : i + block]))
    decoded = torch.cat(out, 2)[0, 0].clamp(-1, 1).numpy()  # clamped, as the player gets it
    return microphone[enrolled:], decoded, codec.latency_samples + decoders[0].latency_samples + block


def measure(
    env: dict, folder: Path, speech: np.ndarray, seconds: float, frames: int, loss: float, threads: tuple[int, int]
) -> dict:
    """One run of `send --frames-per-packet frames --loss loss` to `receive --play` while the probe plays
    `speech`: the mouth-to-ear delays measured and what the commands reported."""
    import soundfile as sf

    own = probe_round_trip(env, folder)
    saved = folder / "microphone.wav"
    saved.unlink(missing_ok=True)
    common = ["--checkpoint-dir", str(folder), "--port", PORT]
    env = {**env, "PULSE_SOURCE": "rtc_in.monitor", "PULSE_SINK": "rtc_speakers"}
    receive = Command(["receive", *common, "--play", "--timeout", "5"], {**env, "OMP_NUM_THREADS": str(threads[1])})
    send = None
    try:
        receive.wait_for("listening on UDP")
        options = ["--frames-per-packet", str(frames), "--loss", str(loss), "--seconds", str(seconds)]
        send = Command(
            ["send", *common, *options, "--save-input", str(saved)], {**env, "OMP_NUM_THREADS": str(threads[0])}
        )
        send.wait_for("enrolling")
        played = np.concatenate([speech, np.zeros(int(TAIL_S * RATE), np.float32)])
        recording = play_and_record(env, "rtc_in", "rtc_speakers.monitor", played, folder)
        for command in (send, receive):
            if command.wait(120):
                raise RuntimeError(f"rtcodec {command.name} failed:\n{command.err[-2000:]}")
    finally:
        for command in (send, receive):
            if command is not None and command.process.poll() is None:
                command.stop()
    streamed, decoded, latency = transmission(folder, sf.read(saved, dtype="float32")[0], frames)
    concealed = re.search(r"(\d+) lost and concealed", receive.err)
    return {
        "frames_per_packet": frames,
        "loss_percent": loss,
        "threads": threads,
        "send_rtf": _rtf(send.err),
        "receive_rtf": _rtf(receive.err),
        "algorithmic_ms": 1000 * latency / RATE,
        "jitter_ms": 1000 * JITTER_SECONDS,
        "probe_ms": 1000 * own / RATE,
        "concealed_frames": int(concealed[1]) if concealed else None,
        "received_frames": int(re.search(r"received (\d+) frames", receive.err)[1]),
        "overflows": int(m[1]) if (m := re.search(r"overflowed (\d+) times", send.err)) else 0,
        **_playback(receive.err),
        "device_ms": _device_ms(send.err, receive.err),
        **glass_to_glass(recording, speech, streamed, decoded, own),
    }


def _device_ms(send: str, receive: str) -> float:
    """The buffering of the microphone and the speakers that the commands report (PortAudio's figures)."""
    mic = re.search(r"microphone: (\d+) ms of device buffering", send)
    speakers = re.search(r"playing with (\d+) ms of device buffering", receive)
    return float(mic[1]) + float(speakers[1]) if mic and speakers else float("nan")


def _playback(err: str) -> dict:
    played = re.search(r"played with (\d+) xruns, ([\d.]+) s skipped", err)
    return {"xruns": int(played[1]), "skipped_s": float(played[2])} if played else {"xruns": None, "skipped_s": None}


def _rtf(err: str) -> float:
    rtf = re.search(r"compute [\d.]+ s for [\d.]+ s of audio \(RTF ([\d.]+)\)", err)
    return float(rtf[1]) if rtf else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-per-packet", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--loss", type=float, nargs="+", default=[0.0, 10.0], help="send's --loss, in percent")
    parser.add_argument("--seconds", type=float, default=8.0, help="speech streamed per run (default: 8)")
    parser.add_argument(
        "--threads", type=int, nargs=2, default=[1, 1], metavar=("SEND", "RECEIVE"), help="torch threads of each"
    )
    args = parser.parse_args()
    import soundfile as sf

    from .common import speech

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        said = speech()[0, 0].numpy()
        write_checkpoints(tmp, said)
        # The enrollment (3 s), the loading of the models (a few seconds, while the speech goes on), then what is
        # streamed: the clips once over, so that each stretch of speech is played once only.
        said = speech(min(3.0 + 4.0 + args.seconds, 14.5))[0, 0].numpy()
        sf.write(tmp / "speech.wav", said, RATE)
        with pulseaudio(tmp) as env:
            for frames in args.frames_per_packet:
                for loss in args.loss:
                    try:
                        row = measure(env, tmp, said, args.seconds, frames, loss, tuple(args.threads))
                    except RuntimeError as err:  # one run that went wrong: said, and the others still run
                        print(f"{frames} frames, {loss:g}% loss: {err}", file=sys.stderr, flush=True)
                        continue
                    rows.append(row)
                    print(summary(row), flush=True)
    write_report(rows)


def summary(row: dict) -> str:
    return (
        f"{row['frames_per_packet']} frames per packet, {row['loss_percent']:g}% loss: algorithmic "
        f"{row['algorithmic_ms']:.0f} ms + jitter buffer {row['jitter_ms']:.0f} + devices {row['device_ms']:.0f}; "
        f"measured {row['glass_p50_ms']:.0f} ms p50, {row['glass_p99_ms']:.0f} ms p99 "
        f"({row['matched']} of {row['windows']} windows, SNR {row['snr_db_median']:.0f} dB); "
        f"{row['concealed_frames']} of {row['received_frames']} frames concealed, {row['overflows']} overflows, "
        f"{row['xruns']} xruns, {row['skipped_s']} s skipped; "
        f"RTF {row['send_rtf']:.2f} sending, {row['receive_rtf']:.2f} receiving (threads {row['threads']})"
    )


def write_report(rows: list[dict]) -> None:
    from .common import results_stem
    from .report import command_and_machine, write_results

    date = datetime.date.today().isoformat()
    stem = results_stem("send-latency")
    lines = [
        f"# rtcodec send to rtcodec receive on a real audio server ({date})",
        "",
        f"{command_and_machine('bench.send_latency')}; full-size models with random weights of plausible scale and "
        "codebooks drawn from speech; a private PulseAudio with "
        "null sinks (16 kHz mono float), PortAudio through ALSA's pulse plugin; UDP on 127.0.0.1; each command on "
        "one thread. Algorithmic: the encoder's and the decoder's lookahead and one packet's frames; then receive's "
        "jitter buffer, and the microphone's and the speakers' buffering as PortAudio reports it. Measured: "
        "the delay from speech played into the sender's microphone to its decoding recorded from the receiver's "
        "speakers, per 25 ms of voice found whole in the recording, with the probe's own round trip taken off; "
        "under loss the concealed stretches are not found. Concealed: as `receive` reports it.",
        "",
        "| packet | loss | algorithmic + jitter buffer + devices | measured p50 / p99 | windows found | SNR "
        "| concealed | RTF send / receive "
        "| microphone overflows / speaker xruns | skipped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        share = 100 * (row["concealed_frames"] or 0) / max(row["received_frames"], 1)
        lines.append(
            f"| {row['frames_per_packet'] * 12.5:g} ms | {row['loss_percent']:g}% "
            f"| {row['algorithmic_ms']:.0f} + {row['jitter_ms']:.0f} + {row['device_ms']:.0f} ms "
            f"| {row['glass_p50_ms']:.0f} / {row['glass_p99_ms']:.0f} ms | {row['matched']} of {row['windows']} "
            f"| {row['snr_db_median']:.0f} dB | {share:.1f}% | {row['send_rtf']:.2f} / {row['receive_rtf']:.2f} "
            f"| {row['overflows']} / {row['xruns']} | {row['skipped_s']} s |"
        )
    write_results(stem, "\n".join(lines) + "\n", rows)


if __name__ == "__main__":
    main()
