"""Regenerate the example inputs in examples/assets/ (run from the repository root, after retraining
a demo component in weights/tiny/):

    python examples/assets/make_assets.py

- clip.mp4              12 frames 64x64 at 8 fps: a blue square moving right over the astronaut photo
                        (the captioned corpus' kind of clip) -> examples/video_reconstruct.yaml
- latents.safetensors   {"latents": [1, 32, 3, 4, 4]}: weights/tiny/hwvae's encoding of a 9-frame 32x32 clip of
                        a yellow circle moving left, i.e. a stage-1 latent of the two-stage path -> examples/upsample.yaml
- speech.flac           examples/text_to_speech.yaml's sentence in the demo voice (weights/tiny/tts), 24 kHz
                        -> examples/audio_encode.yaml
- speech_codes.safetensors  speech.flac through examples/audio_encode.yaml (weights/tiny/audio_codec, 6 kbps)
                        -> examples/audio_decode.yaml (the codes name their codec; another codec is refused)

Everything is seeded; the files are small (tens of kB) and committed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "examples" / "assets"


def main() -> None:
    from safetensors.torch import save_file

    from aiprod_core.pipeline import run_document
    from aiprod_core.weights import load_component
    from aiprod_pipelines.corpus import render_clip
    from aiprod_pipelines.media import frames_to_video, read_wav, write_mp4

    os.chdir(ROOT)  # the examples name weights/tiny/<component> relative to the working directory
    torch.manual_seed(0)
    clip = render_clip("blue", "square", "right", "astronaut", size=64, frames=12, rng=np.random.default_rng(1))
    write_mp4(ASSETS / "clip.mp4", clip, 8, crf=18, overwrite=True)

    small = render_clip("yellow", "circle", "left", "coffee", size=32, frames=9, rng=np.random.default_rng(2))
    vae = load_component(ROOT / "weights/tiny/hwvae", device="cpu")
    with torch.no_grad():
        latents = vae.encode(torch.from_numpy(frames_to_video(small))[None].float())
    save_file({"latents": latents.contiguous()}, str(ASSETS / "latents.safetensors"))

    wav = ASSETS / "speech.wav"
    run_document(ROOT / "examples/text_to_speech.yaml", [f"output={wav}"], expect="pipeline", device="cpu",
                 dtype="float32", quiet=True, overwrite=True)
    import soundfile as sf

    audio, sr = read_wav(wav)
    sf.write(str(ASSETS / "speech.flac"), audio, sr, subtype="PCM_16", format="FLAC")
    wav.unlink()
    run_document(ROOT / "examples/audio_encode.yaml", [f"input={ASSETS / 'speech.flac'}",
                                                        "output=examples/assets/speech_codes.safetensors"],
                 expect="pipeline", device="cpu", dtype="float32", quiet=True, overwrite=True)
    for p in sorted(ASSETS.iterdir()):
        print(f"{p.relative_to(ROOT)}: {p.stat().st_size / 1e3:.1f} kB")


if __name__ == "__main__":
    main()
