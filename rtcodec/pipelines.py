"""Live pipelines over the streams: voice conversion, and the codec split into a sender and a receiver.

Quantization and `vq2emb` work frame by frame, so they need no state: a pipeline is an encoder stream,
the quantizers, and a decoder stream. The speaker embedding conditions every decoded frame, but the timbre
encoder attends over a whole utterance, so it is computed once, from a reference (voice conversion) or an
enrollment clip (the codec), before the stream starts.

The decoder must be the V1 `FACodecDecoder`: V2 takes its prosody codes from a mel spectrogram and the
redecoder's prosody transformer attends over the whole utterance, neither of which streams.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch

from . import backends
from .config import HOP_LENGTH, SAMPLE_RATE
from .decoder import FACodecDecoder, FACodecDecoderV2
from .encoder import FACodecEncoder
from .streaming import StreamOptions

# Lookahead (encoder, decoder) in samples by latency preset: exact, and the two reduced latencies that the
# lookahead-quality measurement supports (bench/README.md): "balanced" loses nothing measurable with the golden
# weights, "low" changes about a fifth of the frames' codes. None is exact. The compute each costs per push is
# in the README (bench/latency_presets.py): the lookahead is recomputed on every push.
LATENCY_PRESETS: dict[str, tuple[int | None, int | None]] = {
    "exact": (None, None),
    "balanced": (2400, 3000),
    "low": (800, 1000),
}
MIN_REFERENCE_SECONDS = 1.0  # shorter, the timbre encoder hears too little of the voice
SILENT_RMS = 1e-3  # -60 dBFS: a quieter reference holds no voice to convert to


def check_reference(wav: torch.Tensor, name: str = "the reference clip") -> None:
    """Refuse (ValueError naming `name`) a reference `[B, 1, L]` that gives no voice to convert to: shorter than
    `MIN_REFERENCE_SECONDS`, or silent. The command line, the pipelines and the server all apply it."""
    if not isinstance(wav, torch.Tensor) or wav.dim() != 3:
        return  # the speaker embedding's own checks say what is wrong with it
    if wav.shape[2] < MIN_REFERENCE_SECONDS * SAMPLE_RATE:
        raise ValueError(
            f"{name} is {wav.shape[2] / SAMPLE_RATE:.2f} s long: a reference needs {MIN_REFERENCE_SECONDS:g} s of "
            "the target voice at least (a few seconds are best)"
        )
    rms = wav.double().pow(2).mean(dim=(1, 2)).sqrt().min().item()
    if rms < SILENT_RMS:
        raise ValueError(f"{name} is silent (RMS {rms:.1e}): a reference must hold the target voice")


def settling_hops(encoder_stream, decoder_stream) -> int:
    """Hops of input after which a conversion through these streams runs settled ticks in both: the encoder's
    lookahead (until the decoder's first frame) and the longer of their settling, with a margin of two."""
    settled = max(encoder_stream.settled_hops, decoder_stream.settled_hops)
    return encoder_stream.lookahead_samples // encoder_stream.hop_length + settled + 2


def _check_models(encoder: FACodecEncoder, decoder: FACodecDecoder) -> None:
    if not isinstance(encoder, FACodecEncoder):
        raise TypeError(f"encoder must be a FACodecEncoder, got {type(encoder).__name__}")
    if not isinstance(decoder, FACodecDecoder) or isinstance(decoder, FACodecDecoderV2):
        raise TypeError(
            f"streaming needs the V1 FACodecDecoder, got {type(decoder).__name__}: the V2 prosody codes come from "
            "a mel spectrogram and the redecoder's prosody transformer needs the whole utterance"
        )


@torch.inference_mode()
def speaker_embedding(encoder: FACodecEncoder, decoder: FACodecDecoder, wav: torch.Tensor) -> torch.Tensor:
    """The speaker embedding `[B, 256]` of a clip `[B, 1, L]` (offline: the timbre encoder sees all of it), on
    the models' device wherever the clip is."""
    if isinstance(wav, torch.Tensor):
        wav = wav.to(encoder.block[0].weight.device)
    return decoder.speaker_embedding(encoder(wav))


class _Pipeline:
    """Latency bookkeeping: the sum of the stages' lookahead."""

    stages: tuple

    @property
    def latency_samples(self) -> int:
        """The most audio, in samples, that arrives after a sample before its output comes out."""
        return sum(stage.lookahead_samples for stage in self.stages)

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / SAMPLE_RATE

    def reset(self) -> None:
        for stage in self.stages:
            stage.reset()


class CodecSender(_Pipeline):
    """Audio in, codes out: `push(wav [B, 1, n])` returns `[6, B, k]` codes of the frames final now.

    `flush` codes the last partial frame too, padded with `padding` samples of silence, as the file commands
    do: a receiver that drops that many samples from the end of its output (`CodecReceiver.flush(padding)`)
    gives audio exactly as long as the input."""

    def __init__(
        self, encoder: FACodecEncoder, decoder: FACodecDecoder, options: StreamOptions | None = None, **settings
    ) -> None:
        _check_models(encoder, decoder)
        self.decoder = decoder
        self.encoder_stream = encoder.stream(options, **settings)
        self.stages = (self.encoder_stream,)
        self.samples = 0  # pushed since the last reset, in each row

    @property
    def padding(self) -> int:
        """The samples of silence that complete the last frame of what was pushed."""
        return -self.samples % HOP_LENGTH

    def push(self, wav: torch.Tensor) -> torch.Tensor:
        codes = self.decoder.quantize(self.encoder_stream.push(wav))
        self.samples += wav.shape[2]
        return codes

    def flush(self) -> torch.Tensor:
        stream = self.encoder_stream
        last = stream.push(stream.parameter.new_zeros(stream.batch_size, 1, self.padding))
        return self.decoder.quantize(torch.cat([last, stream.flush()], dim=2))

    def reset(self) -> None:
        super().reset()
        self.samples = 0


class CodecReceiver(_Pipeline):
    """Codes in, audio out: `push(codes [6, B, k])` returns `[B, 1, m]` samples, in the voice of `speaker`."""

    def __init__(
        self,
        decoder: FACodecDecoder,
        speaker: torch.Tensor,
        options: StreamOptions | None = None,
        use_residual: bool = True,
        **settings,
    ) -> None:
        self.decoder, self.use_residual = decoder, use_residual
        self.decoder_stream = decoder.stream(speaker, options, **settings)
        self.stages = (self.decoder_stream,)

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        if isinstance(codes, torch.Tensor) and codes.dim() == 3 and codes.shape[2] == 0:  # no frame yet
            emb = self.decoder_stream.parameter.new_zeros(codes.shape[1], self.decoder.in_channels, 0)
        else:
            if isinstance(codes, torch.Tensor):  # codes arrive from the network on the CPU
                codes = codes.to(self.decoder_stream.parameter.device)
            with torch.inference_mode():
                emb = self.decoder.vq2emb(codes, self.use_residual)
        return self.decoder_stream.push(emb)

    def flush(self, padding: int = 0) -> torch.Tensor:
        """The rest of the audio, less its last `padding` samples (the sender's `padding`: the silence that
        completed its last frame)."""
        out = self.decoder_stream.flush()
        return out[..., : out.shape[2] - min(padding, out.shape[2])]


class VoiceConversion(_Pipeline):
    """Zero-shot voice conversion on a live signal: `push(source [B, 1, n])` returns converted audio.

    The source's prosody and content codes are decoded without its residual codes (which carry its timbre
    details) and with the speaker embedding of `reference` (`[1, 1, L]` or `[B, 1, L]`), as in the published
    recipe. `options` (or its settings as keywords) as in the streams; `lookahead` may be a pair (encoder,
    decoder), e.g. `LATENCY_PRESETS["balanced"]`. With a compiling backend, `warm_up` before a live signal.

    `pipelined`: the encoder runs on a thread of its own, on a push while the decoder works on the push before,
    so two cores share a push's work (about 1.4x faster on two cores at pushes of 4 hops or more; at one hop,
    Python's lock between the threads eats the gain). Each push's audio then comes out one push later: the
    latency is `latency_samples` plus one push.
    """

    def __init__(
        self,
        encoder: FACodecEncoder,
        decoder: FACodecDecoder,
        reference: torch.Tensor,
        options: StreamOptions | None = None,
        *,
        pipelined: bool = False,
        **settings,
    ) -> None:
        _check_models(encoder, decoder)
        check_reference(reference)
        options = StreamOptions.of(options, settings)
        speaker = speaker_embedding(encoder, decoder, reference)
        if speaker.shape[0] == 1:
            speaker = speaker.expand(options.batch_size, -1)
        self.sender = CodecSender(encoder, decoder, options)
        self.receiver = CodecReceiver(decoder, speaker, options, use_residual=False)
        self.stages = (self.sender.encoder_stream, self.receiver.decoder_stream)
        self.encoding = _EncoderThread(self.sender) if pipelined else None

    @property
    def pipelined(self) -> bool:
        return self.encoding is not None

    def push(self, source: torch.Tensor) -> torch.Tensor:
        if self.encoding is None:
            return self.receiver.push(self.sender.push(source))
        return self.receiver.push(self.encoding.swap(source))

    def reset(self) -> None:
        if self.encoding is not None:
            self.encoding.reset()
        self.sender.reset()
        self.receiver.reset()

    def warm_up(self, samples_per_push: int) -> None:
        """Push silence in pushes of `samples_per_push` until both streams have run settled ticks of that size,
        then `reset()`: compiling, exporting or capturing (`StreamOptions.backend`) happens here, not in the first
        seconds of a live signal."""
        encoder, decoder = self.stages
        settle = -(-settling_hops(encoder, decoder) * encoder.hop_length // samples_per_push)
        silence = encoder.parameter.new_zeros(encoder.batch_size, 1, samples_per_push)
        for _ in range(settle + backends.FIRST_SETTLED_TICKS + self.pipelined):  # pipelined: the decoder a push late
            self.push(silence)
        self.reset()

    def flush(self) -> torch.Tensor:
        """The rest of the converted audio: in all, as long as what was pushed."""
        held = self.receiver.push(self.encoding.take()) if self.encoding is not None else None
        last = self.receiver.push(self.sender.flush())
        return torch.cat([out for out in (held, last, self.receiver.flush(self.sender.padding)) if out is not None], 2)


class _EncoderThread:
    """A pipelined conversion's encoder: `swap(source)` starts encoding `source` on the thread and returns the
    codes of the source before (no frames the first time), so the caller decodes those meanwhile."""

    def __init__(self, sender: CodecSender) -> None:
        self.sender = sender
        # Torch's thread settings are per thread: the encoder's gets the caller's count of intra-op threads.
        self.thread = ThreadPoolExecutor(
            1, "rtcodec-encoder", initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),)
        )
        self.pending: Future | None = None

    def swap(self, source: torch.Tensor) -> torch.Tensor:
        source = self.sender.encoder_stream.check(source, "audio")  # a wrong source fails now, not a push later
        codes = self.take()
        self.pending = self.thread.submit(self.sender.push, source)
        return codes

    def take(self) -> torch.Tensor:
        """The codes of the last source given (waiting for them), or no frames where none is pending."""
        pending, self.pending = self.pending, None
        if pending is None:
            rows = (self.sender.decoder.config.num_codebooks, self.sender.encoder_stream.batch_size)
            return torch.zeros(*rows, 0, dtype=torch.long)
        return pending.result()  # the encoder's error, such as a source of the wrong shape, is raised here

    def reset(self) -> None:
        if self.pending is not None:
            self.pending.exception()  # let it finish (its error goes with the signal) before the streams restart
            self.pending = None
