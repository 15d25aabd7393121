"""Bad input to the models raises a ValueError that says what was expected."""

from __future__ import annotations

import pytest
import torch

from rtcodec import FACodecDecoder, FACodecDecoderV2, FACodecEncoder, FACodecEncoderV2, FACodecRedecoder

SMALL = {"transformer_layers": 1, "transformer_ffn_channels": 32}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {
        "enc": FACodecEncoder(ngf=4, out_channels=256).eval(),
        "enc2": FACodecEncoderV2(ngf=4, out_channels=256).eval(),
        "dec": FACodecDecoder(upsample_initial_channel=32, vq_dim=256, **SMALL).eval(),
        "dec2": FACodecDecoderV2(upsample_initial_channel=32, vq_dim=256, **SMALL).eval(),
        "red": FACodecRedecoder(upsample_initial_channel=32, **SMALL).eval(),
    }


@pytest.mark.parametrize(
    ("wav", "message"),
    [
        (torch.zeros(4000), r"mono audio shaped \[batch, 1, samples\], got shape \(4000,\)"),
        (torch.zeros(1, 4000), r"got shape \(1, 4000\)"),
        (torch.zeros(1, 2, 4000), r"got shape \(1, 2, 4000\) \(mix it to mono first\)"),
        (torch.zeros(1, 1, 4000, dtype=torch.int16), "must be a floating-point tensor"),
        (torch.zeros(1, 1, 0), "too short: 0 samples"),
        (torch.zeros(1, 1, 50), "too short: 50 samples, at least 152 are needed"),
        (torch.full((1, 1, 4000), float("nan")), "NaN or infinite"),
        (torch.full((1, 1, 4000), float("inf")), "NaN or infinite"),
        (torch.zeros(0, 1, 4000), "too short"),
        ([0.0] * 4000, "must be a torch.Tensor"),
    ],
)
def test_encoder_rejects(models, wav, message):
    with pytest.raises(ValueError, match=message):
        models["enc"](wav)


def test_encoder_minimum_length(models):
    """152 samples is the shortest input that gives a frame (the strided convs' arithmetic)."""
    assert models["enc"](torch.zeros(1, 1, 152)).shape == (1, 256, 1)
    with pytest.raises(ValueError, match="151 samples"):
        models["enc"](torch.zeros(1, 1, 151))


def test_v2_mel_needs_more_than_its_padding(models):
    with pytest.raises(ValueError, match="too short: 412 samples, at least 413"):
        models["enc2"].get_prosody_feature(torch.zeros(1, 1, 412))
    assert models["enc2"].get_prosody_feature(torch.zeros(1, 1, 413)).shape == (1, 20, 2)


def test_decoder_rejects(models):
    dec = models["dec"]
    with pytest.raises(ValueError, match=r"encoder output must be shaped \[batch, 256, frames\]"):
        dec(torch.zeros(1, 128, 10))
    with pytest.raises(ValueError, match="encoder output is empty"):
        dec(torch.zeros(1, 256, 0))
    with pytest.raises(ValueError, match=r"speaker embedding must be shaped \[2, 256\], got shape \(1, 256\)"):
        dec.inference(torch.zeros(2, 256, 10), torch.zeros(1, 256))
    with pytest.raises(ValueError, match=r"latent frames must be shaped"):
        dec.inference(torch.zeros(256, 10), torch.zeros(1, 256))
    with pytest.raises(NotImplementedError, match="inference"):
        dec(torch.zeros(1, 256, 10), vq=False)


def test_v2_decoder_rejects(models):
    with pytest.raises(ValueError, match=r"prosody feature must be shaped \[batch, 20, frames\]"):
        models["dec2"](torch.zeros(1, 256, 10), torch.zeros(1, 80, 10))
    with pytest.raises(ValueError, match="prosody feature has batch 2, encoder output has 1"):
        models["dec2"](torch.zeros(1, 256, 10), torch.zeros(2, 20, 10))


@pytest.mark.parametrize("name", ["dec", "red"])
def test_codes_rejected(models, name):
    model = models[name]

    def vq2emb(vq):
        return model.vq2emb(vq) if name == "dec" else model.vq2emb(vq, torch.zeros(vq.shape[1], 256))

    with pytest.raises(ValueError, match=r"codes must be shaped \[6, batch, frames\]"):
        vq2emb(torch.zeros(5, 1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        vq2emb(torch.zeros(6, 1, 10))
    with pytest.raises(ValueError, match=r"codebook 3 must lie in \[0, 1024\), got values 0..1024"):
        bad = torch.zeros(6, 1, 10, dtype=torch.long)
        bad[3, 0, 2] = 1024
        vq2emb(bad)
    # Without the residual, the first three rows are enough.
    out = model.vq2emb(torch.zeros(3, 1, 10, dtype=torch.long), use_residual_code=False) if name == "dec" else None
    assert out is None or out.shape == (1, 256, 10)


def test_v2_codes_cover_the_shorter_of_both_inputs(models):
    """1199 samples give 6 encoder frames but 5 mel frames; codes cover 5 (the published code crashes)."""
    wav = 0.1 * torch.randn(1, 1, 1199)
    with torch.no_grad():
        enc_out = models["enc2"](wav)
        prosody = models["enc2"].get_prosody_feature(wav)
        emb, ids, _, quantized, spk = models["dec2"](enc_out, prosody)
    assert enc_out.shape[2] == 6 and prosody.shape[2] == 5
    assert ids.shape == (6, 1, 5) and emb.shape == (1, 256, 5) and spk.shape == (1, 256)


def test_the_progress_bar_writes_lines_into_a_log_and_redraws_on_a_terminal():
    import io

    from rtcodec.cli.progress import ProgressBar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    log, terminal = io.StringIO(), Terminal()
    for stream in (log, terminal):
        bar = ProgressBar("decoding", stream, min_seconds=0)
        for done in range(201):
            bar(done, 200)
        bar.close()
    assert "\r" not in log.getvalue() and log.getvalue().count("\n") == 11  # 0 %, 10 %, ..., 100 %
    assert terminal.getvalue().count("\r") == 201 and terminal.getvalue().endswith("100%     0 s left\n")
