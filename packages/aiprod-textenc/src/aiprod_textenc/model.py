"""AIPROD-Text-Encoder v1: a frozen Gemma 3 + LoRA, and a connector into SHDT's text width.

    prompts ──tokenizer.json──▶ Gemma 3 (frozen, + LoRA r=32 on attention and MLP)
        ──hidden states of layers 1..N──▶ RMS-normalise each ──softmax-weighted mix──▶
        connector (bidirectional transformer blocks at Gemma width) ──▶
        Linear → GELU → Linear to ``out_dim`` ──▶ RMSNorm ──▶ (embeddings [B, L, out_dim], mask [B, L])

Which layers, and why. LTX-2 (arXiv:2601.03233) RMS-normalises the hidden states of *all*
layers of Gemma-3-12B, concatenates them and projects them into its connectors. Probing
work finds that intermediate layers of decoder LMs carry the most transferable features
while the last layers specialise in next-token prediction (Skean et al. 2025, "Layer by Layer", arXiv:2502.02013). So we take every
layer output 1..N (the embedding lookup, index 0, has no context and is left out), RMS-
normalise each one (Gemma's residual stream grows by orders of magnitude with depth; un-
normalised, the deepest layers would swamp any mix), and let training choose the depth
with an ELMo scalar mix (Peters et al. 2018, arXiv:1802.05365): softmax weights over layers
times one gain, N + 1 numbers in all, where concatenating 26 x 1152 features into a linear
layer would cost 34.5M parameters and overfit 100k pairs more easily. ``hidden_layers``
selects another subset.

Why a connector. Gemma is causal: token i has not seen tokens > i. Two bidirectional
blocks (LTX-2's "connector", here at Gemma's width to stay small) let every token see the
whole prompt before the projection; the PixArt-alpha caption projection (Linear-GELU-
Linear, arXiv:2310.00426) then lifts to ``out_dim``, and a final RMSNorm fixes the scale
the denoiser receives. Padding positions are zeroed.

The component saved by ``save_pretrained`` holds only the LoRA and projection tensors plus
a config naming the base folder and the SHA-256 of its files; loading refuses another base.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from aiprod_core import store
from aiprod_core.errors import AiprodError
from aiprod_core.weights import CONFIG, PretrainedMixin, load_state_dict
from aiprod_textenc import base as B
from aiprod_textenc.config import DEFAULT_TARGETS, Gemma3LoraConfig  # noqa: F401 - re-exported (was defined here)


# -- projection head -----------------------------------------------------------------------
class LayerMix(nn.Module):
    """ELMo scalar mix of RMS-normalised hidden states: ``gamma * sum_k softmax(w)_k * rms(h_k)``."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # [K, B, L, D] -> [B, L, D]
        normed = F.rms_norm(feats.float(), (feats.shape[-1],), eps=1e-6)
        weights = self.logits.float().softmax(0)
        return (self.gamma.float() * torch.einsum("k,kbld->bld", weights, normed)).to(feats.dtype)


class ConnectorBlock(nn.Module):
    """Pre-norm bidirectional self-attention + GELU MLP; padded keys are masked out."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.RMSNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.norm2 = nn.RMSNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + self.out(rearrange(attn, "b h l d -> b l (h d)"))
        return x + self.mlp(self.norm2(x))


class Projection(nn.Module):
    """Layer mix → connector blocks → Linear-GELU-Linear to ``out_dim`` → RMSNorm."""

    def __init__(self, *, num_layers: int, dim: int, out_dim: int, blocks: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.mix = LayerMix(num_layers)
        self.blocks = nn.ModuleList([ConnectorBlock(dim, heads, mlp_ratio) for _ in range(blocks)])
        self.proj = nn.Sequential(nn.Linear(dim, out_dim), nn.GELU(approximate="tanh"), nn.Linear(out_dim, out_dim))
        self.norm = nn.RMSNorm(out_dim, eps=1e-6)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.mix(feats)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(self.proj(x)) * mask[..., None].to(x.dtype)


# -- the component ---------------------------------------------------------------------------
def _ambient_meta() -> bool:
    return torch.empty(0).is_meta


class Gemma3LoraTextEncoder(PretrainedMixin, nn.Module):
    """kind ``text-encoder``, name ``gemma3-lora``: ``encode(prompts) -> (embeddings, mask)``.

    Built normally, the base is loaded with its weights from ``base_path`` (or built random
    when ``random_base``) and its fingerprint is checked against ``base_sha256`` when given.
    Built under ``torch.device("meta")``, only the architecture is made (parameter counts).
    """

    config_class = Gemma3LoraConfig
    component_kind = "text-encoder"
    component_name = "gemma3-lora"
    component_license = "LoRA + projection: AIPROD proprietary; the Gemma 3 base keeps its own licence"

    def __init__(self, *, base_path: str | None = None, base_sha256: dict[str, str] | None = None,
                 base_config: dict[str, Any] | None = None, random_base: bool = False, base_seed: int = 0,
                 lora_rank: int = 32, lora_alpha: float = 32.0, lora_dropout: float = 0.0,
                 lora_targets: list[str] | None = None, hidden_layers: list[int] | None = None,
                 connector_layers: int = 2, connector_heads: int = 8, connector_mlp_ratio: float = 4.0,
                 out_dim: int = 4096, max_length: int = 512, add_bos: bool = True):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        meta = _ambient_meta()
        folder = None
        if base_path is not None:
            folder = B.check_folder(base_path)
        elif not random_base and not meta:
            raise AiprodError(f"base_path: required (a local Gemma 3 folder holding {B.REQUIRED}); "
                              "set random_base: true only for tests")
        cfg = B.text_config(folder, base_config)
        cfg._attn_implementation = "sdpa"
        n = cfg.num_hidden_layers  # options are checked against the architecture before any weight is read
        if hidden_layers is not None and any(not -(n + 1) <= i <= n for i in hidden_layers):
            raise AiprodError(f"hidden_layers: {hidden_layers} out of range for a {n}-layer base (0..{n})")
        if cfg.hidden_size % connector_heads:
            raise AiprodError(f"connector_heads: {connector_heads} does not divide the base width {cfg.hidden_size}")
        self.layer_ids = list(range(1, n + 1)) if hidden_layers is None else [i % (n + 1) for i in hidden_layers]
        if meta:  # architecture only: nothing to load, nothing to verify
            text_model, found = B.build_meta(cfg), base_sha256
        elif folder is not None:
            found = B.folder_fingerprint(folder)  # hashed before a single tensor is read
            self._check_base(base_sha256, found, f"base_path {str(folder)!r}")
            text_model = B.load_weights(folder)
        else:
            text_model = B.build_random(cfg, base_seed)
            found = B.state_fingerprint(text_model)
            self._check_base(base_sha256, found, f"random base (seed {base_seed})")
        self._fingerprint = found
        self.tokenizer = B.load_tokenizer(folder) if folder is not None else B.byte_tokenizer()
        self.bos_id, self.pad_id = cfg.bos_token_id, cfg.pad_token_id
        self.max_length, self.add_bos, self.out_dim = max_length, add_bos, out_dim

        lora = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                          target_modules=list(lora_targets or DEFAULT_TARGETS), bias="none")
        try:
            with warnings.catch_warnings():  # peft calls a deprecated transformers alias
                warnings.simplefilter("ignore", FutureWarning)
                self.text_model = get_peft_model(text_model, lora)  # freezes the base, LoRA B = 0 at start
        except ValueError as err:
            raise AiprodError(f"lora_targets: {err}".splitlines()[0]) from None
        self.projection = Projection(num_layers=len(self.layer_ids), dim=cfg.hidden_size, out_dim=out_dim,
                                     blocks=connector_layers, heads=connector_heads, mlp_ratio=connector_mlp_ratio)
        self.merged = False

    # `config` always records the base actually built (the mixin assigns it after __init__)
    @property
    def config(self) -> Gemma3LoraConfig:
        return self.__dict__["_config"]

    @config.setter
    def config(self, cfg: Gemma3LoraConfig) -> None:
        if getattr(self, "_fingerprint", None) is not None and cfg.base_sha256 != self._fingerprint:
            cfg = cfg.model_copy(update={"base_sha256": dict(self._fingerprint)})
        self.__dict__["_config"] = cfg

    @staticmethod
    def _check_base(expected: dict[str, str] | None, found: dict[str, str], what: str) -> None:
        if expected is not None and dict(expected) != found:
            raise AiprodError(f"{what}: not the base this adapter was trained on "
                              f"({B.describe_mismatch(expected, found)}); give the recorded base folder")

    # -- tokenisation and forward -------------------------------------------------------------
    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``(input_ids [B, L] int64, mask [B, L] bool)``; ``<bos>`` first when ``add_bos``."""
        if isinstance(prompts, str) or not prompts:
            raise AiprodError("prompts: expected a non-empty list of strings")
        rows = []
        for enc in self.tokenizer.encode_batch(list(prompts), add_special_tokens=False):
            ids = ([self.bos_id] if self.add_bos else []) + list(enc.ids)
            rows.append(ids[: self.max_length] or [self.pad_id])
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = True
        return ids, mask

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, *,
                projection: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeddings [B, L, out_dim], mask)``. ``projection``: another head with this one's shapes to
        read the base's features through (the text-encoder recipe's frozen anchor); default: this one's."""
        out = self.text_model(input_ids=input_ids, attention_mask=mask.long(), output_hidden_states=True,
                              use_cache=False)
        feats = torch.stack([out.hidden_states[i] for i in self.layer_ids])
        return (projection or self.projection)(feats, mask), mask

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeddings [B, L, out_dim], mask [B, L] bool)`` on the module's device; differentiable."""
        ids, mask = self.tokenize(prompts)
        device = self.projection.norm.weight.device
        return self(ids.to(device), mask.to(device))

    @contextlib.contextmanager
    def adapter_disabled(self) -> Iterator[None]:
        """The frozen base (LoRA off) inside the block: the training target."""
        if self.merged:
            raise AiprodError("LoRA was merged into the base; the unadapted base is no longer available")
        with self.text_model.disable_adapter():
            yield

    def merge_lora(self) -> Gemma3LoraTextEncoder:
        """Fold ``W + (alpha/r) B A`` into the base weights for inference (no LoRA matmuls left)."""
        if not self.merged:
            self.text_model = self.text_model.merge_and_unload()
            self.merged = True
        return self

    # -- save / load: only the adapter and the projection ---------------------------------------
    def state_dict_for_save(self) -> dict[str, torch.Tensor]:
        if self.merged:
            raise AiprodError("save_pretrained: LoRA was merged into the base; save the component before merge_lora()")
        return {k: v for k, v in self.state_dict().items() if not k.startswith("text_model.") or ".lora_" in k}

    def _load_pretrained_state(self, state: dict[str, torch.Tensor], folder: Path) -> None:
        expected = set(self.state_dict_for_save())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            parts = ([f"missing {len(missing)} (e.g. {missing[0]!r})"] if missing else []) + (
                [f"unexpected {len(unexpected)} (e.g. {unexpected[0]!r})"] if unexpected else [])
            raise AiprodError(f"{folder}: adapter does not match the config: {'; '.join(parts)}")
        self.load_state_dict(state, strict=False)

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, base_path: str | Path | None = None,
                        device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                        verify: bool = True, force_verify: bool = False) -> Gemma3LoraTextEncoder:
        """Verify the component, load the base *with its weights* (never left on meta), then the adapter.

        ``base_path`` points at a moved base folder; its fingerprint must still match.
        """
        folder = Path(folder)
        if verify:
            store.verify(folder, force=force_verify)
        cfg = cls.load_config(folder)
        if cfg.base_sha256 is None:
            raise AiprodError(f"{folder / CONFIG}: base_sha256 is missing; cannot tell which base the adapter needs")
        if base_path is not None:
            cfg = cfg.model_copy(update={"base_path": str(base_path)})
        state = load_state_dict(folder, device="cpu")
        with torch.random.fork_rng(devices=[]):  # the throw-away init must not move the caller's RNG
            module = cls.from_config(cfg)
        module._load_pretrained_state(state, folder)
        if device is not None or dtype is not None:
            module.to(device=device, dtype=dtype)
        return module.eval()

    def trainable_parameters(self) -> dict[str, int]:
        lora = sum(p.numel() for n, p in self.text_model.named_parameters() if ".lora_" in n)
        proj = sum(p.numel() for p in self.projection.parameters())
        return {"base": self.num_parameters() - lora - proj, "lora": lora, "projection": proj}
