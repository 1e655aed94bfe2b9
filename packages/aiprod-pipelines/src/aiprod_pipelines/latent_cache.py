"""Encode a captioned clip corpus once into SHDT training shards (``aiprod data cache``, ``tools/cache_latents.py``).

Input: a folder with ``captions.jsonl`` + clips — what ``aiprod data prepare`` writes (bucket-grid clips
of any aspect, with their resolution) or a corpus split of :mod:`aiprod_pipelines.corpus`. Output:
WebDataset shards in ``OUT/`` (``r<rank>-NNNNNN.tar`` + ``index.npz``, :mod:`aiprod_core.data.shards`),
one sample per clip and text field: the normalised HW-VAE latents, the text encoder's embedding of the
caption and its mask, with index columns ``resolution, frames, height, width`` — the ``cached`` data
source of the ``shdt`` recipe (``data: {source: cached, cache_dir: OUT}``; a stage of ``resolution: R``
trains on the clips made for R). Encoding once is what makes diffusion training affordable: the
autoencoder and the text encoder are frozen, so they would compute the same thing at every step.

    torchrun --nproc-per-node 8 tools/cache_latents.py data/prepared runs/shdt_cache \\
        --autoencoder weights/tiny/hwvae --text-encoder weights/tiny/text_encoder --batch-size 8

Under ``torchrun`` each rank encodes its share (every ``world``-th clip), batching clips of one shape, on
its own GPU (``cuda:LOCAL_RANK``), into its own shards; rank 0 writes the index once all are done. A
killed run resumes: samples already in a shard are skipped. A clip that cannot be used (unreadable, a
frame count that is not 1 + 4k) is named on stderr and in ``OUT/skipped.jsonl``, and the run goes on.
``--size`` resizes clips (long side, centre crop to the nearest of ``--aspect``) before encoding, one
resolution each; ``--text-field prompt`` caches a second text field (key suffix ``_prompt``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from aiprod_core.errors import AiprodError


def resize_video(video: torch.Tensor, size: int) -> torch.Tensor:
    """``[3, T, H, W]`` → ``[3, T, size, size]`` by area averaging (no-op at the same size)."""
    if video.shape[-2:] == (size, size):
        return video
    return F.interpolate(video.transpose(0, 1), size=(size, size), mode="area").transpose(0, 1).contiguous()


def fit_video(video: torch.Tensor, size: int, ratios: list[str]) -> torch.Tensor:
    """``[3, T, H, W]`` resized to cover its nearest-aspect bucket at long side ``size`` and centre-cropped."""
    from aiprod_core.data import buckets as grid

    h, w = video.shape[-2:]
    sizes = grid.bucket_sizes(size, ratios)
    target = sizes[int(grid.nearest(h, w, sizes))]
    if h == w and target[0] == target[1]:
        return resize_video(video, target[0])
    (rh, rw), (y0, x0) = grid.resize_crop_box(h, w, target)
    x = F.interpolate(video.transpose(0, 1), size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
    return x[:, :, y0 : y0 + target[0], x0 : x0 + target[1]].transpose(0, 1).contiguous()


def _distributed(device: str) -> tuple[int, int, str]:
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if world > 1 and not dist.is_initialized():
        from datetime import timedelta

        # ranks meet once, at the end: a long timeout, as their shares may take hours and differ by many minutes
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timedelta(hours=24))
    return rank, world, device


def sample_key(file: str, size: int, field: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", str(Path(file).with_suffix("")))
    return f"{size}-{stem}" + ("" if field == "caption" else f"_{field}")


@torch.no_grad()
def cache_corpus(split: str | Path, out_dir: str | Path, autoencoder: str | Path, text_encoder: str | Path, *,
                 sizes: list[int] | None = None, text_fields: list[str] | None = None, device: str = "auto",
                 batch_size: int = 8, shard_size: int = 256, aspect_ratios: list[str] | None = None,
                 progress: bool = True) -> int:
    """Encode this rank's share of ``split`` into shards under ``out_dir``; returns the samples this rank
    wrote in this call (0 when everything was already there)."""
    from tqdm import tqdm

    from aiprod_core.data.shards import ShardWriter, finalize
    from aiprod_core.weights import load_component
    from aiprod_pipelines.corpus import read_captions
    from aiprod_pipelines.media import frames_to_video, read_mp4

    try:
        from aiprod_shdt.data import write_clip_shard  # the shdt recipe owns the clip format
    except ImportError:
        raise AiprodError("caching SHDT clips needs aiprod-shdt (pip install aiprod-shdt)") from None

    entries = sorted(read_captions(split), key=lambda e: e["file"])
    fields = text_fields or ["caption"]
    for f in fields:
        missing = [e["file"] for e in entries if not isinstance(e.get(f), str)]
        if missing:
            raise AiprodError(f"{Path(split) / 'captions.jsonl'}: --text-field {f}: missing in {len(missing)} "
                              f"entries (first: {missing[0]})")
    ratios = aspect_ratios or ["16:9", "9:16", "4:3", "3:4", "1:1"]
    rank, world, device = _distributed(device)
    out = Path(out_dir)
    writer = ShardWriter(out, prefix=f"r{rank:03d}", max_count=shard_size)

    def keys(e: dict[str, Any], size: int | None = None) -> set[str] | None:
        chosen = [size] if size else sizes or ([e["resolution"]] if e.get("resolution") else None)
        return None if chosen is None else {sample_key(e["file"], s, f) for s in chosen for f in fields}

    # every writer's rows: a run resumed with another world size skips what any rank wrote
    done = set(writer.done)
    for p in out.glob("r*.rows.jsonl"):
        done |= {json.loads(line)["key"] for line in p.read_text(encoding="utf-8").splitlines() if line.strip()}
    mine = [e for e in entries[rank::world] if keys(e) is None or not keys(e) <= done]
    vae = enc = None
    if mine:
        vae = load_component(autoencoder, device=device, dtype=torch.float32).eval()
        enc = load_component(text_encoder, device=device, dtype=torch.float32).eval()
    pending: dict[tuple, list[tuple[dict, torch.Tensor, int]]] = {}
    skipped: list[dict[str, str]] = []
    written = 0

    def encode(group: list[tuple[dict, torch.Tensor, int]]) -> None:
        nonlocal written
        latents = vae.encode(torch.stack([v for _, v, _ in group]).to(device))
        for f in fields:
            text, mask = enc.encode([e[f] for e, _, _ in group])
            for (e, _, size), lat, t, m in zip(group, latents, text, mask):
                key = sample_key(e["file"], size, f)
                if key not in done:
                    write_clip_shard(writer, key, lat, t, m, size, {"file": e["file"], f: e[f]})
                    written += 1

    with writer:
        for e in tqdm(mine, desc=f"cache latents (rank {rank}/{world})", unit="clip", disable=not progress):
            try:
                video = torch.from_numpy(frames_to_video(read_mp4(e["path"], audio=False).frames))
                if (video.shape[1] - 1) % 4:
                    raise AiprodError(f"{video.shape[1]} frames; the x4 causal VAE codes 1 + 4k "
                                      f"(cut clips with aiprod data prepare)")
            except AiprodError as err:
                why = str(err).replace(f"{e['path']}: ", "")
                print(f"cache_latents: skipped {e['path']}: {why}", file=sys.stderr)
                skipped.append({"file": e["file"], "reason": why})
                continue
            for size in sizes or [e.get("resolution") or max(video.shape[-2:])]:
                if keys(e, size) <= done:
                    continue
                v = fit_video(video, size, ratios) if sizes else video
                group = pending.setdefault(tuple(v.shape), [])
                group.append((e, v, int(size)))
                if len(group) >= batch_size:
                    encode(pending.pop(tuple(v.shape)))
        for group in pending.values():
            encode(group)
    if skipped:
        with open(out / f"skipped.r{rank:03d}.jsonl", "a", encoding="utf-8") as f:
            f.writelines(json.dumps(s) + "\n" for s in skipped)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    if rank == 0:
        finalize(out, {"kind": "shdt-clips", "source": str(split), "fields": fields,
                       "autoencoder": str(autoencoder), "text_encoder": str(text_encoder)})
    return written


def build_parser(prog: str = "cache_latents"):
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("split", help="a folder with captions.jsonl + clips (aiprod data prepare's OUT)")
    p.add_argument("out_dir")
    p.add_argument("--autoencoder", required=True, help="video-autoencoder component folder")
    p.add_argument("--text-encoder", required=True, help="text-encoder component folder")
    p.add_argument("--size", type=int, action="append", help="long side to resize to before encoding (repeatable)")
    p.add_argument("--aspect", action="append", help="--size buckets, 'W:H' (repeatable; default a 5-ratio grid)")
    p.add_argument("--text-field", action="append", help="captions.jsonl field to encode (default caption)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per encoder call")
    p.add_argument("--shard-size", type=int, default=256, help="samples per shard")
    p.add_argument("--device", default="auto", help="auto: cuda:LOCAL_RANK when available, else cpu")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None, prog: str = "cache_latents") -> None:
    a = build_parser(prog).parse_args(argv)
    try:
        n = cache_corpus(a.split, a.out_dir, a.autoencoder, a.text_encoder, sizes=a.size, text_fields=a.text_field,
                         device=a.device, batch_size=a.batch_size, shard_size=a.shard_size, aspect_ratios=a.aspect,
                         progress=not a.quiet)
    except AiprodError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"rank {os.environ.get('RANK', 0)}: {n} samples written to {a.out_dir}")


if __name__ == "__main__":
    main()
