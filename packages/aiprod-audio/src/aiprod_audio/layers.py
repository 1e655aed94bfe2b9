"""Causal, streamable building blocks: weight-normalised convolutions, Snake, LSTM.

Every layer works in two modes. Offline, a convolution pads on the left only (no look-ahead).
In streaming mode (``StreamingModule.streaming = True``) it keeps the tail of its input
(or, for a transposed convolution, the overlap-add tail of its output) between calls, so
feeding a signal chunk by chunk gives the same result as the offline pass. Chunk lengths must
be multiples of the layer's stride (the codec guarantees this).

Weight normalisation (Salimans & Kingma 2016) is written out as two plain parameters
``weight_g``/``weight_v`` so the state dict is simple and meta-device loading just assigns them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class StreamingModule(nn.Module):
    """A module with state carried between streaming calls (reset by the codec)."""

    streaming: bool = False

    def reset_state(self) -> None:
        self._state = None


def _init_weight_norm(module: nn.Module, shape: tuple[int, ...], fan_in: int, norm_dims: tuple[int, ...]) -> None:
    # Variance-preserving init (std 1/sqrt(fan_in)) with zero biases. PyTorch's default (a third of the
    # variance per layer) shrinks a 24-layer codec's output to ~1e-5: with weight normalisation Adam then
    # needs thousands of steps just to grow the gains; with its random biases the latents also stop
    # varying in time and every codebook collapses. Residual branches start small instead (see below).
    bound = math.sqrt(3.0 / fan_in)
    v = torch.empty(shape).uniform_(-bound, bound)
    module.weight_v = nn.Parameter(v)
    module.weight_g = nn.Parameter(v.norm(dim=norm_dims, keepdim=True))
    module._norm_dims = norm_dims


def _weight(module: nn.Module) -> torch.Tensor:
    v = module.weight_v
    return module.weight_g * v / v.norm(dim=module._norm_dims, keepdim=True).clamp_min(1e-12)


class CausalConv1d(StreamingModule):
    """Conv1d padded on the left by ``(k - 1) * d - (s - 1)`` (EnCodec's causal padding):
    for an input length divisible by ``stride`` the output length is ``N / stride``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        _init_weight_norm(self, (out_channels, in_channels, kernel_size), in_channels * kernel_size, (1, 2))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.stride, self.dilation = stride, dilation
        self.pad = (kernel_size - 1) * dilation - (stride - 1)
        self._state: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.streaming:
            if self._state is None:
                self._state = x.new_zeros(x.shape[0], x.shape[1], self.pad)
            x = torch.cat([self._state, x], dim=-1)
            self._state = x[..., x.shape[-1] - self.pad :]
        else:
            x = F.pad(x, (self.pad, 0))
        return F.conv1d(x, _weight(self), self.bias, self.stride, dilation=self.dilation)


class CausalConvTranspose1d(StreamingModule):
    """ConvTranspose1d (kernel ``2 * stride``) whose right overhang is cut offline and
    carried to the next chunk (overlap-add) when streaming: ``L`` frames -> ``L * stride`` samples."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        k = 2 * stride
        _init_weight_norm(self, (in_channels, out_channels, k), in_channels * 2, (1, 2))  # fan-in: 2 taps/sample
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.stride = stride
        self._state: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv_transpose1d(x, _weight(self), None, self.stride)
        n = x.shape[-1] * self.stride
        if self.streaming:
            if self._state is not None:
                t = self._state.shape[-1]
                y = torch.cat([y[..., :t] + self._state, y[..., t:]], dim=-1)
            self._state = y[..., n:]
        return y[..., :n] + self.bias[:, None]


class Snake(nn.Module):
    """``x + sin^2(alpha x) / alpha`` with a learned per-channel ``alpha`` (Ziyin et al. 2020,
    https://arxiv.org/abs/2006.08195): a periodic inductive bias DAC showed helps audio."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, torch.sin(self.alpha * x).square(), (self.alpha + 1e-9).reciprocal())


class ResidualUnit(nn.Module):
    """Snake -> dilated causal conv (k=7) -> Snake -> 1x1 conv, plus the identity."""

    def __init__(self, channels: int, dilation: int, kernel_size: int = 7):
        super().__init__()
        out = CausalConv1d(channels, channels, 1)
        with torch.no_grad():
            out.weight_g.mul_(0.1)  # near-identity residual at init (Fixup, https://arxiv.org/abs/1901.09321)
        self.block = nn.Sequential(
            Snake(channels),
            CausalConv1d(channels, channels, kernel_size, dilation=dilation),
            Snake(channels),
            out,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class CausalLSTM(StreamingModule):
    """Unidirectional LSTM with a skip connection over ``[B, C, F]`` (EnCodec's bottleneck);
    streaming carries ``(h, c)``."""

    def __init__(self, channels: int, num_layers: int):
        super().__init__()
        self.lstm = nn.LSTM(channels, channels, num_layers, batch_first=True)
        self._state = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.transpose(1, 2)
        out, state = self.lstm(seq, self._state if self.streaming else None)
        if self.streaming:
            self._state = state
        return x + out.transpose(1, 2)
