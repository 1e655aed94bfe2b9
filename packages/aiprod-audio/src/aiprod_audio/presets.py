"""Named sizes of the ``nac-rvq`` codec (keyword arguments of :class:`aiprod_audio.model.NACCodec`).

- ``tiny``: CI/debug size (~0.3M parameters): same 24 kHz mono and 8 x 1024 RVQ, but a hop of 32 samples
  (750 Hz frames, 60 kbps) and two blocks instead of four, so that a few hundred CPU steps reach a
  positive SI-SDR (with the 320-sample hop a model this small only learns after thousands of steps).
- ``v1``: AIPROD Audio-VAE v1, ~50M parameters (model card), DAC-like widths with EnCodec's
  strides and LSTM bottleneck, and EnCodec's one residual unit per block (kernel 3) instead of DAC's three
  dilated k=7 units: a sixth of the residual units' multiply-adds (4 C^2 instead of 24 C^2 per sample), which
  is where the time goes at the 24 and 12 kHz stages, for the speed of EnCodec at its size (issue 21,
  ``benchmarks/audio_codec.py``: 0.45x the time of the old layout); the parameters the units gave up
  sit in a wider latent (960) at the 75 Hz bottleneck. The demo codec (``weights/tiny/audio_codec``) has the
  same layout and keeps its quality floor with it.
"""

PRESETS: dict[str, dict] = {
    "tiny": {
        "strides": [4, 8],
        "encoder_dim": 16,
        "decoder_dim": 64,
        "latent_dim": 32,
        "lstm_layers": 1,
        "num_codebooks": 8,
        "codebook_size": 1024,
        "codebook_dim": 8,
    },
    "v1": {
        "encoder_dim": 48,
        "decoder_dim": 1088,
        "latent_dim": 960,
        "lstm_layers": 2,
        "dilations": [1],
        "kernel_size": 3,
        "num_codebooks": 8,
        "codebook_size": 1024,
        "codebook_dim": 8,
    },
}
