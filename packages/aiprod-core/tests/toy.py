"""A small component and a pipeline used by the core's own tests."""

from __future__ import annotations

import torch
from torch import nn

from aiprod_core import ComponentSpec, PipelineSpec, RecipeSpec, hookimpl
from aiprod_core.config import StrictModel
from aiprod_core.pipeline import ComponentRef, RunContext
from aiprod_core.training import TrainConfig
from aiprod_core.weights import PretrainedMixin


class ToyConfig(StrictModel):
    dim: int = 8
    depth: int = 2


class Toy(PretrainedMixin, nn.Module):
    config_class = ToyConfig
    component_kind = "toy"
    component_name = "toy"

    def __init__(self, *, dim: int = 8, depth: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(dim, dim) for _ in range(depth))
        self.head = nn.Linear(dim, 1)
        self.register_buffer("scale", torch.full((dim,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = torch.tanh(b(x)) * self.scale + x
        return self.head(x)


class ToyPipelineConfig(StrictModel):
    model: ComponentRef
    steps: int = 1
    output: str


def run_toy(cfg: ToyPipelineConfig, ctx: RunContext) -> str:
    model = cfg.model.load(ctx)
    x = torch.randn(2, model.config.dim, generator=ctx.generator())
    for _ in range(cfg.steps):
        y = model(x.to(ctx.device, ctx.dtype))
    out = ctx.output_path(cfg.output)
    out.write_text(" ".join(f"{v:.6f}" for v in y.flatten().tolist()))
    return str(out)


class ToyTrainConfig(StrictModel):
    model: ToyConfig = ToyConfig()
    train: TrainConfig


@hookimpl
def aiprod_register_components():
    return [ComponentSpec(kind="toy", name="toy", factory=Toy, config_model=ToyConfig,
                          presets={"tiny": {"dim": 8}, "wide": {"dim": 32}})]


@hookimpl
def aiprod_register_pipelines():
    return [PipelineSpec(name="toy", config_model=ToyPipelineConfig, run=run_toy)]


@hookimpl
def aiprod_register_recipes():
    return [RecipeSpec(name="toy", config_model=ToyTrainConfig, run=lambda cfg, ctx: None)]
