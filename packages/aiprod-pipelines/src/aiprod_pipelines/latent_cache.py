"""Encode a captioned video corpus once into SHDT training clips (``tools/cache_latents.py``).

Every clip of a corpus split (``captions.jsonl`` + mp4, see :mod:`aiprod_pipelines.corpus`) becomes
one safetensors file in ``OUT/<size>/`` holding the normalised HW-VAE latents of the video, the text
encoder's embedding of the caption and its mask (written by :func:`aiprod_shdt.data.write_clip`, so it
needs aiprod-shdt): the ``cached`` data source of the ``shdt`` recipe
(``data: {source: cached, cache_dir: OUT}``; a curriculum stage of ``resolution: R`` reads ``OUT/R/``).
Encoding once is what makes diffusion training affordable: the autoencoder and the text encoder are
frozen, so they would compute the same thing at every step.

    python tools/cache_latents.py data/video_corpus/train runs/demo/shdt_cache \\
        --autoencoder weights/tiny/hwvae --text-encoder weights/tiny/text_encoder --size 64 --size 32

``--size`` resizes the square clips (area average) before encoding, one folder per size, for
multi-resolution curricula; ``--text-field prompt`` caches the short prompt instead of the caption
(both: ``--text-field caption --text-field prompt``, one file per field).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from aiprod_core.errors import AiprodError


def resize_video(video: torch.Tensor, size: int) -> torch.Tensor:
    """``[3, T, H, W]`` → ``[3, T, size, size]`` by area averaging (no-op at the same size)."""
    if video.shape[-2:] == (size, size):
        return video
    return F.interpolate(video.transpose(0, 1), size=(size, size), mode="area").transpose(0, 1).contiguous()


@torch.no_grad()
def cache_corpus(split: str | Path, out_dir: str | Path, autoencoder: str | Path, text_encoder: str | Path, *,
                 sizes: list[int] | None = None, text_fields: list[str] | None = None, device: str = "cpu",
                 progress: bool = True) -> int:
    """Encode every clip of ``split`` into ``out_dir/<size>/``. Returns the number of files written."""
    from tqdm import tqdm

    from aiprod_core.weights import load_component
    from aiprod_pipelines.corpus import read_captions
    from aiprod_pipelines.media import frames_to_video, read_mp4

    try:
        from aiprod_shdt.data import write_clip  # the shdt recipe owns the clip format
    except ImportError:
        raise AiprodError("caching SHDT clips needs aiprod-shdt (pip install aiprod-shdt)") from None

    entries = read_captions(split)
    fields = text_fields or ["caption"]
    for f in fields:
        missing = [e["file"] for e in entries if not isinstance(e.get(f), str)]
        if missing:
            raise AiprodError(f"{Path(split) / 'captions.jsonl'}: --text-field {f}: missing in {len(missing)} "
                              f"entries (first: {missing[0]})")
    vae = load_component(autoencoder, device=device, dtype=torch.float32).eval()
    enc = load_component(text_encoder, device=device, dtype=torch.float32).eval()
    out_dir = Path(out_dir)
    n = 0
    for e in tqdm(entries, desc="cache latents", unit="clip", disable=not progress):
        video = torch.from_numpy(frames_to_video(read_mp4(e["path"], audio=False).frames))
        for size in sizes or [int(video.shape[-1])]:
            if video.shape[-1] != video.shape[-2] and size != video.shape[-1]:
                raise AiprodError(f"{e['path']}: --size resizes square clips only, got {tuple(video.shape[-2:])}")
            latents = vae.encode(resize_video(video, size)[None].to(device))[0]
            for f in fields:
                text, mask = enc.encode([e[f]])
                name = Path(e["file"]).stem + ("" if f == "caption" else f"_{f}") + ".safetensors"
                write_clip(out_dir / str(size) / name, latents, text[0], mask[0])
                n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("split", help="a corpus split folder (captions.jsonl + clip_*.mp4)")
    p.add_argument("out_dir")
    p.add_argument("--autoencoder", required=True, help="video-autoencoder component folder")
    p.add_argument("--text-encoder", required=True, help="text-encoder component folder")
    p.add_argument("--size", type=int, action="append", help="square side to encode at (repeatable)")
    p.add_argument("--text-field", action="append", help="captions.jsonl field to encode (default caption)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    try:
        n = cache_corpus(a.split, a.out_dir, a.autoencoder, a.text_encoder, sizes=a.size, text_fields=a.text_field,
                         device=a.device, progress=not a.quiet)
    except AiprodError as err:
        raise SystemExit(f"cache_latents: error: {err}") from None
    print(f"{n} clips written to {a.out_dir}")
