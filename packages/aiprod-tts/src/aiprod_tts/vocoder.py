"""HiFi-GAN vocoder (Kong et al. 2020, https://arxiv.org/abs/2010.05646): generator and discriminators.

Generator: transposed-conv upsampling by ``upsample_rates`` (product = hop length) with multi-receptive-field
fusion (MRF) residual blocks; V1 = 512 initial channels, kernels (3, 7, 11), dilations (1, 3, 5). With an
``istft`` head (iSTFTNet, Kaneko et al. 2022, https://arxiv.org/abs/2203.02395) the last upsampling stages are
replaced by an inverse STFT: the last convolution gives a magnitude and a phase spectrum per frame (the
paper's C8C8I: rates 8·8, n_fft 16, hop 4, V1's quality in about half its multiply-adds; ``v1`` here: rates 8·4,
n_fft 32, hop 8, a third of V1's time).
Discriminators: multi-period (periods 2, 3, 5, 7, 11) and multi-scale (raw, ×2 and ×4 average-pooled).
Losses: least-squares GAN, feature matching (×2) and mel L1 (×45), as in the paper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from aiprod_tts import fastconv
from aiprod_tts.config import VocoderConfig  # noqa: F401 - re-exported (was defined here)

LRELU = 0.1


def _pad(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock(nn.Module):
    """HiFi-GAN ResBlock1: per dilation, a dilated conv then a plain conv, each after a leaky ReLU."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_pad(kernel, d)))
                                    for d in dilations)
        self.convs2 = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel, padding=_pad(kernel)))
                                    for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or not HiFiGANGenerator.fast_inference:
            for c1, c2 in zip(self.convs1, self.convs2):
                x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU)), LRELU))
            return x
        # inference (fastconv): folded weights, FFT convolution for wide kernels, activation fused into the
        # padding; the input x itself is never modified (the parallel blocks of the MRF all read it)
        for c1, c2 in zip(self.convs1, self.convs2):
            x = fastconv.conv1d(c2, fastconv.conv1d(c1, x, LRELU), LRELU, inplace=True).add_(x)
        return x


class HiFiGANGenerator(nn.Module):
    """log-mel [B, n_mels, T] → waveform [B, 1, T * prod(upsample_rates)] in [-1, 1]."""

    # class switch: without autograd, take the fastconv path (False: the plain ops, for comparison)
    fast_inference: bool = True

    def __init__(self, cfg: VocoderConfig, n_mels: int):
        super().__init__()
        ch = cfg.upsample_initial_channel
        self.conv_pre = weight_norm(nn.Conv1d(n_mels, ch, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        self.n_kernels = len(cfg.resblock_kernel_sizes)
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            c_in, c_out = ch // 2**i, ch // 2 ** (i + 1)
            self.ups.append(weight_norm(nn.ConvTranspose1d(c_in, c_out, k, u, padding=(k - u) // 2)))
            for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilations):
                self.resblocks.append(ResBlock(c_out, rk, tuple(rd)))
        self.istft = cfg.istft
        self.conv_post = weight_norm(nn.Conv1d(ch // 2 ** len(cfg.upsample_rates), cfg.post_channels, 7, padding=3))

    def context_frames(self) -> int:
        """Mel frames either side of a frame that can reach its output samples (an upper bound of the
        receptive field's half-width, plus one): vocoding a chunk with this much context on both sides gives
        the whole-signal result to float rounding. HiFi-GAN V1: 16; the demo voice: 9."""
        half = (self.conv_pre.kernel_size[0] - 1) / 2  # frames
        hop = 1
        for i, up in enumerate(self.ups):
            k, u = up.kernel_size[0], up.stride[0]
            half += math.ceil(k / u) / hop  # input samples (at the rate before upsampling) one output sees
            hop *= u
            blocks = self.resblocks[i * self.n_kernels : (i + 1) * self.n_kernels]
            half += max(sum((c1.kernel_size[0] - 1) * c1.dilation[0] // 2 + (c2.kernel_size[0] - 1) // 2
                            for c1, c2 in zip(b.convs1, b.convs2)) for b in blocks) / hop
        half += (self.conv_post.kernel_size[0] - 1) / 2 / hop
        if self.istft:  # an output sample sums the frames whose n_fft-sample windows cover it
            half += self.istft.n_fft / 2 / self.istft.hop / hop
        return math.ceil(half) + 1

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() and HiFiGANGenerator.fast_inference:
            return self._infer(mel)
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU))
            # multi-receptive-field fusion: average of the parallel residual blocks
            blocks = self.resblocks[i * self.n_kernels : (i + 1) * self.n_kernels]
            x = sum(block(x) for block in blocks) / self.n_kernels
        # the paper's final leaky ReLU uses the default slope 0.01
        return self._head(self.conv_post(F.leaky_relu(x)))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolution's output [B, C, T'] → waveform [B, 1, T' * istft.hop]: tanh (HiFi-GAN), or
        the inverse STFT of exp(log-magnitude) at the predicted phase (in float32: no half-precision FFT on
        every device). The iSTFT's wave is not squashed (the synthesizer clips it to [-1, 1])."""
        if self.istft is None:
            return torch.tanh(x)
        n, hop = self.istft.n_fft, self.istft.hop
        bins = n // 2 + 1
        x = x.float()
        # exp of the log-magnitude bounded (Vocos clips the magnitude at 100 the same way)
        spec = torch.polar(torch.exp(x[:, :bins].clamp(max=math.log(100.0))), x[:, bins:])
        window = torch.hann_window(n, device=x.device)
        wav = torch.istft(spec, n, hop, n, window=window, center=True, length=x.shape[-1] * hop)
        return wav[:, None]

    def _infer(self, mel: torch.Tensor) -> torch.Tensor:
        """The same pass without autograd (see ``fastconv``): folded weights, FFT convolutions, in place."""
        x = fastconv.conv1d(self.conv_pre, mel)
        for i, up in enumerate(self.ups):
            x = fastconv.conv_transpose1d(up, F.leaky_relu(x, LRELU))
            blocks = self.resblocks[i * self.n_kernels : (i + 1) * self.n_kernels]
            acc = blocks[0](x)
            for block in blocks[1:]:
                acc.add_(block(x))
            x = acc.div_(self.n_kernels)
        return self._head(fastconv.conv1d(self.conv_post, x, 0.01))


# ---------------------------------------------------------------------------------------
# Discriminators (training only; not part of the saved synthesizer)
# ---------------------------------------------------------------------------------------
def _conv_stack(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU conv stack + output conv: (flattened logits, every layer's features for feature matching)."""
    feats = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU)
        feats.append(x)
    x = post(x)
    feats.append(x)
    return x.flatten(1), feats


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, width: float = 1.0):
        super().__init__()
        self.period = period
        chans = (1, *(max(1, int(c * width)) for c in (32, 128, 512, 1024)))
        self.convs = nn.ModuleList(weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0)))
                                   for a, b in zip(chans[:-1], chans[1:]))
        self.convs.append(weight_norm(nn.Conv2d(chans[-1], chans[-1], (5, 1), 1, padding=(2, 0))))
        self.post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor):
        n = x.shape[-1]
        if n % self.period:
            x = F.pad(x, (0, self.period - n % self.period), mode="reflect")
        x = rearrange(x, "b c (t p) -> b c t p", p=self.period)
        return _conv_stack(self.convs, self.post, x)


class ScaleDiscriminator(nn.Module):
    def __init__(self, norm=weight_norm, width: float = 1.0):
        super().__init__()
        w = lambda c: max(1, int(c * width)) if c > 1 else c  # noqa: E731
        spec = [(1, 128, 15, 1, 1), (128, 128, 41, 2, 4), (128, 256, 41, 2, 16), (256, 512, 41, 4, 16),
                (512, 1024, 41, 4, 16), (1024, 1024, 41, 1, 16), (1024, 1024, 5, 1, 1)]
        self.convs = nn.ModuleList(norm(nn.Conv1d(w(a), w(b), k, s, groups=min(g, w(a), w(b)), padding=k // 2))
                                   for a, b, k, s, g in spec)
        self.post = norm(nn.Conv1d(w(1024), 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor):
        return _conv_stack(self.convs, self.post, x)


class HiFiGANDiscriminator(nn.Module):
    """MPD + MSD. ``width`` multiplies every channel count (a power of two below 1 for tiny configs);
    1.0 is the paper's size (about 70M parameters, training only)."""

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11), scales: int = 3, width: float = 1.0):
        super().__init__()
        self.mpd = nn.ModuleList(PeriodDiscriminator(p, width) for p in periods)
        # the first scale discriminator sees raw audio and uses spectral norm (paper §2.3)
        self.msd = nn.ModuleList(ScaleDiscriminator(spectral_norm if i == 0 else weight_norm, width)
                                 for i in range(scales))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, wav: torch.Tensor):
        outs, feats = [], []
        for d in self.mpd:
            o, f = d(wav)
            outs.append(o)
            feats.append(f)
        x = wav
        for i, d in enumerate(self.msd):
            if i:
                x = self.pool(x)
            o, f = d(x)
            outs.append(o)
            feats.append(f)
        return outs, feats


def discriminator_loss(real_outs, fake_outs) -> torch.Tensor:
    return sum(torch.mean((1 - r) ** 2) + torch.mean(f**2) for r, f in zip(real_outs, fake_outs))


def generator_adv_loss(fake_outs) -> torch.Tensor:
    return sum(torch.mean((1 - f) ** 2) for f in fake_outs)


def feature_matching_loss(real_feats, fake_feats) -> torch.Tensor:
    return 2 * sum(F.l1_loss(f, r.detach()) for rs, fs in zip(real_feats, fake_feats) for r, f in zip(rs, fs))
