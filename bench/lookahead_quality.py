"""How far lookahead=N streams are from exact mode: `python -m bench.lookahead_quality` prints the README table.

The golden models of ../shared/facodec (random weights in the published layout: the official weights cannot be
downloaded here; the full-size encoder and the small golden decoder, which has the same hop and lookahead),
the shared speech clips (3 s of each), one-hop pushes. The benchmarks' models are no use here: their encoder
output hardly depends on the input (0.6 % apart between the two clips, against 21 % for the golden encoder).
Encoder lookahead: share of frames whose six codes differ from exact mode, the SNR of the encoder output and
of the decoded audio against exact. Decoder lookahead: SNR of the audio against exact.
"""

from __future__ import annotations

import torch

from .common import AUDIO

GOLDEN = AUDIO.parent / "facodec" / "golden"

SECONDS = 3.0
ENCODER_LOOKAHEADS = [0, 800, 1600, 2400, 3200, 4000, 4800]
DECODER_LOOKAHEADS = [199, 1000, 2000, 3000, 4000, 5000]


def clips() -> list[torch.Tensor]:
    import soundfile as sf

    paths = sorted(AUDIO.glob("*.wav"))
    if not paths:
        raise SystemExit(f"the speech clips are not at {AUDIO}")
    return [torch.from_numpy(sf.read(p, dtype="float32")[0][: int(SECONDS * 16000)]).view(1, 1, -1) for p in paths]


def stream(s, x: torch.Tensor, step: int) -> torch.Tensor:
    return torch.cat([*(s.push(x[..., i : i + step]) for i in range(0, x.shape[2], step)), s.flush()], dim=2)


def snr_db(x: torch.Tensor, reference: torch.Tensor) -> float:
    return (10 * torch.log10(reference.pow(2).sum() / (x - reference).pow(2).sum().clamp_min(1e-20))).item()


def golden_models():
    import json

    from rtcodec import FACodecDecoder, FACodecEncoder

    configs = json.loads((GOLDEN / "configs.json").read_text())
    encoder = FACodecEncoder(**configs["encoder_full"])
    decoder = FACodecDecoder(**configs["decoder"], transformer_layers=2, transformer_ffn_channels=256)
    encoder.load_state_dict(torch.load(GOLDEN / "encoder_full.pt"))
    decoder.load_state_dict(torch.load(GOLDEN / "decoder.pt"))
    return encoder.eval(), decoder.eval()


def main() -> None:
    encoder, decoder = golden_models()
    rows_enc, rows_dec = [], []
    with torch.inference_mode():
        for wav in clips():
            enc = encoder(wav)
            emb, codes, _, _, spk = decoder(enc)
            audio = decoder.inference(emb, spk)
            for n in ENCODER_LOOKAHEADS:
                got = stream(encoder.stream(lookahead=n), wav, 200)
                got_emb, got_codes, *_ = decoder(got)
                changed = (got_codes != codes).any(dim=0).float().mean().item()
                rows_enc.append((n, changed, snr_db(got, enc), snr_db(decoder.inference(got_emb, spk), audio)))
            for n in DECODER_LOOKAHEADS:
                got = stream(decoder.stream(spk, lookahead=n), emb, 1)
                rows_dec.append((n, snr_db(got, audio)))
    print("| encoder lookahead (samples / ms) | frames with changed codes | SNR (dB): encoder output | decoded audio |")
    print("|---|---|---|---|")
    for n in ENCODER_LOOKAHEADS:
        mine = [r for r in rows_enc if r[0] == n]
        changed = sum(r[1] for r in mine) / len(mine)
        latent = ", ".join(f"{r[2]:.1f}" for r in mine)
        snr = ", ".join(f"{r[3]:.1f}" for r in mine)
        print(f"| {n} / {n / 16:g} | {100 * changed:.1f} % | {latent} | {snr} |")
    print(f"| exact: {encoder.stream().lookahead_samples} | 0 % | exact | exact |")
    print()
    print("| decoder lookahead (samples / ms) | SNR of audio (dB) |")
    print("|---|---|")
    for n in DECODER_LOOKAHEADS:
        print(f"| {n} / {n / 16:g} | {', '.join(f'{r[1]:.1f}' for r in rows_dec if r[0] == n)} |")
    print(f"| exact: {decoder.stream(spk).lookahead_samples} | exact |")


if __name__ == "__main__":
    main()
