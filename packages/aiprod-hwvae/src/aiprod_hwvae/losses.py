"""Training losses of HW-VAE: perceptual (VGG16), spectral (wavelet / FFT), patch discriminator.

* **Perceptual**: VGG16 (Simonyan & Zisserman 2014) written here in plain torch, features
  after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, unit-normalised over channels and
  compared with a squared distance, as LPIPS does (Zhang et al. 2018, arXiv:1801.03924;
  without its learned linear heads). Weights come from a local safetensors file whose keys
  are ``features.<i>.weight|bias`` (the torchvision layout, so a converted torchvision
  checkpoint works as is); never downloaded. Without the file the term is disabled with a
  warning and contributes 0.
* **Spectral**: L1 between the Haar pyramids (all high bands, every level) of the
  reconstruction and the target, so edges and texture are weighted per scale
  (``mode="wavelet"``), or L1 between FFT amplitudes per frame (``mode="fft"``,
  focal-frequency style, Jiang et al. 2021, arXiv:2012.12821).
* **Patch discriminator**: the pix2pix N-layer PatchGAN (Isola et al. 2017, arXiv:1611.07004)
  per frame with the hinge loss, as used by SD's and LTX's VAEs; optional.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from aiprod_core.errors import AiprodError
from aiprod_hwvae import haar

# VGG16 "D" configuration: channels per conv, "M" = 2×2 max-pool
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
# indices (in the torchvision ``features`` Sequential) of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_TAPS = (3, 8, 15, 22, 29)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    """The convolutional trunk of VGG16, same module indices as torchvision's ``features``."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x [N, 3, H, W]`` in [-1, 1] → the five tapped feature maps."""
        h = ((x + 1) / 2 - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                taps.append(h)
            if i == _TAPS[-1]:
                break
        return taps

    @classmethod
    def from_safetensors(cls, path: str | Path) -> VGG16Features:
        from safetensors.torch import load_file

        model = cls()
        state = load_file(str(path))
        state = {k if k.startswith("features.") else f"features.{k}": v for k, v in state.items()}
        state = {k: v for k, v in state.items() if k.startswith("features.")}
        expected = {k for k in model.state_dict() if k.startswith("features.")}
        missing = sorted(expected - state.keys())
        if missing:
            raise AiprodError(f"{path}: not a VGG16 features checkpoint (missing {missing[0]!r}, {len(missing)} in all)")
        model.load_state_dict({k: state[k] for k in expected}, strict=False)
        return model.requires_grad_(False).eval()


class PerceptualLoss(nn.Module):
    """LPIPS-style VGG16 distance on ``frames`` frames of each clip (all when None)."""

    def __init__(self, weights: str | Path | None, frames: int | None = 2):
        super().__init__()
        self.frames = frames
        self.vgg: VGG16Features | None = None
        if weights is None:
            warnings.warn("HW-VAE: no VGG16 weights given (loss.vgg16_weights); perceptual loss disabled",
                          stacklevel=2)
        elif not Path(weights).is_file():
            warnings.warn(f"HW-VAE: VGG16 weights {weights} not found; perceptual loss disabled", stacklevel=2)
        else:
            self.vgg = VGG16Features.from_safetensors(weights)

    @property
    def enabled(self) -> bool:
        return self.vgg is not None

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        if self.vgg is not None:
            self.vgg.eval()  # frozen feature extractor
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.vgg is None:
            return x.new_zeros(())
        t = x.shape[2]
        if self.frames is not None and self.frames < t:
            idx = torch.randperm(t, generator=generator)[: self.frames].to(x.device)
            x, y = x.index_select(2, idx), y.index_select(2, idx)
        x, y = (rearrange(v, "b c t h w -> (b t) c h w") for v in (x, y))
        loss = x.new_zeros(())
        for fx, fy in zip(self.vgg(x), self.vgg(y.detach())):
            fx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
            fy = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
            loss = loss + (fx - fy).pow(2).sum(1).mean()
        return loss


def spectral_loss(x: torch.Tensor, y: torch.Tensor, mode: str = "wavelet") -> torch.Tensor:
    """L1 in the Haar (every high band of the 3-level pyramid) or FFT-amplitude domain."""
    if mode == "fft":
        fx = torch.fft.rfft2(x.float(), norm="ortho").abs()
        fy = torch.fft.rfft2(y.float(), norm="ortho").abs()
        return (fx - fy).abs().mean()
    if mode != "wavelet":
        raise AiprodError(f"spectral loss mode {mode!r}: expected wavelet or fft")
    pyr = haar.HaarPyramid()
    c = x.shape[1]
    total = x.new_zeros(())
    for wx, wy in zip(pyr(x.float()), pyr(y.float())):
        total = total + (wx[:, c:] - wy[:, c:]).abs().mean()
    return total / len(pyr.time_levels)


class PatchDiscriminator(nn.Module):
    """pix2pix N-layer PatchGAN on single frames: ``[N, 3, H, W]`` → logits ``[N, 1, h, w]``."""

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers + 1):
            nc = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(c, nc, 4, stride, 1), nn.GroupNorm(min(32, nc // 4), nc), nn.LeakyReLU(0.2)]
            c = nc
        mods.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(rearrange(video, "b c t h w -> (b t) c h w"))


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2), over the whole batch."""
    mse = (x.float().clamp(-1, 1) - y.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(4.0 / mse)).item()
