"""Two levers on a lookahead's drain, measured against the shipped form: `python -m bench.drain_levers`.

A stream with a lookahead shorter than exact recomputes, on every push, what lies between the exact frontier and
the lookahead as if the signal ended there (`streaming._Stream._drain`, trimmed to what reaches the outputs). On
the `low` preset's decoder (1000 samples of lookahead against 5725 exact) that is most of a push's work. The
forms, each on the decoder stream alone (full-size, random weights of plausible scale, 4-hop pushes of latent
frames of speech, one thread):

- `eager`: as shipped (settled ticks and drains op by op);
- `compiled drain`: each drain through `torch.compile` with the options of the compile backend, its clock as
  tensors (`stream_ops` handles both), so a steady drain, whose windows are the same every push, compiles once;
- `int8 matmuls`: every convolution's matmul (`F.linear` in `stream_ops`) as fbgemm's dynamic int8 linear,
  weights per output channel.

Per form, the best of a few passes taken in turn (the machine's speed drifts): p50 of a push and of its drain, the
seconds spent compiling, and the difference against eager (relative L2 error; SNR in dB). Writes
`bench/results/drain-levers-DATE.{md,json}`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from rtcodec import OFFICIAL, FACodecDecoder, FACodecEncoder
from rtcodec.stream_ops import Clock, _Windowed
from rtcodec.streaming import DecoderStream

from .common import plausible_state_dict, results_stem, speech
from .report import command_and_machine, write_results

HOPS = 4


def decoder_inputs(seconds: float) -> tuple[FACodecDecoder, torch.Tensor, torch.Tensor]:
    """The full-size decoder, the latent frames of `seconds` of speech and its speaker embedding."""
    encoder, decoder = FACodecEncoder(OFFICIAL.encoder).eval(), FACodecDecoder(OFFICIAL.decoder).eval()
    for seed, model in enumerate((encoder, decoder)):
        model.load_state_dict(plausible_state_dict(model, seed))
    emb, _, _, _, speaker = decoder(encoder(speech(seconds)), eval_vq=False, vq=True)
    return decoder, emb, speaker


class DrainTimer:
    """Times a stream's drains, and runs them through `run_drain(x, clock)` in place of `op.step` where given (a
    trimmed drain is the only step during which the windowed ops hold a `drain`)."""

    def __init__(self, stream: DecoderStream, run_drain=None) -> None:
        self.step, self.run_drain, self.seconds = stream.op.step, run_drain, []
        self.probe = next(op for op, _ in stream.op.slots() if isinstance(op, _Windowed))
        stream.op.step = self

    def __call__(self, x: torch.Tensor, clock: Clock) -> torch.Tensor:
        if self.probe.drain is None:
            return self.step(x, clock)
        start = time.perf_counter()
        y = self.run_drain(x, clock) if self.run_drain else self.step(x, clock)
        self.seconds.append(time.perf_counter() - start)
        return y


def compiled_drain(stream: DecoderStream):
    """The drain through torch.compile, the clock's positions as tensors (no recompile as they advance)."""
    op = stream.op

    def drain(x: torch.Tensor, hops: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        clock = Clock(x.shape[0])
        clock.hops, clock.ends = hops, ends
        return type(op).step(op, x, clock)  # the class's step: the instance's is the timer

    compiled = torch.compile(drain, dynamic=False, options={"cpp_wrapper": True})
    return lambda x, clock: compiled(x, torch.tensor(clock.hops), torch.tensor(clock.ends))


@contextlib.contextmanager
def int8_matmuls():
    """`F.linear` in `stream_ops` as fbgemm's dynamic int8 linear (weights quantized once, per output channel)."""
    packed = {}

    def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if id(weight) not in packed:
            scale = (weight.abs().amax(1).clamp(min=1e-12) / 127).double()
            zero = torch.zeros(weight.shape[0], dtype=torch.long)
            quantized = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
            packed[id(weight)] = torch.ops.quantized.linear_prepack(quantized, bias)
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        return torch.ops.quantized.linear_dynamic(rows, packed[id(weight)], True).view(*x.shape[:-1], -1)

    original, F.linear = F.linear, linear  # stream_ops looks F.linear up at each call
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation of quantized tensors
            yield
    finally:
        F.linear = original


class Form:
    """One form's stream, kept across passes (a compiled drain stays compiled for it)."""

    def __init__(self, name: str, decoder, speaker, lookahead: int) -> None:
        self.name, self.lookahead = name, lookahead
        self.stream = DecoderStream(decoder, speaker, lookahead=lookahead)
        self.timer = DrainTimer(self.stream, compiled_drain(self.stream) if name == "compiled drain" else None)
        self.passes: list[dict] = []

    def run(self, emb: torch.Tensor) -> torch.Tensor:
        """One pass over `emb` from a fresh signal: its timings kept, its output returned."""
        self.stream.reset()
        outs, pushes, drains = [], [], []
        with int8_matmuls() if self.name == "int8 matmuls" else contextlib.nullcontext(), torch.inference_mode():
            for i in range(0, emb.shape[2], HOPS):
                start, drained = time.perf_counter(), len(self.timer.seconds)
                outs.append(self.stream.push(emb[..., i : i + HOPS]))
                pushes.append(time.perf_counter() - start)
                drains.append(sum(self.timer.seconds[drained:]))
        # A push over 5 s compiled; the others after the first ten are the steady state.
        steady = [i for i, seconds in enumerate(pushes) if seconds < 5 and i >= 10]
        self.passes.append(
            {
                "push_p50_ms": 1000 * statistics.median(pushes[i] for i in steady),
                "drain_p50_ms": 1000 * statistics.median(drains[i] for i in steady),
                "compile_s": sum(seconds for seconds in pushes if seconds >= 5),
            }
        )
        return torch.cat(outs, dim=2)

    def row(self, out: torch.Tensor, eager: torch.Tensor) -> dict:
        """The best pass (the machine's speed drifts), the compiling, and the difference against eager."""
        best = min(self.passes, key=lambda p: p["push_p50_ms"])
        difference = ((out - eager).double().norm() / eager.double().norm()).item()
        return {
            "form": self.name,
            "lookahead": self.lookahead,
            "push_p50_ms": best["push_p50_ms"],
            "drain_p50_ms": best["drain_p50_ms"],
            "compile_s": sum(p["compile_s"] for p in self.passes),
            "passes": self.passes,
            "relative_error": difference,
            "snr_db": -20 * math.log10(difference) if difference > 0 else math.inf,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="speech decoded per pass (default 4)")
    parser.add_argument("--lookahead", type=int, default=1000, help="decoder lookahead in samples (low: 1000)")
    parser.add_argument("--passes", type=int, default=3, help="passes of every form, taken in turn (default 3)")
    parser.add_argument("--forms", nargs="+", default=["compiled drain", "int8 matmuls"], help="besides eager")
    args = parser.parse_args()
    torch.set_num_threads(1)
    decoder, emb, speaker = decoder_inputs(args.seconds)
    forms = [Form(name, decoder, speaker, args.lookahead) for name in ["eager", *args.forms]]
    for number in range(args.passes):
        outs = [form.run(emb) for form in forms]
        print(f"pass {number + 1}:", {form.name: round(form.passes[-1]["push_p50_ms"], 1) for form in forms})
    rows = [form.row(out, outs[0]) for form, out in zip(forms, outs)]
    write(rows, args)


def write(rows: list[dict], args) -> None:
    stem = results_stem("drain-levers")
    lines = [
        "# Levers on a lookahead's drain",
        "",
        f"{command_and_machine('bench.drain_levers')}; the decoder stream alone, full-size, random weights of "
        f"plausible scale, {args.seconds:g} s of speech's latent frames in pushes of {HOPS} hops ({HOPS * 12.5:g} "
        f"ms), one thread. Each form's best of {args.passes} passes, taken in turn (p50 over the pushes after the "
        "first ten that did not compile); compile: seconds spent in the pushes that compiled.",
        "",
        "| form | lookahead | push p50 | drain p50 | compile | relative error vs eager | SNR vs eager |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['form']} | {r['lookahead']} | {r['push_p50_ms']:.1f} ms | {r['drain_p50_ms']:.1f} ms | "
            f"{r['compile_s']:.0f} s | {r['relative_error']:.1e} | {r['snr_db']:.1f} dB |"
        )
    write_results(stem, "\n".join(lines) + "\n", rows)


if __name__ == "__main__":
    main()
