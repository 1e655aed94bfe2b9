#!/usr/bin/env python
"""AIPROD-TTS speed: whole synthesis (RTF), time to the first audio when streaming, and our HiFi-GAN
against transformers' SpeechT5HifiGan at the same size, interleaved in one run (random weights for a
preset; the duration head is set to a natural ~8 frames per phoneme so the audio length is realistic), or
a saved voice (``--weights weights/tiny/tts``, the demo voice).

    python benchmarks/tts.py [--preset v1 | --weights DIR] [--bf16] [--sentences 2] [--repeats 3] [--threads 2]
                             [--no-plain] [--json out.json]

RTF = seconds of compute / seconds of audio (below 1 is faster than real time; ``rtf`` from wall time,
``rtf_cpu`` from process CPU time). Rows, each group compared with its first ``*`` row:
* ``whole``: the whole text (frontend included) on the inference path (``*``), and on the plain path
  (``model.FAST_INFERENCE = False``, ``HiFiGANGenerator.fast_inference = False``: the code before issue 21's
  fusions), and in bfloat16 with ``--bf16`` (slow on CPUs without native bf16);
* ``first``: time to the first audio out of ``synthesize_stream`` on a text whose first sentence is long:
  the pipeline's settings (``first_chunk_seconds=0.1``, ``first_clause_words=12``, ``*``), growing chunks
  only, whole first sentence, and whole first sentence on the plain path (before);
* ``vocoder``: the vocoders alone on the mel of one sentence: ours (``*``), ours on the plain path, ours in
  the layout before issue 21's iSTFT head (``--before``: v1's HiFi-GAN V1, or the demo voice's 8·8·4
  generator; random weights), and transformers' SpeechT5HifiGan in that HiFi-GAN layout (the peer; at
  ours' own configuration when it has no iSTFT head).
Medians, peak memory and ``ours / this`` (see ``_common.py``).
"""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Case, add_common_args, header, report, run_cases, setup  # noqa: E402

# the vocoder layouts before the iSTFT head (issue 21): HiFi-GAN V1 (v1 preset), the demo voice's 8*8*4 generator
BEFORE = {"v1": {},
          "demo": {"upsample_initial_channel": 64, "upsample_rates": (8, 8, 4), "upsample_kernel_sizes": (16, 16, 8),
                   "resblock_kernel_sizes": (3, 7), "resblock_dilations": ((1, 3), (1, 3))}}

SENTENCES = [  # the first one long (21 words, ~8 s): what the first-audio rows wait for
    "On the second of May, at half past ten, the doctor paid three dollars for three apples and a loaf of bread.",
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "A journey of a thousand miles begins with a single step.",
    "Every morning the old man walked to the harbour to watch the fishing boats come in.",
    "When the rain finally stopped, the children ran outside to play in the puddles.",
]
STREAM = {"first_chunk_seconds": 0.1, "first_clause_words": 12}  # aiprod_tts.pipeline.STREAM_OPTIONS


@contextmanager
def plain_path():
    """The plain (pre-issue-21-fusion) inference ops for the duration of the block."""
    from aiprod_tts import model
    from aiprod_tts.vocoder import HiFiGANGenerator

    model.FAST_INFERENCE = HiFiGANGenerator.fast_inference = False
    try:
        yield
    finally:
        model.FAST_INFERENCE = HiFiGANGenerator.fast_inference = True


def plain(fn):
    def run():
        with plain_path():
            return fn()
    return run


def voice(preset: str, dtype: torch.dtype, device, weights: str | None = None):
    from aiprod_tts.presets import PRESETS
    from aiprod_tts.synthesizer import FastSpeech2HiFiGAN

    if weights:
        return FastSpeech2HiFiGAN.from_pretrained(weights).eval().to(device=device, dtype=dtype)
    torch.manual_seed(0)
    frontend = {"mode": "character"}  # no G2P model needed with random weights; same acoustic/vocoder cost
    model = FastSpeech2HiFiGAN(**{**PRESETS[preset], "frontend": frontend}).eval()
    with torch.no_grad():
        model.acoustic.prosody.duration.head.bias.fill_(math.log(8.0))
        model.acoustic.prosody.duration.head.weight.mul_(0.1)
    return model.to(device=device, dtype=dtype)


def main(argv: list[str] | None = None) -> list[dict]:
    from aiprod_tts.config import VocoderConfig
    from aiprod_tts.synthesizer import FastSpeech2HiFiGAN
    from aiprod_tts.vocoder import HiFiGANGenerator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap)
    ap.add_argument("--preset", default="v1")
    ap.add_argument("--weights", default=None, help="a saved voice folder instead of a random-weight preset")
    ap.add_argument("--sentences", type=int, default=2, help="sentences of the text (2: ~11 s of speech at v1)")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain-path (before) rows")
    ap.add_argument("--skip-whole", action="store_true", help="only the first-audio and vocoder rows")
    ap.add_argument("--before", choices=[*BEFORE, "none"], default=None,
                    help="vocoder layout of the 'before' rows (default: the preset's, demo with --weights)")
    args = ap.parse_args(argv)
    device = setup(args)
    text = " ".join(SENTENCES[: args.sentences])
    ours = voice(args.preset, torch.float32, device, args.weights)
    with torch.no_grad():
        audio_s = ours.synthesize(text).numel() / ours.sample_rate
        tokens = ours.tokenize(SENTENCES[0])[None].to(device)
        mel = ours.acoustic.infer(tokens, torch.tensor([tokens.shape[1]], device=device),
                                  pitch_std=ours.cfg.audio.pitch_std).mel
        first_s = next(iter(ours.synthesize_stream(text, **STREAM))).numel() / ours.sample_rate
    sent_s = mel.shape[-1] * ours.hop_length / ours.sample_rate
    params = ours.num_parameters()

    def whole():
        return ours.synthesize(text)

    def first(**kw):
        return lambda: next(iter(ours.synthesize_stream(text, **kw)))

    cases = []
    if not args.skip_whole:
        cases.append(Case("aiprod-tts whole text fp32", whole, params, "whole", ours=True, extra={"audio_s": audio_s}))
        if not args.no_plain:
            cases.append(Case("  whole text, plain path (before)", plain(whole), params, "whole",
                              extra={"audio_s": audio_s}))
        if args.bf16:
            ours_bf = voice(args.preset, torch.bfloat16, device, args.weights)
            cases.append(Case("aiprod-tts whole text bf16", lambda: ours_bf.synthesize(text), params, "whole",
                              extra={"audio_s": audio_s}))
    cases += [
        Case("first audio: 0.1 s chunk + first clause", first(**STREAM), params, "first", ours=True,
             extra={"audio_s": first_s}),
        Case("first audio: 0.1 s chunk, whole sentence", first(first_chunk_seconds=0.1), params, "first",
             extra={"audio_s": 0.0}),
        Case("first audio: whole first sentence", first(), params, "first", extra={"audio_s": 0.0})]
    if not args.no_plain:
        cases.append(Case("  whole first sentence, plain (before)", plain(first()), params, "first",
                          extra={"audio_s": 0.0}))

    before = args.before or ("demo" if args.weights else args.preset if args.preset in BEFORE else "none")
    before_cfg = None if before == "none" else VocoderConfig(**BEFORE[before])
    if before_cfg is not None and before_cfg == ours.cfg.vocoder:
        before_cfg = None  # the voice is in that layout already
    if before_cfg is not None and not args.skip_whole:
        torch.manual_seed(0)
        ours_before = FastSpeech2HiFiGAN(**{**ours.cfg.model_dump(), "vocoder": before_cfg.model_dump()}).eval()
        ours_before.acoustic.load_state_dict(ours.acoustic.state_dict())
        ours_before.to(device)
        cases.insert(1, Case(f"  whole text, {before} vocoder layout before", lambda: ours_before.synthesize(text),
                             ours_before.num_parameters(), "whole", extra={"audio_s": audio_s}))

    def our_voc():
        with torch.no_grad():
            return ours.vocoder(mel)

    voc_params = sum(p.numel() for p in ours.vocoder.parameters())
    cases.append(Case("aiprod HiFi-GAN (1 sentence)", our_voc, voc_params, "vocoder", ours=True,
                      extra={"audio_s": sent_s}))
    if not args.no_plain:
        cases.append(Case("  HiFi-GAN, plain path (before)", plain(our_voc), voc_params, "vocoder",
                          extra={"audio_s": sent_s}))
    if before_cfg is not None:
        torch.manual_seed(0)
        voc_before = HiFiGANGenerator(before_cfg, ours.cfg.audio.n_mels).eval().to(device)

        def before_voc():
            with torch.no_grad():
                return voc_before(mel)

        cases.append(Case(f"  {before} layout before (HiFi-GAN, no iSTFT)", before_voc,
                          sum(p.numel() for p in voc_before.parameters()), "vocoder", extra={"audio_s": sent_s}))
    if not args.no_peer and not (before_cfg or ours.cfg.vocoder).istft:
        from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

        v = before_cfg or ours.cfg.vocoder  # the peer has no iSTFT head: compared in the HiFi-GAN layout
        peer = SpeechT5HifiGan(SpeechT5HifiGanConfig(
            model_in_dim=ours.cfg.audio.n_mels, sampling_rate=ours.sample_rate,
            upsample_initial_channel=v.upsample_initial_channel,
            upsample_rates=list(v.upsample_rates), upsample_kernel_sizes=list(v.upsample_kernel_sizes),
            resblock_kernel_sizes=list(v.resblock_kernel_sizes),
            resblock_dilation_sizes=[list(d) for d in v.resblock_dilations], normalize_before=False)).eval().to(device)
        spec = mel[0].transpose(0, 1).contiguous()  # [T, n_mels]

        def peer_voc():
            with torch.no_grad():
                return peer(spec)

        cases.append(Case("SpeechT5HifiGan, HiFi-GAN layout (1 sentence)", peer_voc, sum(p.numel() for p in peer.parameters()),
                          "vocoder", extra={"audio_s": sent_s}))
    assert len({c.name for c in cases}) == len(cases), "run_cases keys samples by case name"
    rows = run_cases(cases, device, args.repeats)
    for r in rows:
        r["rtf"] = r["wall_s"] / r["audio_s"] if r["audio_s"] else None
        r["rtf_cpu"] = r["cpu_s"] / r["audio_s"] if r["audio_s"] else None
    what = args.weights or args.preset
    head = header(device, args.repeats, f"AIPROD-TTS {what}, {audio_s:.1f} s of speech, {args.sentences} sentences; "
                                        f"first audio piece {first_s:.2f} s")
    report(head, rows, args.json_path, extra_cols=("audio_s", "rtf", "rtf_cpu"))
    return rows


if __name__ == "__main__":
    main()
