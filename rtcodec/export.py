"""ONNX export of the streams: a stage's tick as a graph whose states are inputs and outputs.

A stream's tick updates its states in place (`stream_ops`); the exported tick is the same computation as a
function, `(x, *states) -> (y, *new_states)`, the way streaming speech recognisers and voice-activity detectors
ship. Two forms per stage and tick size:

- settled: every row is past its start and open, so no window reaches an edge (most ticks of a live stream);
- edges: also takes each row's position, `hops [B]` (hops since its start) and `ends [B]` (its length, or
  `OPEN_END`), and applies the offline padding where a window crosses an edge (a signal's first ticks, the
  drains of `flush` and of a lookahead).

`rtcodec export --onnx DIR` writes these with the quantizer, the decoder's front (codes to normalized frames)
and a manifest; `rtcodec.onnx_stream` streams with them using onnxruntime and numpy alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .config import SAMPLE_RATE
from .onnx_stream import FORMAT, MANIFEST, SHARED_GRAPHS, StageManifest
from .stream_ops import OPEN_END, Clock, StreamOp


class Tick(nn.Module):
    """One tick of a stream's operations as a function: `(x, *states[, hops, ends]) -> (y, *states)`."""

    def __init__(self, op: StreamOp, edges: bool) -> None:
        super().__init__()
        self.op, self.edges, self.slots = op, edges, op.slots()

    def forward(self, x: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = len(self.slots)
        states = [state.clone() for state in inputs[:count]]  # the tick updates these in place
        clock = Clock(x.shape[0])
        if self.edges:
            clock.hops, clock.ends = inputs[count], inputs[count + 1]
        else:
            clock.settled = True
        held = [getattr(op, name) for op, name in self.slots]
        for (op, name), state in zip(self.slots, states):
            setattr(op, name, state)
        try:
            y = self.op.step(x, clock)
        finally:
            for (op, name), state in zip(self.slots, held):
                setattr(op, name, state)
        return (y, *states)


def state_names(count: int) -> list[str]:
    return [f"state_{i}" for i in range(count)]


def tick_graph(op: StreamOp, states: list[torch.Tensor], x: torch.Tensor, edges: bool) -> bytes:
    """The ONNX model (serialized) of a tick of `op` on inputs shaped like `x` and `states`."""
    names = state_names(len(states))
    args = [x, *states]
    if edges:
        args += [torch.zeros(x.shape[0], dtype=torch.long), torch.full((x.shape[0],), OPEN_END)]
    inputs = ["x", *names, *(["hops", "ends"] if edges else [])]
    outputs = ["y", *(f"{name}_out" for name in names)]
    return _export(Tick(op, edges), tuple(args), inputs, outputs)


def _export(module: nn.Module, args: tuple, inputs: list[str], outputs: list[str], dynamic=None) -> bytes:
    # The exporter reports its steps on stdout and logs and warns about modules it does not use (torchvision's):
    # none of it helps here.
    log = logging.getLogger("torch.onnx")
    level = log.level
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log.setLevel(logging.ERROR)
        try:
            # onnxscript's optimizer took over 5 minutes a graph; onnxruntime optimizes at load instead.
            program = torch.onnx.export(
                module.eval(),
                args,
                dynamo=True,
                optimize=False,
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=dynamic,
            )
        finally:
            log.setLevel(level)
    return program.model_proto.SerializeToString()


def _stage(stream, prefix: str, write: Callable[[str, bytes], None]) -> StageManifest:
    x = torch.zeros(stream.batch_size, stream.in_channels, stream.in_per_hop)
    files = {}
    for edges in (False, True):
        files[edges] = f"{prefix}_{'edges' if edges else 'settled'}.onnx"
        write(files[edges], tick_graph(stream.op, stream.states, x, edges))
    first = 4 * stream.in_per_hop  # lengths from here on repeat every hop
    table = [
        stream.out_length(first + r) - (first // stream.in_per_hop) * stream.out_per_hop
        for r in range(stream.in_per_hop)
    ]
    return StageManifest(
        in_channels=stream.in_channels,
        out_channels=stream.out_channels,
        in_per_hop=stream.in_per_hop,
        out_per_hop=stream.out_per_hop,
        out_offset=stream.out_offset,
        settled_hops=stream.settled_hops,
        exact_lookahead_samples=stream.exact_lookahead_samples,
        length_table=table,
        length_from=first,
        states=[list(state.shape) for state in stream.states],
        settled=files[False],
        edges=files[True],
    )


class _Front(nn.Module):
    """The decoder's input: codes `[6, B, T]` to frames, normalized with the speaker's timbre `gamma, beta`."""

    def __init__(self, decoder, use_residual: bool) -> None:
        super().__init__()
        self.decoder, self.use_residual = decoder, use_residual

    def forward(self, codes, gamma, beta):
        from .layers.norm import timbre_norm

        return timbre_norm(self.decoder._embed(codes, self.use_residual), gamma, beta)


class _Timbre(nn.Module):
    def __init__(self, decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, speaker):
        gamma, beta = self.decoder.timbre_linear(speaker).chunk(2, dim=1)
        return gamma, beta


class _Quantize(nn.Module):
    def __init__(self, decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, frames):
        return self.decoder._quantize_piece(frames, frames, None)[1]  # in one piece: any length


GRAPHS = 2 * 2 + len(SHARED_GRAPHS)  # files export_onnx writes besides the manifest (for progress): two per stage


def export_onnx(
    encoder,
    decoder,
    directory: str | Path,
    batch_size: int = 1,
    speaker: torch.Tensor | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Write the ONNX graphs of the encoder and decoder streams (one-hop ticks, `batch_size` rows), the quantizer,
    the decoder's front and the timbre projection, and `manifest.json`, into the folder `directory` (made if
    needed); `progress(name)` after each file. `speaker` (`[256]`), if given, is written too, as `speaker.npy`.
    Returns the manifest."""
    from .streaming import DecoderStream, EncoderStream

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    def write(name: str, data: bytes) -> None:
        (directory / name).write_bytes(data)
        if progress:
            progress(name)

    encoder_stream = EncoderStream(encoder, batch_size=batch_size)
    decoder_stream = DecoderStream(decoder, torch.zeros(batch_size, decoder.in_channels), batch_size=batch_size)
    frames = torch.zeros(batch_size, decoder.in_channels, 3)
    time = torch.export.Dim("frames", min=1)  # the quantizer and the front take any number of frames
    write("quantize.onnx", _export(_Quantize(decoder), (frames,), ["frames"], ["codes"], {"frames": {2: time}}))
    codes = torch.zeros(decoder.config.num_codebooks, batch_size, 3, dtype=torch.long)
    # Two tensors: one tensor given twice would become one input of the graph.
    gamma, beta = torch.ones(batch_size, decoder.in_channels), torch.zeros(batch_size, decoder.in_channels)
    for use_residual, name in ((True, "front.onnx"), (False, "front_content.onnx")):
        dynamic = {"codes": {2: time}, "gamma": None, "beta": None}
        graph = _export(
            _Front(decoder, use_residual), (codes, gamma, beta), ["codes", "gamma", "beta"], ["frames"], dynamic
        )
        write(name, graph)
    speakers = torch.zeros(batch_size, decoder.in_channels)
    write("timbre.onnx", _export(_Timbre(decoder), (speakers,), ["speaker"], ["gamma", "beta"]))
    manifest = {
        "format": FORMAT,
        "sample_rate": SAMPLE_RATE,
        "hop_length": encoder.hop_length,
        "batch_size": batch_size,
        "tick_hops": 1,
        "open_end": OPEN_END,
        "num_codebooks": decoder.config.num_codebooks,
        "encoder": asdict(_stage(encoder_stream, "encoder", write)),
        "decoder": asdict(_stage(decoder_stream, "decoder", write)),
    }
    if speaker is not None:
        import numpy as np

        np.save(directory / "speaker.npy", speaker.detach().float().reshape(-1).numpy())
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest
