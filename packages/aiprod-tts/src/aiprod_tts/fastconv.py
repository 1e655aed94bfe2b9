"""Inference-only convolution paths of the HiFi-GAN generator (issue 21).

Taken when autograd is off (``torch.no_grad`` / ``torch.inference_mode``); training keeps the plain
differentiable modules. Same parameters, same state dict, outputs equal to the plain path within float
rounding (tested):

* **weight norm folded once**: the weight-normalised kernel of a ``parametrizations.weight_norm`` module
  is computed once and cached, keyed on the storage and version counter of its ``original0``/``original1``
  (so ``load_state_dict``, an optimizer step or ``.to()`` invalidate it), instead of at every call;
* **FFT convolution** (overlap-save) for the wide-kernel residual convolutions: a ``k``-tap convolution of
  ``C`` channels costs ``k·C²`` multiply-adds per sample directly, and about ``4·C²·(N/2+1)/(N-k+1)`` (≈ 2.2
  C² at ``N = 128``, ``k = 11``) as a per-frequency complex matrix product of ``N``-point blocks, plus the
  transforms (``O(C log N)`` per sample). A dilated convolution is run as ``d`` undilated polyphase
  convolutions (strided views, no copy), so its block size does not grow with the dilation. The
  frequency-domain kernels are cached like the folded weights (about ``(N/2+1)·C²·8`` bytes per
  convolution). On this AVX2 CPU direct convolutions already run near the matrix-multiply peak
  (mkldnn, ~70-85 GFLOP/s a core), so fewer multiply-adds is the only way left to a faster vocoder.
  Which path a convolution takes is :func:`fft_size`'s choice (per channel count and kernel size,
  from the measurements in ``/work/notes/s4/tts-speed.md``); set ``FFT_MIN_KERNEL`` to ``math.inf`` to
  turn the FFT path off, or it and ``FFT_MIN_WORK`` to 0 to force it (tests).
* the FFT path is for float32 on CPU (where it was measured); other devices and dtypes take the direct
  convolution with the folded weight;
* the leaky ReLU in front of each convolution is written straight into the convolution's padded input
  buffer (one pass instead of activation + pad).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# the FFT path is used for a convolution with at least FFT_MIN_KERNEL taps and kernel * channels >= FFT_MIN_WORK:
# measured on a 2-core AVX2 EPYC (1 thread), it is 1.5-3.4x faster for k >= 7 at 64-256 channels and 1.3x
# for k = 11 at 32 channels; slower for k = 3 (any dilation, any width) and for k = 7 at 32 channels.
FFT_MIN_KERNEL: float = 7
FFT_MIN_WORK: float = 11 * 32


def _key(t: torch.Tensor) -> tuple:
    return (t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))


def folded_weight(module: nn.Module) -> torch.Tensor:
    """The module's effective weight (weight norm folded), cached until a parameter changes."""
    par = getattr(module, "parametrizations", None)
    if par is None or "weight" not in par:
        return module.weight
    p = par.weight
    key = (_key(p.original0), _key(p.original1))
    cache = module.__dict__.get("_folded_weight")
    if cache is None or cache[0] != key:
        with torch.inference_mode(False), torch.no_grad():  # a normal tensor: usable outside inference_mode
            w = module.weight.detach().clone()
        module.__dict__["_folded_weight"] = cache = (key, w)
        module.__dict__.pop("_freq_weight", None)
    return cache[1]


def fft_size(channels: int, kernel: int) -> int | None:
    """Block size of the FFT path for a ``channels`` → ``channels`` convolution with ``kernel`` taps, or None
    for the direct path."""
    if kernel < FFT_MIN_KERNEL or kernel * channels < FFT_MIN_WORK:
        return None
    return 64 if channels >= 256 else 128


def _freq_weight(module: nn.Module, n_fft: int) -> torch.Tensor:
    """[n_fft // 2 + 1, C_out, C_in] complex: the flipped kernel's spectrum (cross-correlation as a circular
    convolution whose last ``n_fft - k + 1`` outputs are valid), cached with the folded weight."""
    w = folded_weight(module)
    cache = module.__dict__.get("_freq_weight")
    if cache is None or cache[0] is not w or cache[1] != n_fft:
        with torch.inference_mode(False), torch.no_grad():
            wf = torch.fft.rfft(w.float().flip(-1), n=n_fft, dim=-1).permute(2, 0, 1).contiguous()
        module.__dict__["_freq_weight"] = cache = (w, n_fft, wf)
    return cache[2]


def _fft_conv(x: torch.Tensor, wf: torch.Tensor, bias: torch.Tensor | None, k: int, d: int, n_fft: int,
              slope: float | None) -> torch.Tensor:
    """Same-padded conv1d of ``x [C, T]`` (after a leaky ReLU of ``slope`` when given) by overlap-save FFT."""
    C, T = x.shape
    Fq, Co, _ = wf.shape
    p = (k - 1) * d // 2
    L = n_fft - k + 1  # valid outputs per block
    nb = -(-T // (d * L))  # blocks per polyphase component
    total = d * (nb * L + k - 1)
    xp = x.new_empty(C, total, dtype=torch.float32)  # padded (and activated) input, one pass
    xp[:, :p].zero_()
    xp[:, p + T :].zero_()
    if slope is None:
        xp[:, p : p + T].copy_(x)
    else:
        torch.ops.aten.leaky_relu.out(x, slope, out=xp[:, p : p + T])
    # block n of polyphase component r: xp[c, r + d * (n * L + j)], j < n_fft (a strided view, no copy)
    blocks = xp.as_strided((C, n_fft, d, nb), (xp.stride(0), d, 1, d * L))
    # the transform along a middle dim: 2-3x faster than along the first (frequency-major output) here
    X = torch.empty(C, Fq, d, nb, dtype=torch.complex64, device=x.device)
    torch.fft.rfft(blocks, dim=1, out=X)
    # one batched complex product over the frequencies, on X seen frequency-major ([Fq, C, d * nb], rows of
    # unit stride: BLAS takes it as is, measured as fast as a contiguous copy)
    Y = torch.matmul(wf, X.view(C, Fq, d * nb).transpose(0, 1))
    del X, xp, blocks  # free the input spectrum before the inverse transform allocates (peak memory)
    y = torch.fft.irfft(Y, n=n_fft, dim=0)  # [n_fft, Co, d * nb]
    del Y
    out = x.new_empty(Co, nb, L, d, dtype=torch.float32)  # out[co, n, i, r] = output at d * (n * L + i) + r
    src = y[k - 1 :].view(L, Co, d, nb).permute(1, 3, 0, 2)
    if bias is None:
        out.copy_(src)
    else:
        torch.add(src, bias.float()[:, None, None, None], out=out)
    return out.view(Co, nb * L * d)[:, :T].to(x.dtype)


def conv1d(conv: nn.Conv1d, x: torch.Tensor, slope: float | None = None, inplace: bool = False) -> torch.Tensor:
    """``conv(leaky_relu(x, slope))`` (``slope=None``: no activation) on the inference path: folded weight,
    FFT or direct. ``x`` is not modified unless ``inplace`` (then the direct path activates it in place)."""
    w = folded_weight(conv)
    co, ci, k = w.shape
    d = conv.dilation[0]
    n_fft = fft_size(ci, k) if co == ci and conv.stride[0] == 1 and conv.groups == 1 and k % 2 == 1 \
        and conv.padding[0] == (k - 1) * d // 2 and x.dtype == torch.float32 and x.device.type == "cpu" else None
    if n_fft is None or x.shape[-1] < 2:
        h = x if slope is None else F.leaky_relu_(x, slope) if inplace else F.leaky_relu(x, slope)
        return F.conv1d(h, w, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    wf = _freq_weight(conv, n_fft)
    return torch.stack([_fft_conv(xb, wf, conv.bias, k, d, n_fft, slope) for xb in x]) if x.shape[0] > 1 \
        else _fft_conv(x[0], wf, conv.bias, k, d, n_fft, slope)[None]


def conv_transpose1d(conv: nn.ConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` with the folded weight."""
    return F.conv_transpose1d(x, folded_weight(conv), conv.bias, conv.stride, conv.padding, conv.output_padding,
                              conv.groups, conv.dilation)


def fft_cache_bytes(module: nn.Module) -> int:
    """Bytes held by the cached frequency-domain kernels under ``module``."""
    return sum(m.__dict__["_freq_weight"][2].nbytes for m in module.modules() if "_freq_weight" in m.__dict__)


__all__ = ["FFT_MIN_KERNEL", "FFT_MIN_WORK", "conv1d", "conv_transpose1d", "fft_cache_bytes", "fft_size", "folded_weight"]
