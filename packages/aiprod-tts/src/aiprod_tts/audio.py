"""Audio features for training: log-mel spectrogram, F0 (YIN) and frame energy, all at hop-size frames.

Frames are centred (reflect padding of n_fft // 2), so a clip of N samples has ``N // hop + 1`` frames,
and the vocoder turns F frames back into ``F * hop`` samples.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from aiprod_tts.config import AudioConfig  # noqa: F401 - re-exported (was defined here)


@functools.lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    # Slaney mel scale and normalisation, as librosa's default (HiFi-GAN and FastSpeech 2 recipes).
    return AF.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sr, norm="slaney", mel_scale="slaney")


def _stft_magnitude(wav: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """wav [..., N] → magnitude [..., n_fft//2+1, N//hop+1]."""
    window = torch.hann_window(cfg.win_length, device=wav.device, dtype=torch.float32)
    shape = wav.shape[:-1]
    spec = torch.stft(wav.reshape(-1, wav.shape[-1]).float(), cfg.n_fft, cfg.hop_length, cfg.win_length, window,
                      center=True, pad_mode="reflect", return_complex=True)
    mag = spec.abs().clamp_min(1e-9)
    return mag.reshape(*shape, *mag.shape[-2:])


def mel_spectrogram(wav: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """wav [..., N] in [-1, 1] → natural-log mel [..., n_mels, N//hop+1] (clamped at 1e-5)."""
    mag = _stft_magnitude(wav, cfg)
    fb = _mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max).to(mag.device)
    mel = torch.einsum("...ft,fm->...mt", mag, fb)
    return torch.log(mel.clamp_min(1e-5))


def frame_energy(wav: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Log L2 norm of each STFT magnitude frame (FastSpeech 2 energy), [..., frames]."""
    return torch.log(_stft_magnitude(wav, cfg).norm(dim=-2).clamp_min(1e-3))


def yin_f0(wav: torch.Tensor, cfg: AudioConfig, threshold: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """F0 by YIN (de Cheveigné & Kawahara 2002) on centred frames: (f0 Hz [frames], voiced bool [frames]).

    wav: [N] mono. The cumulative-mean-normalised difference is computed for every lag with one
    FFT per frame; the first dip under ``threshold`` (refined to the local minimum) is the period.
    """
    wav = wav.float().reshape(-1)
    frame = cfg.n_fft
    tau_min = max(2, int(cfg.sample_rate / cfg.f0_max))
    tau_max = min(frame // 2, int(cfg.sample_rate / cfg.f0_min))
    w = frame - tau_max  # integration window
    x = F.pad(wav[None, None], (frame // 2, frame // 2), mode="reflect")[0, 0]
    n_frames = wav.numel() // cfg.hop_length + 1
    need = (n_frames - 1) * cfg.hop_length + frame
    x = F.pad(x, (0, max(0, need - x.numel())))
    frames = x.unfold(0, frame, cfg.hop_length)[:n_frames]  # [T, frame]
    # r(tau) = sum_{j<w} x_j x_{j+tau} via FFT cross-correlation
    n = 2 * frame
    fx = torch.fft.rfft(frames, n)
    fw = torch.fft.rfft(frames[:, :w], n)
    r = torch.fft.irfft(fx * fw.conj(), n)[:, : tau_max + 1]
    sq = F.pad(frames.pow(2).cumsum(-1), (1, 0))
    taus = torch.arange(tau_max + 1)
    e_shift = sq[:, taus + w] - sq[:, taus]
    d = (sq[:, w : w + 1] + e_shift - 2 * r).clamp_min(0)
    d[:, 0] = 0
    cum = d[:, 1:].cumsum(-1) / taus[1:]
    cmnd = torch.ones_like(d)
    cmnd[:, 1:] = d[:, 1:] / cum.clamp_min(1e-8)
    cmnd[:, :tau_min] = 2.0
    below = cmnd < threshold
    has = below.any(-1)
    first = torch.where(has, below.float().argmax(-1), cmnd.argmin(-1))
    # refine the first dip to its local minimum (search a short window after it)
    offs = torch.arange(16)
    idx = (first[:, None] + offs).clamp(max=tau_max)
    local = cmnd.gather(1, idx)
    tau = idx.gather(1, local.argmin(-1, keepdim=True))[:, 0]
    best = cmnd.gather(1, tau[:, None])[:, 0]
    rms = frames.pow(2).mean(-1).sqrt()
    voiced = (best < 0.35) & (rms > 1e-3) & (tau >= tau_min)
    f0 = torch.where(voiced, cfg.sample_rate / tau.float().clamp_min(1), torch.zeros_like(rms))
    return f0, voiced


def features(wav: torch.Tensor, cfg: AudioConfig) -> dict[str, torch.Tensor]:
    """Everything the acoustic stage needs from one mono clip [N]: mel, log-F0 + voicing, log energy."""
    f0, voiced = yin_f0(wav, cfg)
    return {"mel": mel_spectrogram(wav, cfg), "log_f0": torch.where(voiced, f0.clamp_min(1).log(), 0.0),
            "voiced": voiced, "energy": frame_energy(wav, cfg)}
