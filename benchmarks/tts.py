#!/usr/bin/env python
"""Real-time factor of AIPROD-TTS on this machine (random weights; the duration head is set to a
natural ~7 frames per phoneme so the audio length is realistic).

    python benchmarks/tts.py [--presets tiny v1] [--dtypes float32 bfloat16] [--repeats 3]

RTF = compute seconds / audio seconds (below 1 is faster than real time). Text → wav, frontend
(espeak-ng G2P) included; acoustic model and vocoder also timed separately.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from aiprod_core.device import pick_device
from aiprod_tts.presets import PRESETS
from aiprod_tts.synthesizer import FastSpeech2HiFiGAN

TEXT = ("The quick brown fox jumps over the lazy dog. On the 2nd of May, at 10:30 am, "
        "Dr. Brown paid $3.50 for three apples and a loaf of bread.")


def bench(preset: str, dtype: torch.dtype, device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    model = FastSpeech2HiFiGAN(**PRESETS[preset]).eval()
    with torch.no_grad():
        model.acoustic.prosody.duration.head.bias.fill_(math.log(8.0))
        model.acoustic.prosody.duration.head.weight.mul_(0.1)
    model = model.to(device=device, dtype=dtype)
    model.synthesize("Warm up.")
    times, n = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        wav = model.synthesize(TEXT)
        times.append(time.perf_counter() - t0)
        n = wav.numel()
    # split: acoustic vs vocoder on one sentence
    tokens = model.tokenize("The quick brown fox jumps over the lazy dog.")[None].to(device)
    lens = torch.tensor([tokens.shape[1]], device=device)
    t0 = time.perf_counter()
    out = model.acoustic.infer(tokens, lens, pitch_std=model.cfg.audio.pitch_std)
    t1 = time.perf_counter()
    with torch.no_grad():
        model.vocoder(out.mel.to(dtype))
    t2 = time.perf_counter()
    audio_s = n / model.sample_rate
    best = min(times)
    sent_s = int(out.mel_lens[0]) * model.hop_length / model.sample_rate
    return {"preset": preset, "params_M": model.num_parameters() / 1e6, "dtype": str(dtype).removeprefix("torch."),
            "audio_s": audio_s, "compute_s": best, "rtf": best / audio_s,
            "acoustic_rtf": (t1 - t0) / sent_s, "vocoder_rtf": (t2 - t1) / sent_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "v1"])
    p.add_argument("--dtypes", nargs="+", default=["float32"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    device = pick_device(a.device)
    print(f"device={device} torch_threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'preset':<6} {'params':>8} {'dtype':>9} {'audio s':>8} {'compute s':>10} {'RTF':>7} "
          f"{'x realtime':>10} {'acoustic RTF':>13} {'vocoder RTF':>12}")
    for preset in a.presets:
        for dt in a.dtypes:
            r = bench(preset, getattr(torch, dt), device, a.repeats)
            print(f"{r['preset']:<6} {r['params_M']:>7.2f}M {r['dtype']:>9} {r['audio_s']:>8.2f} {r['compute_s']:>10.3f} "
                  f"{r['rtf']:>7.3f} {1 / r['rtf']:>10.1f} {r['acoustic_rtf']:>13.3f} {r['vocoder_rtf']:>12.3f}", flush=True)


if __name__ == "__main__":
    main()
