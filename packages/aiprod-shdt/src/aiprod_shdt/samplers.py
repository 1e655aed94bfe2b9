"""Rectified-flow samplers as components of kind ``sampler`` (``euler``, ``heun``, ``dpm++2m``).

The one integrator of the stack: :func:`aiprod_shdt.diffusion.sample`, the ``text-to-video``
pipeline (:mod:`aiprod_pipelines.api`) and the two-stage refiner all call a sampler's
``sample(velocity_fn, noise, sigmas)``; a YAML or a pipeline names it (``sampler: heun``) and
the registry builds it. Each satisfies :class:`aiprod_core.interfaces.Sampler`.

State: ``x_s = (1 - s) x0 + s noise``; the model gives the velocity ``v = noise - x0``, so
``x0 = x - s v``.

- ``euler``: ``x += (s' - s) v`` (first order; one model call a step).
- ``heun``: Euler predictor, trapezoidal corrector (Karras et al. 2022, https://arxiv.org/abs/2206.00364,
  Alg. 1); two calls a step, one on the last step to ``s' = 0``.
- ``dpm++2m``: DPM-Solver++(2M) (Lu et al. 2022, https://arxiv.org/abs/2211.01095, Alg. 2) in data
  prediction with ``alpha = 1 - s``, ``sigma = s``, ``lambda = log(alpha / sigma)``: second order
  from the previous step's ``x0`` at the cost of one call a step. Its first step (``s = 1``, where
  ``lambda = -inf``) and its last (to ``s' = 0``) are first order, and there it equals Euler.

``callback(x, s) -> x`` edits the state before each model call (first-frame conditioning) and once
more at the end; ``on_step(i, s_next, x) -> x | None`` runs after each step (progress, previews,
``callback_on_step_end``); returning a tensor replaces the state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from pydantic import Field

from aiprod_core.config import StrictModel
from aiprod_shdt.diffusion import FlowConfig, sampling_sigmas

Callback = Callable[[torch.Tensor, float], torch.Tensor]
OnStep = Callable[[int, float, torch.Tensor], Any]


class SamplerConfig(StrictModel):
    """The fields of every sampler component (``sampler: {name: heun, preset: default, config: {...}}``)."""

    flow: FlowConfig = Field(default_factory=FlowConfig, description="token-count shift of the schedule")
    progress: bool = Field(False, description="a tqdm bar over the steps")


class FlowSampler:
    """Base: the shifted schedule, the loop, the callbacks. Subclasses write :meth:`step`."""

    name: ClassVar[str] = ""
    calls_per_step: ClassVar[int] = 1

    def __init__(self, *, flow: FlowConfig | dict | None = None, progress: bool = False):
        self.flow = flow if isinstance(flow, FlowConfig) else FlowConfig(**(flow or {}))
        self.progress = progress
        self.config = SamplerConfig(flow=self.flow, progress=progress)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def sigmas(self, steps: int, num_tokens: int) -> torch.Tensor:
        """Decreasing ``[steps + 1]`` from 1 to 0 with the token-count shift (as training draws them)."""
        return sampling_sigmas(steps, num_tokens, self.flow)

    def reset(self) -> None:
        """Forget multistep history (called at the start of every :meth:`sample`)."""

    def step(self, fn: Callable, x: torch.Tensor, s: float, s_next: float, v: torch.Tensor,
             callback: Callback | None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, velocity_fn: Callable, noise: torch.Tensor, sigmas: torch.Tensor,
               callback: Callback | None = None, on_step: OnStep | None = None) -> torch.Tensor:
        """Integrate ``dx/dsigma = velocity_fn(x, sigma [B])`` over the decreasing ``sigmas`` (float32 state)."""
        from tqdm import tqdm

        sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten()
        if len(sigmas) < 2 or bool((sigmas[1:] > sigmas[:-1]).any()):
            raise ValueError(f"sigmas must decrease, got {sigmas.tolist()}")
        self.reset()
        x = noise.float()
        b = x.shape[0]

        def fn(x: torch.Tensor, s: float) -> torch.Tensor:
            return velocity_fn(x, torch.full((b,), s, device=x.device)).float()

        for i in tqdm(range(len(sigmas) - 1), desc=f"sample ({self.name})", disable=not self.progress):
            s, s_next = float(sigmas[i]), float(sigmas[i + 1])
            if callback is not None:
                x = callback(x, s)
            x = self.step(fn, x, s, s_next, fn(x, s), callback)
            if on_step is not None:
                out = on_step(i, s_next, x)
                if isinstance(out, torch.Tensor):
                    x = out
        if callback is not None:
            x = callback(x, float(sigmas[-1]))
        return x


class EulerSampler(FlowSampler):
    name = "euler"

    def step(self, fn, x, s, s_next, v, callback):
        return x + (s_next - s) * v


class HeunSampler(FlowSampler):
    name = "heun"
    calls_per_step = 2

    def step(self, fn, x, s, s_next, v, callback):
        x_next = x + (s_next - s) * v
        if s_next <= 0:  # the corrector would evaluate the model at sigma 0 (Karras: Euler there)
            return x_next
        if callback is not None:
            x_next = callback(x_next, s_next)
        return x + (s_next - s) * 0.5 * (v + fn(x_next, s_next))


def _lambda(s: float) -> float:
    """log-SNR ``log((1 - s) / s)`` of rectified flow (``-inf`` at s = 1, ``+inf`` at 0)."""
    if s >= 1.0:
        return -math.inf
    if s <= 0.0:
        return math.inf
    return math.log(1.0 - s) - math.log(s)


class DPMSolverPP2MSampler(FlowSampler):
    name = "dpm++2m"

    def reset(self) -> None:
        self._prev: tuple[torch.Tensor, float] | None = None  # (x0 estimate, h) of the previous step

    def step(self, fn, x, s, s_next, v, callback):
        x0 = x - s * v
        if s_next <= 0:
            self._prev = None
            return x0
        h = _lambda(s_next) - _lambda(s)
        d = x0
        if self._prev is not None and math.isfinite(self._prev[1]):
            x0_prev, h_prev = self._prev
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        self._prev = (x0, h)
        # x' = (s'/s) x - alpha' (e^{-h} - 1) D, with alpha' (e^{-h} - 1) = alpha s'/s - alpha'  (finite at s = 1)
        ratio = s_next / s
        return ratio * x + ((1 - s_next) - (1 - s) * ratio) * d


SAMPLERS: dict[str, type[FlowSampler]] = {c.name: c for c in (EulerSampler, HeunSampler, DPMSolverPP2MSampler)}


def get_sampler(name: str, *, flow: FlowConfig | None = None, progress: bool = False) -> FlowSampler:
    """A sampler by name, through the registry when it knows the name (third-party samplers too)."""
    try:
        from aiprod_core.registry import get_registry

        spec = get_registry().component("sampler", name)
    except Exception:  # noqa: BLE001 - a registry without our plugin: fall back to the built-ins
        spec = None
    if spec is not None:
        sampler = spec.build("default" if "default" in spec.presets else None)
        if flow is not None and hasattr(sampler, "flow"):
            sampler.flow = flow
        sampler.progress = progress
        return sampler
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](flow=flow, progress=progress)
