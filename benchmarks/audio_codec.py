"""Encode + decode of 24 kHz audio: AIPROD nac-rvq v1 vs transformers' EncodecModel (24 kHz) and DacModel,
all random-initialised from configs (no download), interleaved in one run.

    python benchmarks/audio_codec.py [--seconds 10] [--repeats 3] [--threads N] [--variants] [--bf16]
                                     [--compile] [--json out.json]

Comparable sizes: EnCodec 24 kHz as published (~15M) and widened to ~50M (num_filters 60), DAC at
24 kHz with EnCodec's strides (2, 4, 5, 8) and widths chosen for ~50M, all at 8 codebooks x 1024
(6 kbps) and 75 Hz. Ours runs under ``torch.inference_mode`` (cached weight-norm kernels, in-place
Snake, padding inside the convolution); ``plain path`` is the same v1 model through the training-time
ops; ``layout before`` is v1 (with ``--demo``, the demo codec) as it was before issue 21: three dilated
k=7 residual units per block instead of one k=3 unit (random weights). ``--variants`` adds depthwise-residual
variants of v1 (random weights: they would need training). ``--bf16`` adds our v1 in bfloat16 (slow on CPUs
without native bf16), ``--compile`` our v1 under ``torch.compile``. Medians, peak memory and ``ours / peer``
per row (see ``_common.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Case, add_common_args, header, report, run_cases, setup  # noqa: E402

# The layouts before issue 21 (three dilated k=7 residual units per block, as DAC): v1 and the demo codec.
V1_BEFORE = {"encoder_dim": 48, "decoder_dim": 1088, "latent_dim": 512, "lstm_layers": 2, "num_codebooks": 8,
             "codebook_size": 1024, "codebook_dim": 8, "dilations": [1, 3, 9], "kernel_size": 7}
DEMO_BEFORE = {"dilations": [1, 3, 9], "kernel_size": 7, "decoder_dim": 96}


def count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def ours(cfg: dict, device, dtype=torch.float32, compiled: bool = False):
    from aiprod_audio.model import NACCodec

    torch.manual_seed(0)
    m = NACCodec(**cfg).eval().requires_grad_(False).to(device=device, dtype=dtype)
    if compiled:
        m.encoder.compile()
        m.decoder.compile()
    return m


def build_cases(args, device, wav) -> list[Case]:
    from transformers import DacConfig, DacModel, EncodecConfig, EncodecModel

    from aiprod_audio.presets import PRESETS

    v1 = PRESETS["v1"]
    cases: list[Case] = []

    def add_ours(name, m, dtype=torch.float32, plain=False, group="~50M", first=None):
        x = wav.to(dtype)

        def fn():
            with torch.enable_grad() if plain else torch.inference_mode():
                return m.decode(m.encode(x, m.codebooks_for_bandwidth(6.0)))

        first = not cases if first is None else first
        cases.append(Case(name, fn, count(m), group, ours=not plain and dtype == torch.float32 and first))

    if args.demo:  # the embedded demo codec (trained) against EnCodec's architecture at its size and rates
        from aiprod_audio.model import NACCodec

        demo = NACCodec.from_pretrained(args.demo).eval().requires_grad_(False).to(device)
        dcfg = demo.config.model_dump()
        add_ours("aiprod demo codec (trained)", demo, group="demo", first=True)
        add_ours("aiprod demo codec, plain path", demo, plain=True, group="demo")
        add_ours("aiprod demo layout before (3 units/block, k 7)", ours({**dcfg, **DEMO_BEFORE}, device), group="demo")
        hop = list(reversed(dcfg["strides"]))  # EnCodec lists its ratios decoder-first
        enc = EncodecModel(EncodecConfig(num_filters=16, hidden_size=64, num_lstm_layers=dcfg["lstm_layers"],
                                         upsampling_ratios=hop, codebook_dim=64, target_bandwidths=[6.0]))
        enc = enc.eval().to(device)

        def fn_demo(enc=enc):
            with torch.inference_mode():
                out = enc.encode(wav, bandwidth=6.0)  # 4 codebooks at 150 Hz, as the demo codec
                return enc.decode(out.audio_codes, out.audio_scales)[0]

        cases.append(Case("EncodecModel, demo rates, 16 filters", fn_demo, count(enc), "demo"))
        if args.demo_only:
            return cases

    m = ours(v1, device)
    add_ours("aiprod nac-rvq v1", m)
    add_ours("aiprod nac-rvq v1, plain path", m, plain=True)
    add_ours("aiprod nac-rvq v1 layout before (3 units/block, k 7)", ours(V1_BEFORE, device))
    if args.variants:
        for label, over in (("dw", {"depthwise_residual": True}), ("dw, dec 1536", {"depthwise_residual": True,
                                                                                   "decoder_dim": 1536})):
            add_ours(f"aiprod nac-rvq v1 {label}", ours({**v1, **over}, device))
    if args.bf16:
        add_ours("aiprod nac-rvq v1 bf16", ours(v1, device, torch.bfloat16), torch.bfloat16)
    if args.compile:
        add_ours("aiprod nac-rvq v1 compiled", ours(v1, device, compiled=True))
    for label, filters, group in (("EncodecModel 24kHz (~50M)", 60, "~50M"), ("EncodecModel 24kHz (stock)", 32, "~50M")):
        enc = EncodecModel(EncodecConfig(num_filters=filters)).eval().to(device)

        def fn(enc=enc):
            with torch.inference_mode():
                out = enc.encode(wav, bandwidth=6.0)  # 6 kbps -> 8 codebooks at 75 Hz
                return enc.decode(out.audio_codes, out.audio_scales)[0]

        cases.append(Case(label, fn, count(enc), group))
    if not args.no_dac:
        dac = DacModel(DacConfig(sampling_rate=24000, downsampling_ratios=[2, 4, 5, 8], encoder_hidden_size=64,
                                 decoder_hidden_size=1088, n_codebooks=8, codebook_size=1024, codebook_dim=8))
        dac = dac.eval().to(device)

        def fn_dac():
            with torch.inference_mode():
                return dac.decode(audio_codes=dac.encode(wav).audio_codes).audio_values

        cases.append(Case("DacModel 24kHz (~50M)", fn_dac, count(dac), "~50M"))
    return cases


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--variants", action="store_true", help="add depthwise-residual variants of v1 (random weights)")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-dac", action="store_true")
    ap.add_argument("--demo", metavar="FOLDER", help="add a group: this trained codec folder (the demo's: "
                    "weights/tiny/audio_codec) against EnCodec's architecture at its size and frame rate")
    ap.add_argument("--demo-only", action="store_true", help="with --demo: only that group")
    args = ap.parse_args(argv)
    device = setup(args)
    wav = (torch.randn(1, 1, int(args.seconds * 24000), generator=torch.Generator().manual_seed(0)) * 0.1).to(device)
    rows = run_cases(build_cases(args, device, wav), device, args.repeats)
    for r in rows:
        r["x_realtime"] = args.seconds / r["wall_s"]
        r["x_realtime_cpu"] = args.seconds / r["cpu_s"] if r["cpu_s"] else float("nan")
    head = header(device, args.repeats, f"encode+decode of {args.seconds:g} s of 24 kHz mono at 6 kbps")
    report(head, rows, args.json_path, extra_cols=("x_realtime",))
    return rows


if __name__ == "__main__":
    main()
