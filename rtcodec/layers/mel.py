"""The log-mel front end of the V2 encoder's prosody feature."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_FFT = 1024
WIN_LENGTH = 800
NUM_MELS = 80
PROSODY_BINS = 20  # the prosody feature keeps the lowest 20 mel bins
REFLECT_PAD = (N_FFT - 200) // 2  # 412 at each end: one STFT frame per 200-sample hop
MEL_PIECE_FRAMES = 2048  # STFT frames computed at once


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log_step = math.log(6.4) / 27.0
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * (200.0 / 3))


def slaney_mel_filterbank(sample_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """Slaney-scale, Slaney-normalized triangular filters, `[num_mels, n_fft // 2 + 1]`."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), num_mels + 2))
    widths = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]  # equal area per filter
    return torch.from_numpy(weights).float()


class MelSpectrogram(nn.Module):
    """Keys `mel_basis [80, 513]` and `hann_window [800]` (buffers; the checkpoint's values are used)."""

    def __init__(self, sample_rate: int = 16000, hop_length: int = 200) -> None:
        super().__init__()
        self.hop_length = hop_length
        self.register_buffer("mel_basis", slaney_mel_filterbank(sample_rate, N_FFT, NUM_MELS, 0.0, sample_rate / 2))
        self.register_buffer("hann_window", torch.hann_window(WIN_LENGTH))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """`wav [B, L]` (L > 412) to the log-mel spectrum `[B, 80, L // 200]`."""
        padded = F.pad(wav[:, None, :], (REFLECT_PAD, REFLECT_PAD), mode="reflect")[:, 0].float()
        frames = (padded.shape[1] - N_FFT) // self.hop_length + 1
        # Frame t reads padded[t * hop : t * hop + N_FFT] alone: pieces of frames give the same spectrum, and a
        # long clip's complex spectrum in one piece would take gigabytes.
        pieces = [
            self._log_mel(padded[:, start * self.hop_length : (start + MEL_PIECE_FRAMES - 1) * self.hop_length + N_FFT])
            for start in range(0, frames, MEL_PIECE_FRAMES)
        ]
        return (pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)).to(wav.dtype)

    def _log_mel(self, padded: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            padded,
            N_FFT,
            hop_length=self.hop_length,
            win_length=WIN_LENGTH,
            window=self.hann_window.float(),
            center=False,
            return_complex=True,
        )
        magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
        mel = torch.matmul(self.mel_basis.float(), magnitude)
        return torch.log(torch.clamp(mel, min=1e-5))
