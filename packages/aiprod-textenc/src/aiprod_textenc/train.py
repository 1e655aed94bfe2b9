"""Training recipe ``text-encoder``: the short prompt, read as the long caption.

``aiprod train configs/train/text_encoder.yaml``. Data: (prompt, caption) pairs, JSONL.
Trainable: the LoRA adapters and the projection (the Gemma 3 base stays frozen). The loop,
checkpoints and exact resume are :mod:`aiprod_core.training`'s.

Objective (:func:`alignment_loss`). For a pair, the *teacher* is the frozen base (LoRA
disabled) read through the **anchor**, a frozen copy of the projection as the run started (the
preset's seeded init, or ``init_weights``' head): ``t = P0(G(caption))`` in ``[Lc, D]``; the *student*
is the adapted encoder on the prompt through the trained projection: ``s = P(G_lora(prompt))`` in
``[Lp, D]``. A target read through the *current* projection (``sg(P(G(caption)))``, the first version
of this recipe) lets both sides move together, and collapse is one of its minima: the mean cosine
between a caption's tokens went 0.41 → 0.97 in 300 steps and the denoiser trained on them ignored its
prompt. The anchored target cannot move, so the student can only match it, not drag it. With masked means ``s̄, t̄`` and ``cos`` the cosine:

    L_cos = 1 - cos(s̄, t̄)                                   pooled direction
    L_mse = ||s̄ - t̄||² / D                                  pooled value (scale set by the final RMSNorm)
    P = mean_i max_j cos(s_i, t_j),  R = mean_j max_i cos(s_i, t_j),  L_tok = 1 - 2PR / (P + R)
                                                              token-level alignment (BERTScore F1,
                                                              Zhang et al. 2020, arXiv:1904.09675)
    L_nce = cross-entropy over the batch of cos(s̄_a - c, t̄_b - c) / tau, target a = b   (InfoNCE,
            c = batch mean of t̄, detached: pooled texts share one dominant direction, which
            would otherwise leave every logit equal)

    L = w_cos L_cos + w_mse L_mse + w_tok L_tok + w_nce L_nce     (each averaged over the batch)

InfoNCE (batch >= 2) also keeps the student's texts apart from each other. The
loss is exposed for joint training with SHDT: add ``alignment_loss`` to the denoiser's loss
and let the projection also receive the denoiser's gradient.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError
from aiprod_core.training import StepContext, TrainConfig, Trainer, TrainTask
from aiprod_textenc import data as D
from aiprod_textenc.model import Gemma3LoraTextEncoder
from aiprod_textenc.presets import PRESETS


class ModelSection(StrictModel):
    """The encoder to train: a preset + overrides (``config.base_path``), or a component folder."""

    preset: str = "v1"
    config: dict[str, Any] = {}
    init_weights: str | None = Field(None, description="component folder to continue from (its base is checked)")

    @model_validator(mode="after")
    def _known(self) -> ModelSection:
        if self.init_weights is None and self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} unknown (known: {', '.join(PRESETS)})")
        return self


class DataSection(StrictModel):
    source: Literal["jsonl", "synthetic"] = "jsonl"
    train_jsonl: str | None = Field(None, description="JSONL of {prompt, caption}")
    eval_jsonl: str | None = Field(None, description="held-out pairs; None = the last eval_size training lines")
    eval_size: int = Field(64, ge=1, description="held-out pairs evaluated (the first of eval_jsonl, if given)")
    synthetic_size: int = Field(256, ge=2, description="synthetic: number of pairs")

    @model_validator(mode="after")
    def _files(self) -> DataSection:
        if self.source == "jsonl" and self.train_jsonl is None:
            raise ValueError("source 'jsonl' needs train_jsonl")
        return self


class LossSection(StrictModel):
    pooled_cosine: float = Field(1.0, ge=0)
    pooled_mse: float = Field(1.0, ge=0)
    token: float = Field(1.0, ge=0, description="weight of 1 - BERTScore-F1 between token sets")
    contrastive: float = Field(0.1, ge=0, description="InfoNCE weight (needs batch_size >= 2)")
    temperature: float = Field(0.05, gt=0)


class TextEncoderTrainConfig(StrictModel):
    """``recipe: text-encoder``."""

    model: ModelSection = ModelSection()
    data: DataSection
    loss: LossSection = LossSection()
    train: TrainConfig

    @model_validator(mode="after")
    def _batch(self) -> TextEncoderTrainConfig:
        if self.loss.contrastive > 0 and self.train.batch_size < 2:
            raise ValueError("loss.contrastive > 0 needs train.batch_size >= 2 (in-batch negatives)")
        return self


# -- the objective -----------------------------------------------------------------------------
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[..., None].to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def alignment_loss(student: torch.Tensor, s_mask: torch.Tensor, teacher: torch.Tensor, t_mask: torch.Tensor,
                   w: LossSection) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of the module docstring; ``teacher`` must already be detached. Returns (loss, parts)."""
    student, teacher = student.float(), teacher.float()
    s_bar, t_bar = masked_mean(student, s_mask), masked_mean(teacher, t_mask)
    l_cos = (1 - F.cosine_similarity(s_bar, t_bar, dim=-1)).mean()
    l_mse = (s_bar - t_bar).pow(2).mean(-1).mean()
    sim = torch.einsum("bid,bjd->bij", F.normalize(student, dim=-1), F.normalize(teacher, dim=-1))
    pair = s_mask[:, :, None] & t_mask[:, None, :]
    sim = sim.masked_fill(~pair, -2.0)  # below any cosine: never a max
    precision = masked_mean(sim.amax(2)[..., None], s_mask)[:, 0]
    recall = masked_mean(sim.amax(1)[..., None], t_mask)[:, 0]
    l_tok = (1 - 2 * precision * recall / (precision + recall).clamp_min(1e-6)).mean()
    loss = w.pooled_cosine * l_cos + w.pooled_mse * l_mse + w.token * l_tok
    parts = {"loss_cos": l_cos.item(), "loss_mse": l_mse.item(), "loss_tok": l_tok.item()}
    if w.contrastive > 0 and student.shape[0] > 1:
        centre = t_bar.mean(0, keepdim=True).detach()  # remove the direction every text shares
        logits = F.normalize(s_bar - centre, dim=-1) @ F.normalize(t_bar - centre, dim=-1).T / w.temperature
        l_nce = F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))
        loss = loss + w.contrastive * l_nce
        parts["loss_nce"] = l_nce.item()
    parts["loss"] = loss.item()
    return loss, parts


def build_model(section: ModelSection, seed: int) -> Gemma3LoraTextEncoder:
    if section.init_weights is not None:
        return Gemma3LoraTextEncoder.from_pretrained(section.init_weights, base_path=section.config.get("base_path"))
    with torch.random.fork_rng(devices=[]):  # seeded, side-effect free LoRA / projection init
        torch.manual_seed(seed)
        return Gemma3LoraTextEncoder(**{**PRESETS[section.preset], **section.config})


class TextEncoderTask(TrainTask):
    def __init__(self, cfg: TextEncoderTrainConfig):
        self.cfg = cfg
        d = cfg.data
        if d.source == "synthetic":
            pairs = D.synthetic_pairs(d.synthetic_size, seed=cfg.train.seed)
            self.pairs, self.eval_pairs = pairs[: -d.eval_size], pairs[-d.eval_size:]
        else:
            pairs = D.read_pairs(d.train_jsonl)
            if d.eval_jsonl is not None:
                self.pairs, self.eval_pairs = pairs, D.read_pairs(d.eval_jsonl)[: d.eval_size]
            else:
                self.pairs, self.eval_pairs = pairs[: -d.eval_size], pairs[-d.eval_size:]
        if not self.pairs:
            raise AiprodError(f"data: no training pairs left after holding out eval_size={d.eval_size}")
        self.model = build_model(cfg.model, cfg.train.seed)
        self.model.train()
        # the teacher's head: the projection as the run starts, frozen (rebuilt identically on resume,
        # since the start is a pure function of the config); see the module docstring
        self.anchor = copy.deepcopy(self.model.projection).requires_grad_(False).eval()

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def _tokens(self, pairs: list[D.Pair]) -> dict[str, torch.Tensor]:
        p_ids, p_mask = self.model.tokenize([p for p, _ in pairs])
        c_ids, c_mask = self.model.tokenize([c for _, c in pairs])
        return {"prompt_ids": p_ids, "prompt_mask": p_mask, "caption_ids": c_ids, "caption_mask": c_mask}

    def make_batch(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if getattr(self, "_indices", None) is None:  # epochs over the pairs, ranks disjoint (aiprod_core.data)
            from aiprod_core.data import StepIndices

            self._indices = StepIndices(len(self.pairs), self.cfg.train.batch_size, self.cfg.train.seed,
                                        self.cfg.train.grad_accum_steps)
        return self._tokens([self.pairs[i] for i in self._indices(step)])

    def teacher(self, ctx: StepContext, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The anchored target: the frozen base (LoRA off) through the frozen start-of-run projection."""
        anchor = self.anchor.to(ids.device)
        with torch.no_grad(), ctx.raw["model"].adapter_disabled(), ctx.autocast():
            return ctx.modules["model"](ids, mask, projection=anchor)[0].float()

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, float]:
        target = self.teacher(ctx, batch["caption_ids"], batch["caption_mask"])
        with ctx.autocast():
            student, _ = ctx.modules["model"](batch["prompt_ids"], batch["prompt_mask"])
        loss, metrics = alignment_loss(student, batch["prompt_mask"], target, batch["caption_mask"], self.cfg.loss)
        metrics["grad_norm"] = ctx.backward_step("model", loss)
        return metrics

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        """Held-out loss parts (mean over chunks of ``batch_size``), pooled cosine and prompt→caption
        retrieval top-1 among all held-out pairs (centred pooled vectors), for the adapted encoder
        and for the unadapted base on the prompt (``*_base``), with the same projection."""
        model, n = ctx.raw["model"], self.cfg.train.batch_size
        sums: dict[str, float] = {}
        pooled: dict[str, list[torch.Tensor]] = {"t": [], "": [], "_base": []}
        chunks = [self.eval_pairs[i : i + n] for i in range(0, len(self.eval_pairs), n)]
        for chunk in chunks:
            batch = {k: v.to(ctx.device) for k, v in self._tokens(chunk).items()}
            target = self.teacher(ctx, batch["caption_ids"], batch["caption_mask"])
            pooled["t"].append(masked_mean(target, batch["caption_mask"]))
            for suffix, adapted in (("", True), ("_base", False)):
                with contextlib.nullcontext() if adapted else model.adapter_disabled(), ctx.autocast():
                    s = model(batch["prompt_ids"], batch["prompt_mask"])[0].float()
                _, parts = alignment_loss(s, batch["prompt_mask"], target, batch["caption_mask"], self.cfg.loss)
                for k, v in parts.items():
                    sums[f"{k}{suffix}"] = sums.get(f"{k}{suffix}", 0.0) + v * len(chunk)
                pooled[suffix].append(masked_mean(s, batch["prompt_mask"]))
        out = {k: v / len(self.eval_pairs) for k, v in sums.items()}
        t_bar = torch.cat(pooled["t"])
        centre = t_bar.mean(0, keepdim=True)
        t_bar = F.normalize(t_bar - centre, dim=-1)
        for suffix in ("", "_base"):
            s_bar = F.normalize(torch.cat(pooled[suffix]) - centre, dim=-1)
            sims = s_bar @ t_bar.T
            out[f"cos{suffix}"] = sims.diagonal().mean().item()
            out[f"top1{suffix}"] = (sims.argmax(1) == torch.arange(len(sims), device=sims.device)).float().mean().item()
        return out


def run(config: TextEncoderTrainConfig, ctx) -> dict[str, Any]:
    """Recipe entry point for ``aiprod train``."""
    task = TextEncoderTask(config)
    counts = task.model.trainable_parameters()
    if not ctx.quiet:
        print(f"text-encoder: base {counts['base']:,} (frozen), LoRA {counts['lora']:,}, "
              f"projection {counts['projection']:,} trainable; {len(task.pairs)} train / "
              f"{len(task.eval_pairs)} eval pairs")
    metrics = Trainer(config.train, task).fit()
    if not ctx.quiet:
        print(f"text-encoder: done at step {metrics['step']}; component in {Path(config.train.output_dir) / 'final' / 'model'}")
    return metrics
