"""rtcodec: a streaming, real-time FACodec (the factorized speech codec of NaturalSpeech 3).

`from rtcodec import FACodecEncoder, FACodecDecoder` is a drop-in replacement for the published classes.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rtcodec")
except PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"

# Names load on first use: `import rtcodec` stays light, and `rtcodec.onnx_stream` runs where torch is not installed.
_WHERE = {
    "CheckpointError": "checkpoint",
    "HOP_LENGTH": "config",
    "OFFICIAL": "config",
    "SAMPLE_RATE": "config",
    "DecoderConfig": "config",
    "EncoderConfig": "config",
    "RedecoderConfig": "config",
    "FACodecDecoder": "decoder",
    "FACodecDecoderV2": "decoder",
    "FACodecEncoder": "encoder",
    "FACodecEncoderV2": "encoder",
    "Pretrained": "hub",
    "from_pretrained": "hub",
    "CodecReceiver": "pipelines",
    "CodecSender": "pipelines",
    "VoiceConversion": "pipelines",
    "FACodecRedecoder": "redecoder",
    "DecoderStream": "streaming",
    "EncoderStream": "streaming",
    "StreamOptions": "streaming",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'rtcodec' has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "HOP_LENGTH",
    "OFFICIAL",
    "SAMPLE_RATE",
    "CheckpointError",
    "CodecReceiver",
    "CodecSender",
    "DecoderStream",
    "EncoderStream",
    "DecoderConfig",
    "EncoderConfig",
    "FACodecDecoder",
    "FACodecDecoderV2",
    "FACodecEncoder",
    "FACodecEncoderV2",
    "FACodecRedecoder",
    "Pretrained",
    "RedecoderConfig",
    "StreamOptions",
    "VoiceConversion",
    "from_pretrained",
]
