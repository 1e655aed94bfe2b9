"""Acoustic model: FastSpeech 2 with a ProsodyModeler and a learned aligner.

* FastSpeech 2 (Ren et al. 2020, https://arxiv.org/abs/2006.04558): FFT blocks (self-attention +
  1-D convolution feed-forward) for the phoneme encoder and the mel decoder, a variance adaptor and a
  length regulator.
* ProsodyModeler: duration, pitch and energy predictors. Pitch and energy are predicted and embedded
  per *token* (averaged over the token's frames) as in FastPitch (Łańcucki 2021,
  https://arxiv.org/abs/2006.06873): cleaner targets than frame-level contours and natural controls
  (pitch shift in semitones, pitch range scale, energy scale, speed).
* Aligner: "One TTS Alignment to Rule Them All" (Badlani et al. 2022, https://arxiv.org/abs/2108.10447):
  soft text-mel attention from L2 distances, a beta-binomial prior, a forward-sum (CTC) loss, and
  monotonic alignment search (MAS, Glow-TTS https://arxiv.org/abs/2005.11129) for hard durations that
  sum exactly to the number of mel frames. So a corpus trains from audio + text alone; external
  durations (e.g. from MFA) can be passed instead.

Shapes: tokens [B, L], mels [B, n_mels, T]; hidden states are [B, L|T, D].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from aiprod_tts.config import AcousticConfig  # noqa: F401 - re-exported (was defined here)


# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------
def sinusoidal_positions(length: int, dim: int, device, dtype) -> torch.Tensor:
    """[length, dim] sinusoidal position encoding (Vaswani et al.); computed, never stored."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe.to(dtype)


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """[B] → bool [B, max_len], True on valid positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None] < lengths[:, None]


# without autograd (and not training), FFT blocks and the post-net take the inference path below; False: the
# plain ops everywhere (for comparisons, e.g. benchmarks/tts.py)
FAST_INFERENCE = True


def _tm_weight(conv: nn.Conv1d) -> torch.Tensor:
    """conv's kernel as a [C_out, k * C_in] matrix (tap-major), cached until the weight changes."""
    w = conv.weight
    key = (w.data_ptr(), w._version, w.dtype, w.device)
    cache = conv.__dict__.get("_tm_weight")
    if cache is None or cache[0] != key:
        with torch.inference_mode(False), torch.no_grad():  # a normal tensor: usable outside inference_mode
            cache = (key, w.detach().permute(0, 2, 1).reshape(w.shape[0], -1).contiguous())
        conv.__dict__["_tm_weight"] = cache
    return cache[1]


def conv_time_major(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv`` (stride 1, same padding, odd kernel) on time-major ``x [B, T, C_in]`` → ``[B, T, C_out]``, as
    one matrix product (inference path, issue 21): in time-major layout the im2col rows are overlapping
    windows of the padded input (one contiguous copy), and the [B, T, C] ↔ [B, C, T] rearranges around
    the convolution disappear. mkldnn's direct convolution ran these shapes (384 → 1344, k = 9, a few
    hundred frames) at a fifth of the matrix-multiply speed."""
    k, p = conv.kernel_size[0], conv.padding[0]
    if k == 1:
        return F.linear(x, _tm_weight(conv), conv.bias)
    B, T, C = x.shape
    xp = F.pad(x, (0, 0, p, p))
    cols = xp.as_strided((B, T, k * C), (xp.stride(0), C, 1))  # row t = frames t .. t+k-1, tap-major
    return F.linear(cols, _tm_weight(conv), conv.bias)


class FFTBlock(nn.Module):
    """Feed-Forward Transformer block: self-attention + conv FFN, pre-LayerNorm (Xiong et al. 2020) for stability."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, kernels: tuple[int, int], dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.conv1 = nn.Conv1d(dim, ffn_dim, kernels[0], padding=kernels[0] // 2)
        self.conv2 = nn.Conv1d(ffn_dim, dim, kernels[1], padding=kernels[1] // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if FAST_INFERENCE and not (self.training or torch.is_grad_enabled()):
            return self._infer(x, mask)
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + self.dropout(self.proj(rearrange(attn, "b h n d -> b n (h d)")))
        h = rearrange(self.norm2(x) * mask[..., None], "b n d -> b d n")
        h = self.conv2(self.dropout(F.relu(self.conv1(h))))
        return (x + self.dropout(rearrange(h, "b d n -> b n d"))) * mask[..., None]

    def _infer(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The same block without autograd or dropout: time-major convolutions as matrix products, no mask
        where nothing is padded (a single utterance), residual sums in place."""
        full = bool(mask.all())
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=None if full else mask[:, None, None, :])
        x = self.proj(rearrange(attn, "b h n d -> b n (h d)")).add_(x)
        h = self.norm2(x)
        if not full:
            h = h * mask[..., None]
        x = conv_time_major(F.relu_(conv_time_major(h, self.conv1)), self.conv2).add_(x)
        return x if full else x.mul_(mask[..., None])


class FFTStack(nn.Module):
    def __init__(self, cfg: AcousticConfig, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            FFTBlock(cfg.hidden, cfg.heads, cfg.ffn_dim, cfg.ffn_kernels, cfg.dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(cfg.hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x) * mask[..., None]


class VariancePredictor(nn.Module):
    """Two conv + LayerNorm + dropout layers and a linear head (FastSpeech 2 §2.3): one value per token."""

    def __init__(self, dim: int, channels: int, kernel: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(dim, channels, kernel, padding=kernel // 2)
        self.norm1 = nn.LayerNorm(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm2 = nn.LayerNorm(channels)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.conv1(rearrange(x, "b n d -> b d n"))
        h = self.dropout(self.norm1(F.relu(rearrange(h, "b c n -> b n c"))))
        h = self.conv2(rearrange(h, "b n c -> b c n"))
        h = self.dropout(self.norm2(F.relu(rearrange(h, "b c n -> b n c"))))
        return self.head(h).squeeze(-1) * mask


# ---------------------------------------------------------------------------------------
# Alignment (Badlani et al. 2022)
# ---------------------------------------------------------------------------------------
def beta_binomial_prior(text_len: int, mel_len: int, scaling: float = 1.0, device=None) -> torch.Tensor:
    """log prior [mel_len, text_len]: frame j favours token ~ j * L / T (beta-binomial, eq. 5). Computed on the fly."""
    k = torch.arange(text_len, device=device, dtype=torch.float64)[None]
    j = torch.arange(1, mel_len + 1, device=device, dtype=torch.float64)[:, None]
    a, b, n = scaling * j, scaling * (mel_len + 1 - j), text_len - 1
    lbeta = lambda x, y: torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)  # noqa: E731
    log_comb = math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    return (log_comb + lbeta(k + a, n - k + b) - lbeta(a, b)).float()


@torch.no_grad()
def monotonic_alignment_search(log_p: torch.Tensor, text_lens: torch.Tensor, mel_lens: torch.Tensor) -> torch.Tensor:
    """Most likely monotonic, surjective path through log_p [B, T, L] → hard alignment [B, T, L] (0/1).

    Each frame goes to exactly one token and each token gets >= 1 frame (needs T >= L), so the
    durations ``hard.sum(1)`` sum exactly to the frame count. Dynamic programming over frames,
    vectorised over batch and tokens.
    """
    B, T, L = log_p.shape
    neg = torch.finfo(torch.float32).min / 4
    lp = log_p.float().masked_fill(~lengths_to_mask(text_lens, L)[:, None, :], neg)
    q = torch.full((B, L), neg, device=lp.device)
    q[:, 0] = lp[:, 0, 0]
    from_prev = torch.zeros(B, T, L, dtype=torch.bool, device=lp.device)  # came from token i-1 at frame j
    for j in range(1, T):
        shifted = F.pad(q[:, :-1], (1, 0), value=neg)
        from_prev[:, j] = shifted > q
        q = torch.maximum(q, shifted) + lp[:, j]
    hard = torch.zeros(B, T, L, device=lp.device)
    cur = (text_lens - 1).clone()
    rows = torch.arange(B, device=lp.device)
    for j in range(T - 1, -1, -1):
        active = j < mel_lens
        hard[rows[active], j, cur[active]] = 1.0
        step = active & from_prev[rows, j, cur] & (cur > 0)
        cur = cur - step.long()
    return hard


class Aligner(nn.Module):
    """Soft text↔mel attention from L2 distances of learned key (text) and query (mel) projections."""

    def __init__(self, dim: int, n_mels: int, channels: int, temperature: float):
        super().__init__()
        self.temperature = temperature
        self.key = nn.Sequential(nn.Conv1d(dim, 2 * dim, 3, padding=1), nn.ReLU(), nn.Conv1d(2 * dim, channels, 1))
        self.query = nn.Sequential(nn.Conv1d(n_mels, 2 * n_mels, 3, padding=1), nn.ReLU(),
                                   nn.Conv1d(2 * n_mels, n_mels, 1), nn.ReLU(), nn.Conv1d(n_mels, channels, 1))

    def forward(self, text_emb, mels, text_mask, log_prior):
        """→ (log_scores [B, T, L] for the forward-sum loss, soft attention [B, T, L])."""
        keys = self.key(rearrange(text_emb, "b l d -> b d l"))  # [B, C, L]
        queries = self.query(mels)  # [B, C, T]
        # squared L2 distances as |q|^2 + |k|^2 - 2 q.k: [B, T, L] without a [B, C, T, L] intermediate;
        # float32 even under bf16 autocast (the temperature amplifies rounding errors)
        q, k = queries.float(), keys.float()
        dist = (q.pow(2).sum(1)[:, :, None] + k.pow(2).sum(1)[:, None, :]
                - 2 * torch.einsum("bct,bcl->btl", q, k)).clamp_min(0)
        scores = F.log_softmax(-self.temperature * dist, dim=-1) + log_prior
        scores = scores.masked_fill(~text_mask[:, None, :], float("-inf"))
        return scores, scores.softmax(-1)


def forward_sum_loss(log_scores: torch.Tensor, text_lens: torch.Tensor, mel_lens: torch.Tensor,
                     blank_logprob: float = -1.0) -> torch.Tensor:
    """CTC over the attention matrix: the likelihood of all monotonic alignments (Badlani et al. eq. 3)."""
    B, T, L = log_scores.shape
    padded = F.pad(log_scores.float(), (1, 0), value=blank_logprob)
    padded = padded.masked_fill(torch.isinf(padded), -1e4)  # padded tokens
    valid = F.pad(lengths_to_mask(text_lens, L), (1, 0), value=True)
    logp = padded.masked_fill(~valid[:, None, :], -1e4).log_softmax(-1)
    targets = torch.arange(1, L + 1, device=logp.device).expand(B, L)
    return F.ctc_loss(rearrange(logp, "b t l -> t b l"), targets, mel_lens, text_lens, blank=0,
                      reduction="mean", zero_infinity=True)


# ---------------------------------------------------------------------------------------
# The acoustic model
# ---------------------------------------------------------------------------------------
@dataclass
class AcousticOutput:
    mel: torch.Tensor  # [B, n_mels, T] (after post-net)
    mel_lens: torch.Tensor  # [B]
    durations: torch.Tensor  # [B, L] frames per token used by the length regulator
    mel_coarse: torch.Tensor | None = None  # before post-net
    log_duration_pred: torch.Tensor | None = None  # [B, L]
    pitch_pred: torch.Tensor | None = None  # [B, L] normalised log-F0 per token
    energy_pred: torch.Tensor | None = None
    pitch_target: torch.Tensor | None = None
    energy_target: torch.Tensor | None = None
    attn_log_scores: torch.Tensor | None = None  # [B, T, L]
    attn_soft: torch.Tensor | None = None
    attn_hard: torch.Tensor | None = None


def token_average(values: torch.Tensor, weights: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
    """Mean of frame values [B, T] over each token's frames (frames weighted by weights [B, T]) → [B, L]."""
    ends = durations.long().cumsum(-1)
    starts = ends - durations.long()
    csum = F.pad((values * weights).cumsum(-1), (1, 0))
    cnt = F.pad(weights.cumsum(-1), (1, 0))
    total = csum.gather(1, ends) - csum.gather(1, starts)
    n = cnt.gather(1, ends) - cnt.gather(1, starts)
    return torch.where(n > 0, total / n.clamp_min(1e-6), torch.zeros_like(total))


def length_regulate(x: torch.Tensor, durations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat token states [B, L, D] by integer durations [B, L] → frames [B, T, D], lengths [B]."""
    lens = durations.long().sum(-1)
    t_max = max(int(lens.max()), 1)
    out = x.new_zeros(x.shape[0], t_max, x.shape[2])
    for b in range(x.shape[0]):
        rep = torch.repeat_interleave(x[b], durations[b].long(), dim=0)
        out[b, : rep.shape[0]] = rep
    return out, lens


class ProsodyModeler(nn.Module):
    """Duration, pitch and energy predictors plus the pitch/energy embeddings (the variance adaptor)."""

    def __init__(self, cfg: AcousticConfig):
        super().__init__()
        args = (cfg.hidden, cfg.predictor_channels, cfg.predictor_kernel, cfg.predictor_dropout)
        self.duration = VariancePredictor(*args)
        self.pitch = VariancePredictor(*args)
        self.energy = VariancePredictor(*args)
        k = cfg.prosody_embed_kernel
        self.pitch_embed = nn.Conv1d(1, cfg.hidden, k, padding=k // 2)
        self.energy_embed = nn.Conv1d(1, cfg.hidden, k, padding=k // 2)

    def embed(self, x: torch.Tensor, pitch: torch.Tensor, energy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        p = rearrange(self.pitch_embed(pitch[:, None].to(x.dtype)), "b d l -> b l d")
        e = rearrange(self.energy_embed(energy[:, None].to(x.dtype)), "b d l -> b l d")
        return (x + p + e) * mask[..., None]


class FastSpeech2(nn.Module):
    def __init__(self, cfg: AcousticConfig, n_symbols: int, n_mels: int):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(n_symbols, cfg.hidden, padding_idx=0)
        self.encoder = FFTStack(cfg, cfg.encoder_layers)
        self.speaker = nn.Embedding(cfg.n_speakers, cfg.hidden) if cfg.n_speakers > 1 else None
        self.prosody = ProsodyModeler(cfg)
        self.decoder = FFTStack(cfg, cfg.decoder_layers)
        self.to_mel = nn.Linear(cfg.hidden, n_mels)
        self.aligner = Aligner(cfg.hidden, n_mels, cfg.aligner_channels, cfg.aligner_temperature)
        post = []
        for i in range(cfg.postnet_layers if cfg.postnet_channels else 0):
            c_in = n_mels if i == 0 else cfg.postnet_channels
            c_out = n_mels if i == cfg.postnet_layers - 1 else cfg.postnet_channels
            post += [nn.Conv1d(c_in, c_out, cfg.postnet_kernel, padding=cfg.postnet_kernel // 2)]
        self.postnet = nn.ModuleList(post)

    def encode(self, tokens, token_lens, speaker=None):
        mask = lengths_to_mask(token_lens, tokens.shape[1])
        emb = self.embed(tokens)
        h = self.encoder(emb, mask)
        if self.speaker is not None:
            spk = speaker if speaker is not None else torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
            h = h + self.speaker(spk)[:, None]
        return emb, h, mask

    def decode(self, h, durations):
        frames, mel_lens = length_regulate(h, durations)
        fmask = lengths_to_mask(mel_lens, frames.shape[1])
        if FAST_INFERENCE and not (self.training or torch.is_grad_enabled()):  # inference: time-major post-net
            coarse = self.to_mel(self.decoder(frames, fmask))  # [B, T, n_mels]
            mel = coarse
            for i, conv in enumerate(self.postnet):
                mel = conv_time_major(mel, conv)
                mel = torch.tanh_(mel) if i < len(self.postnet) - 1 else mel
            mel = (coarse + mel if len(self.postnet) else coarse) * fmask[..., None]
            return rearrange(mel, "b t m -> b m t"), rearrange(coarse * fmask[..., None], "b t m -> b m t"), mel_lens
        coarse = rearrange(self.to_mel(self.decoder(frames, fmask)), "b t m -> b m t")
        mel = coarse
        for i, conv in enumerate(self.postnet):  # Tacotron 2 post-net: residual refinement
            mel = conv(mel)
            mel = torch.tanh(mel) if i < len(self.postnet) - 1 else mel
        mel = (coarse + mel if len(self.postnet) else coarse) * fmask[:, None]
        return mel, coarse * fmask[:, None], mel_lens

    def forward(self, tokens, token_lens, mels, mel_lens, pitch, voiced, energy, speaker=None,
                durations=None) -> AcousticOutput:
        """Training forward (teacher forcing). pitch/energy are frame-level, already normalised; durations
        (e.g. from MFA) bypass the aligner's hard alignment when given."""
        emb, h, mask = self.encode(tokens, token_lens, speaker)
        log_prior = torch.full((tokens.shape[0], mels.shape[2], tokens.shape[1]), -1e4, device=h.device)
        for b in range(tokens.shape[0]):
            tl, ml = int(token_lens[b]), int(mel_lens[b])
            log_prior[b, :ml, :tl] = beta_binomial_prior(tl, ml, self.cfg.prior_scaling, h.device)
        scores, soft = self.aligner(emb, mels, mask, log_prior)
        hard = monotonic_alignment_search(soft.clamp_min(1e-12).log(), token_lens, mel_lens)
        if durations is None:
            durations = hard.sum(1).long()
        fmask = lengths_to_mask(mel_lens, mels.shape[2]).float()
        pitch_t = token_average(pitch, voiced.float() * fmask, durations)
        energy_t = token_average(energy, fmask, durations)
        log_d = self.prosody.duration(h, mask)
        p_pred, e_pred = self.prosody.pitch(h, mask), self.prosody.energy(h, mask)
        h = self.prosody.embed(h, pitch_t, energy_t, mask)
        mel, coarse, lens = self.decode(h, durations)
        return AcousticOutput(mel, lens, durations, coarse, log_d, p_pred, e_pred, pitch_t, energy_t,
                              scores, soft, hard)

    @torch.no_grad()
    def infer(self, tokens, token_lens, speaker=None, *, durations=None, speed: float = 1.0,
              pitch_shift: float = 0.0, pitch_scale: float = 1.0, energy_scale: float = 1.0,
              pitch_std: float = 1.0, energy_std: float = 1.0) -> AcousticOutput:
        """Inference with prosody controls.

        speed: durations divided by it (2 = twice as fast); pitch_shift: semitones; pitch_scale: widens
        (>1) or flattens (<1) the contour around its mean; energy_scale: multiplies frame energy.
        pitch_std/energy_std: the data statistics, to turn semitones/ratios into normalised units.
        """
        _, h, mask = self.encode(tokens, token_lens, speaker)
        log_d = self.prosody.duration(h, mask)
        if durations is None:
            d = (log_d.float().exp() - 1).clamp(0, self.cfg.max_duration_frames) / speed
            durations = torch.round(d).long() * mask
            empty = durations.sum(-1) == 0
            durations[empty, 0] = 1  # never an empty utterance
        pitch = self.prosody.pitch(h, mask).float()
        mean = (pitch * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp_min(1)
        pitch = mean + (pitch - mean) * pitch_scale + pitch_shift * math.log(2) / 12 / pitch_std
        energy = self.prosody.energy(h, mask).float() + math.log(max(energy_scale, 1e-4)) / energy_std
        h = self.prosody.embed(h, pitch * mask, energy * mask, mask)
        mel, coarse, lens = self.decode(h, durations)
        return AcousticOutput(mel, lens, durations, coarse, log_d, pitch, energy)
