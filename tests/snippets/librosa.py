"""A stand-in for `librosa.load`, which the published snippets call, so the tests need not install librosa."""

import soundfile


def load(path, sr=16000):
    wav, rate = soundfile.read(path, dtype="float32")
    if rate != sr:
        raise ValueError(f"the stand-in reads {sr} Hz files only, {path} is {rate} Hz")
    return wav, rate
