"""rtcodec: a streaming, real-time FACodec (the factorized speech codec of NaturalSpeech 3).

`from rtcodec import FACodecEncoder, FACodecDecoder` is a drop-in replacement for the published classes.
"""

from importlib.metadata import PackageNotFoundError, version

from .checkpoint import CheckpointError
from .config import HOP_LENGTH, OFFICIAL, SAMPLE_RATE, DecoderConfig, EncoderConfig, RedecoderConfig
from .decoder import FACodecDecoder, FACodecDecoderV2
from .encoder import FACodecEncoder, FACodecEncoderV2
from .hub import Pretrained, from_pretrained
from .pipelines import CodecReceiver, CodecSender, VoiceConversion
from .redecoder import FACodecRedecoder
from .streaming import DecoderStream, EncoderStream, StreamOptions

try:
    __version__ = version("rtcodec")
except PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"

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
