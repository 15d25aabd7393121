"""Every tensor of the golden vectors, reproduced from the golden state dicts: codes exact, floats to 1e-5."""

from __future__ import annotations

import pytest
import torch

from .conftest import rel_err

TOL = 1e-5

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def v1(golden, vectors):
    enc, dec = golden["encoder"], golden["decoder"]
    out = {}
    with torch.no_grad():
        for clip in "ab":
            enc_out = enc(vectors[f"wav_{clip}"])
            emb, ids, loss, quantized, spk = dec(enc_out, eval_vq=False, vq=True)
            out[clip] = dict(enc_out=enc_out, emb=emb, ids=ids, loss=loss, quantized=quantized, spk=spk)
            out[clip]["recon"] = dec.inference(emb, spk)
    return out


@pytest.mark.parametrize("clip", "ab")
def test_v1_encode_quantize_decode(v1, vectors, clip):
    got = v1[clip]
    assert rel_err(got["enc_out"], vectors[f"v1.enc_out_{clip}"]) < TOL
    assert torch.equal(got["ids"], vectors[f"v1.vq_id_{clip}"])
    assert got["loss"] is None
    assert rel_err(got["emb"], vectors[f"v1.vq_post_emb_{clip}"]) < TOL
    for i in range(3):
        assert rel_err(got["quantized"][i], vectors[f"v1.quantized{i}_{clip}"]) < TOL
    assert rel_err(got["spk"], vectors[f"v1.spk_embs_{clip}"]) < TOL
    assert got["recon"].shape == vectors[f"v1.recon_{clip}"].shape
    assert rel_err(got["recon"], vectors[f"v1.recon_{clip}"]) < TOL


def test_v1_vq2emb_and_voice_conversion(golden, v1, vectors):
    dec = golden["decoder"]
    with torch.no_grad():
        assert rel_err(dec.vq2emb(v1["a"]["ids"]), vectors["v1.vq2emb_a"]) < TOL
        nores = dec.vq2emb(v1["a"]["ids"], use_residual_code=False)
        assert rel_err(nores, vectors["v1.vq2emb_a_nores"]) < TOL
        assert rel_err(dec.inference(nores, v1["b"]["spk"]), vectors["v1.vc_a_to_b"]) < TOL


def test_v1_batch(golden, vectors):
    """A batch of both clips (cut to the shorter) gives the golden batch codes."""
    n = vectors["wav_b"].shape[-1]
    wav = torch.cat([vectors["wav_a"][..., :n], vectors["wav_b"]])
    with torch.no_grad():
        enc_out = golden["encoder"](wav)
        _, ids, _, _, _ = golden["decoder"](enc_out)
    assert rel_err(enc_out, vectors["v1.batch_enc_out"]) < TOL
    assert torch.equal(ids, vectors["v1.batch_vq_id"])


def test_batch_invariance(golden, vectors):
    """The same clip gives the same speaker embedding and codes alone and at any place in a batch."""
    n = vectors["wav_b"].shape[-1]
    wav = torch.cat([vectors["wav_a"][..., :n], vectors["wav_b"]])
    enc, dec = golden["encoder"], golden["decoder"]
    with torch.no_grad():
        emb_batch, ids_batch, _, _, spk_batch = dec(enc(wav))
        for i in range(2):
            emb, ids, _, _, spk = dec(enc(wav[i : i + 1]))
            assert torch.equal(ids[:, 0], ids_batch[:, i])
            assert rel_err(spk_batch[i], spk[0]) < 1e-6
            assert rel_err(emb_batch[i], emb[0]) < 1e-6


def test_full_size_encoder(golden, vectors):
    with torch.no_grad():
        assert rel_err(golden["encoder_full"](vectors["wav_a"]), vectors["full.enc_out_a"]) < TOL


@pytest.mark.parametrize("clip", "ab")
def test_v2(golden, vectors, clip):
    enc, dec = golden["encoder_v2"], golden["decoder_v2"]
    wav = vectors[f"wav_{clip}"]
    with torch.no_grad():
        enc_out = enc(wav)
        prosody = enc.get_prosody_feature(wav)
        emb, ids, _, _, spk = dec(enc_out, prosody, eval_vq=False, vq=True)
        recon = dec.inference(emb, spk)
    assert rel_err(enc_out, vectors[f"v2.enc_out_{clip}"]) < TOL
    assert rel_err(prosody, vectors[f"v2.prosody_{clip}"]) < TOL
    assert torch.equal(ids, vectors[f"v2.vq_id_{clip}"])
    assert rel_err(emb, vectors[f"v2.vq_post_emb_{clip}"]) < TOL
    assert rel_err(spk, vectors[f"v2.spk_embs_{clip}"]) < TOL
    assert rel_err(recon, vectors[f"v2.recon_{clip}"]) < TOL


@pytest.mark.parametrize("clip", "ab")
def test_long_clip_pieces_give_the_golden_outputs(golden, vectors, monkeypatch, clip):
    """A long clip's attention queries, feed-forward, quantization and mel spectrum are computed in pieces of
    frames to bound memory: with pieces of a few frames, every golden output of V1 and V2 is unchanged."""
    from rtcodec import decoder
    from rtcodec.layers import mel, transformer

    monkeypatch.setattr(transformer, "PIECE_FRAMES", 7)
    monkeypatch.setattr(decoder, "QUANTIZE_FRAMES", 5)
    monkeypatch.setattr(mel, "MEL_PIECE_FRAMES", 6)
    wav = vectors[f"wav_{clip}"]
    with torch.no_grad():
        for version, dec, extra in (
            ("v1", golden["decoder"], ()),
            ("v2", golden["decoder_v2"], (golden["encoder_v2"].get_prosody_feature(wav),)),
        ):
            if extra:
                assert rel_err(extra[0], vectors[f"v2.prosody_{clip}"]) < TOL
            emb, ids, _, quantized, spk = dec(vectors[f"{version}.enc_out_{clip}"], *extra)
            assert torch.equal(ids, vectors[f"{version}.vq_id_{clip}"])
            assert rel_err(emb, vectors[f"{version}.vq_post_emb_{clip}"]) < TOL
            assert rel_err(spk, vectors[f"{version}.spk_embs_{clip}"]) < TOL
            if version == "v1":
                for i in range(3):
                    assert rel_err(quantized[i], vectors[f"v1.quantized{i}_{clip}"]) < TOL


def test_v2_voice_conversion(golden, vectors):
    dec = golden["decoder_v2"]
    with torch.no_grad():
        nores = dec.vq2emb(vectors["v2.vq_id_a"], use_residual=False)
        assert rel_err(nores, vectors["v2.vq2emb_a_nores"]) < TOL
        assert rel_err(dec.inference(nores, vectors["v2.spk_embs_b"]), vectors["v2.vc_a_to_b"]) < TOL


def test_redecoder_voice_conversion(golden, vectors):
    red = golden["redecoder"]
    with torch.no_grad():
        emb = red.vq2emb(vectors["v1.vq_id_a"], vectors["v1.spk_embs_b"], use_residual=False)
        assert rel_err(emb, vectors["red.vq2emb_a_to_b"]) < TOL
        assert rel_err(red.inference(emb, vectors["v1.spk_embs_b"]), vectors["red.vc_a_to_b"]) < TOL
        # Our forward is the two steps in one call (the published one crashes).
        assert rel_err(red(vectors["v1.vq_id_a"], vectors["v1.spk_embs_b"]), vectors["red.vc_a_to_b"]) < TOL


def test_buffers_match_the_formulas(golden):
    """Filters and mel basis built at construction equal the checkpoint's (fp16-rounded) values."""
    from rtcodec.layers.activation import kaiser_sinc_filter
    from rtcodec.layers.mel import slaney_mel_filterbank

    stored = golden["encoder"].block[-2].up_filter
    assert torch.allclose(kaiser_sinc_filter(), stored, rtol=1e-3, atol=1e-4)
    mel = golden["encoder_v2"].mel_transform.mel_basis
    assert torch.allclose(slaney_mel_filterbank(16000, 1024, 80, 0.0, 8000.0), mel, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("tick_hops", [1, 7, 80])
def test_fast_offline_path_matches_the_golden_vectors(vectors, golden, tick_hops):
    """The stream engine run offline (the fast CPU path) meets the reference path's tolerances; codes exact."""
    from rtcodec.streaming import decode_offline, encode_offline

    enc = encode_offline(golden["encoder_full"], vectors["wav_a"], tick_hops)
    assert rel_err(enc, vectors["full.enc_out_a"]) < TOL
    decoder = golden["decoder"]
    for name in ("a", "b"):
        enc = encode_offline(golden["encoder"], vectors[f"wav_{name}"], tick_hops)
        assert rel_err(enc, vectors[f"v1.enc_out_{name}"]) < TOL
        with torch.no_grad():
            assert torch.equal(decoder(enc)[1], vectors[f"v1.vq_id_{name}"])
        emb, spk = vectors[f"v1.vq_post_emb_{name}"], vectors[f"v1.spk_embs_{name}"]
        assert rel_err(decode_offline(decoder, emb, spk, tick_hops), vectors[f"v1.recon_{name}"]) < TOL


def test_drop_in_calls_take_the_fast_path_without_autograd(vectors, golden, monkeypatch):
    """Under no_grad (the published usage) `encoder(wav)` and `decoder.inference` run on the stream engine, with
    the golden outputs and codes; with autograd on they run the plain computation, so gradients flow."""
    import rtcodec.decoder
    import rtcodec.encoder
    from rtcodec import streaming

    calls = []
    for module, name in ((rtcodec.encoder, "encode_offline"), (rtcodec.decoder, "decode_offline")):
        real = getattr(streaming, name)
        monkeypatch.setattr(module, name, lambda *args, real=real, name=name: calls.append(name) or real(*args))
    encoder, decoder = golden["encoder"], golden["decoder"]
    emb, spk = vectors["v1.vq_post_emb_a"], vectors["v1.spk_embs_a"]
    with torch.no_grad():
        enc = encoder(vectors["wav_a"])
        assert rel_err(enc, vectors["v1.enc_out_a"]) < TOL
        assert torch.equal(decoder(enc)[1], vectors["v1.vq_id_a"])
        assert rel_err(decoder.inference(emb, spk), vectors["v1.recon_a"]) < TOL
    assert calls == ["encode_offline", "decode_offline"]
    out = encoder(vectors["wav_a"][..., :4000])
    assert out.requires_grad and calls == ["encode_offline", "decode_offline"]


@pytest.mark.parametrize("frames", [1, 9, 500, 3000])
def test_attention_in_linear_memory_equals_the_published_computation(frames, monkeypatch):
    """The timbre encoder's attention through scaled_dot_product_attention, queries in pieces (memory that grows
    with the clip, not its square) equals nn.MultiheadAttention's within fp32 rounding, at lengths up to 3000
    frames (37.5 s)."""
    from torch import nn

    from rtcodec.layers import transformer
    from rtcodec.layers.transformer import self_attention

    monkeypatch.setattr(transformer, "PIECE_FRAMES", 128)

    torch.manual_seed(frames)
    mha = nn.MultiheadAttention(256, 8, batch_first=True).eval()
    x = torch.randn(2, frames, 256)
    with torch.inference_mode():
        assert rel_err(self_attention(mha, x), mha(x, x, x, need_weights=False)[0]) < 1e-5
