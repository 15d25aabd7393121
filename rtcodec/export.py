"""ONNX export of the whole model for `rtcodec.onnx_stream`: each stream's tick (settled, and with edges; see
`tick_graph`), the quantizer, the decoder's front (codes to normalized frames), the timbre projection and a
manifest. `rtcodec export --onnx DIR` writes them; `rtcodec.onnx_stream` streams with them using onnxruntime and
numpy alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .config import SAMPLE_RATE
from .layers.norm import timbre_norm
from .onnx_stream import FORMAT, MANIFEST, SHARED_GRAPHS, StageManifest
from .stream_ops import OPEN_END
from .streaming import DecoderStream, EncoderStream
from .tick_graph import tick_graph, to_onnx


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
    write("quantize.onnx", to_onnx(_Quantize(decoder), (frames,), ["frames"], ["codes"], {"frames": {2: time}}))
    codes = torch.zeros(decoder.config.num_codebooks, batch_size, 3, dtype=torch.long)
    # Two tensors: one tensor given twice would become one input of the graph.
    gamma, beta = torch.ones(batch_size, decoder.in_channels), torch.zeros(batch_size, decoder.in_channels)
    for use_residual, name in ((True, "front.onnx"), (False, "front_content.onnx")):
        dynamic = {"codes": {2: time}, "gamma": None, "beta": None}
        graph = to_onnx(
            _Front(decoder, use_residual), (codes, gamma, beta), ["codes", "gamma", "beta"], ["frames"], dynamic
        )
        write(name, graph)
    speakers = torch.zeros(batch_size, decoder.in_channels)
    write("timbre.onnx", to_onnx(_Timbre(decoder), (speakers,), ["speaker"], ["gamma", "beta"]))
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
