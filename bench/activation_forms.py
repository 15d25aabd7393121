"""The anti-aliased SnakeBeta of a settled tick in two forms, eager and compiled: `python -m bench.activation_forms`.

The streams' form (`rtcodec.stream_ops.AntiAliased` on small ticks): both upsampling phases as one blocked matmul
over the window, SnakeBeta in place, the strided low-pass as a second blocked matmul. The candidate "one pass"
form: the phases and the low-pass as shifted multiply-adds (6 + 6 + 12 of them) with the SnakeBeta between,
which torch.compile can fuse into few loops and ONNX would export as a handful of nodes. Both take the window a
tick's outputs read (n + 10 samples) and give the n outputs; they agree within fp32 rounding (checked here).

Per tick shape (channels and samples of a 4-hop tick at each stage of the decoder), one thread, the mean of 50
calls after 3. Writes `bench/results/activation-forms-DATE.{md,json}`.
"""

from __future__ import annotations

import datetime
import time
from functools import partial

import torch

from rtcodec.layers.activation import AntiAliasedSnake, snake_
from rtcodec.stream_ops import AntiAliased, _blocked_fir

from .common import results_stem
from .report import command_and_machine, write_results

SHAPES = ((512, 20), (256, 160), (128, 800), (64, 1600))  # (channels, outputs) of a 4-hop tick per decoder stage
CALLS = 50


def blocked(op: AntiAliased, window: torch.Tensor) -> torch.Tensor:
    """The streams' form."""
    n = window.shape[2] - 2 * op.REACH
    up_block, up, down_block, down = op._blocked(n)
    upsampled = snake_(_blocked_fir(window, up, up_block + 5, up_block), op.alpha, op.inv_beta)
    return _blocked_fir(upsampled, down, 2 * down_block + 10, 2 * down_block)


def shifted(op: AntiAliased, window: torch.Tensor) -> torch.Tensor:
    """The candidate: every filter as shifted multiply-adds."""
    n = window.shape[2] - 2 * op.REACH
    phase = n + 5  # samples of each phase that the low-pass reads
    odd = sum(op.odd[k] * window[..., k : k + phase] for k in range(6))
    even = sum(op.even[k] * window[..., k : k + phase] for k in range(6))
    upsampled = torch.stack([odd, even], -1).flatten(2)
    upsampled = upsampled + torch.sin(upsampled * op.alpha).pow(2) * op.inv_beta
    return sum(op.lowpass[k] * upsampled[..., k : k + 2 * n : 2] for k in range(12))


def _call(form, op: AntiAliased, window: torch.Tensor) -> torch.Tensor:
    return form(op, window.clone())


def mean_us(fn) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(CALLS):
        fn()
    return 1e6 * (time.perf_counter() - start) / CALLS


def main() -> None:
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    rows = []
    for channels, n in SHAPES:
        module = AntiAliasedSnake(channels)
        module.act.alpha.data.normal_(0, 0.3, generator=torch.Generator().manual_seed(channels))
        module.act.beta.data.normal_(0, 0.3, generator=torch.Generator().manual_seed(n))
        op = AntiAliased(module)
        window = torch.randn(1, channels, n + 2 * op.REACH, generator=torch.Generator().manual_seed(0))
        difference = (blocked(op, window.clone()) - shifted(op, window)).abs().max().item()
        row = {"channels": channels, "outputs": n, "max_difference": difference}
        for name, form in (("blocked", blocked), ("shifted", shifted)):
            row[f"{name}_eager_us"] = mean_us(partial(_call, form, op, window))
            row[f"{name}_compiled_us"] = mean_us(partial(_call, torch.compile(form), op, window))
        rows.append(row)
        print(row, flush=True)
    write(rows)


def write(rows: list[dict]) -> None:
    date = datetime.date.today().isoformat()
    stem = results_stem("activation-forms")
    lines = [
        f"# The anti-aliased SnakeBeta of a settled tick, two forms ({date})",
        "",
        f"{command_and_machine('bench.activation_forms')}; one thread, mean of {CALLS} calls (µs; the window "
        "cloned each call, as the stream's in-place SnakeBeta needs).",
        "",
        "| channels x outputs | blocked, eager | blocked, compiled | shifted, eager | shifted, compiled "
        "| max difference |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['channels']} x {r['outputs']} | {r['blocked_eager_us']:.0f} | {r['blocked_compiled_us']:.0f} | "
            f"{r['shifted_eager_us']:.0f} | {r['shifted_compiled_us']:.0f} | {r['max_difference']:.1e} |"
        )
    write_results(stem, "\n".join(lines) + "\n", rows)


if __name__ == "__main__":
    main()
