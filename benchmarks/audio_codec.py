"""Encode + decode time for 10 s of 24 kHz audio: AIPROD nac-rvq v1 vs transformers' EncodecModel
(24 kHz) and DacModel, all random-initialised from configs (no download), in one run.

    python benchmarks/audio_codec.py [--device auto] [--seconds 10] [--repeats 3] [--threads N]

Comparable sizes: EnCodec 24 kHz as published (~15M) and widened to ~50M (num_filters 60),
DAC at 24 kHz with EnCodec's strides (2, 4, 5, 8) and widths chosen for ~50M, all at 8 codebooks
x 1024 (6 kbps) and 75 Hz. Prints a table: median of ``--repeats`` rounds after one warm-up; each round runs every model in
turn, so load from other processes falls on all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def build_models(device):
    from transformers import DacConfig, DacModel, EncodecConfig, EncodecModel

    from aiprod_audio.model import NACCodec
    from aiprod_audio.presets import PRESETS

    torch.manual_seed(0)
    models = {}
    ours = NACCodec(**PRESETS["v1"]).eval().to(device)
    models["aiprod nac-rvq v1"] = (
        ours,
        lambda wav: ours.encode(wav, 8),
        lambda codes: ours.decode(codes),
    )
    for label, filters in (("EncodecModel 24kHz (stock)", 32), ("EncodecModel 24kHz (~50M)", 60)):
        enc = EncodecModel(EncodecConfig(num_filters=filters)).eval().to(device)
        models[label] = (
            enc,
            # bandwidth 6 kbps -> 8 codebooks at 75 Hz
            lambda wav, enc=enc: enc.encode(wav, bandwidth=6.0),
            lambda out, enc=enc: enc.decode(out.audio_codes, out.audio_scales)[0],
        )
    dac = DacModel(
        DacConfig(
            sampling_rate=24000,
            downsampling_ratios=[2, 4, 5, 8],
            encoder_hidden_size=64,
            decoder_hidden_size=1088,
            n_codebooks=8,
            codebook_size=1024,
            codebook_dim=8,
        )
    )
    dac = dac.eval().to(device)
    models["DacModel 24kHz (~50M)"] = (
        dac,
        lambda wav: dac.encode(wav),
        lambda out: dac.decode(audio_codes=out.audio_codes).audio_values,
    )
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    args = ap.parse_args()
    from aiprod_core.device import pick_device, synchronize

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    sr = 24000
    wav = (torch.randn(1, 1, int(args.seconds * sr), generator=torch.Generator().manual_seed(0)) * 0.1).to(device)
    models = build_models(device)
    enc_t: dict[str, list[float]] = {k: [] for k in models}
    dec_t: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for _, encode, decode in models.values():  # warm-up
            decode(encode(wav))
        # rounds interleave the models, so load from other processes hits them alike
        for _ in range(args.repeats):
            for name, (_, encode, decode) in models.items():
                t = time.perf_counter()
                codes = encode(wav)
                synchronize(device)
                t_enc = time.perf_counter() - t
                decode(codes)
                synchronize(device)
                enc_t[name].append(t_enc)
                dec_t[name].append(time.perf_counter() - t - t_enc)
    rows = []
    for name, (model, _, _) in models.items():
        te, td = statistics.median(enc_t[name]), statistics.median(dec_t[name])
        rows.append((name, count(model) / 1e6, te, td, args.seconds / (te + td)))
    print(
        f"# {args.seconds:g} s of 24 kHz mono, 6 kbps (8 x 1024 codes), float32, device={device}, "
        f"threads={torch.get_num_threads()}, torch {torch.__version__}, median of {args.repeats}"
    )
    print(f"{'model':<30} {'params (M)':>10} {'encode (s)':>11} {'decode (s)':>11} {'x realtime':>11}")
    for name, p, te, td, rt in rows:
        print(f"{name:<30} {p:>10.1f} {te:>11.3f} {td:>11.3f} {rt:>11.1f}")


if __name__ == "__main__":
    main()
