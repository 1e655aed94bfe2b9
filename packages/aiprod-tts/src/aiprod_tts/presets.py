"""Named sizes of the ``fastspeech2-hifigan`` synthesizer (keyword arguments of FastSpeech2HiFiGAN).

* ``v1``: the model card's AIPROD-TTS v1, about 80M parameters (78.7M: acoustic 65.6M + vocoder 13.0M):
  FastSpeech 2 at width 384 with the paper's depth (4 encoder + 6 decoder FFT blocks, conv kernels 9/1),
  ProsodyModeler, aligner, Tacotron 2 post-net, and the HiFi-GAN V1 generator (512 channels, MRF kernels
  3/7/11) with an iSTFT head (iSTFTNet): upsampling 8·4, then an inverse STFT of 32 points and hop 8 (17
  magnitudes + 17 phases a frame) in place of V1's last stages, hop 8·4·8 = 256 at 24 kHz. Measured
  (``benchmarks/tts.py``, issue 21, 2 threads): the vocoder in 0.34x HiFi-GAN V1's time, the whole synthesis
  at RTF 0.16; iSTFTNet's own C8C8I (8·8, n_fft 16, hop 4) took 0.56x V1's time (RTF 0.24). The demo
  voice retrained in both layouts with the same recipe (weights/tiny/README.md): equal phoneme error rates,
  mel distance 1 % (8·8) / 3 % (8·4) above its HiFi-GAN vocoder's.
* ``tiny``: a few hundred thousand parameters for tests and CI; same code paths.
"""

from __future__ import annotations

V1 = {
    "frontend": {"mode": "phoneme", "language": "en-us"},
    "audio": {"sample_rate": 24000, "n_fft": 1024, "win_length": 1024, "hop_length": 256, "n_mels": 80,
              "f_min": 0.0, "f_max": 12000.0},
    "acoustic": {"hidden": 384, "heads": 2, "ffn_dim": 1344, "ffn_kernels": (9, 1), "encoder_layers": 4,
                 "decoder_layers": 6, "dropout": 0.1, "predictor_channels": 384, "predictor_kernel": 3,
                 "predictor_dropout": 0.5, "postnet_channels": 512, "postnet_layers": 5, "aligner_channels": 80},
    "vocoder": {"upsample_initial_channel": 512, "upsample_rates": (8, 4), "upsample_kernel_sizes": (16, 8),
                "resblock_kernel_sizes": (3, 7, 11), "resblock_dilations": ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
                "istft": {"n_fft": 32, "hop": 8}},  # hop 8 * 4 * 8 = 256
}

TINY = {
    "frontend": {"mode": "phoneme", "language": "en-us"},
    "audio": {"sample_rate": 24000, "n_fft": 1024, "win_length": 1024, "hop_length": 256, "n_mels": 80,
              "f_min": 0.0, "f_max": 12000.0},
    "acoustic": {"hidden": 64, "heads": 2, "ffn_dim": 128, "ffn_kernels": (3, 1), "encoder_layers": 2,
                 "decoder_layers": 2, "dropout": 0.0, "predictor_channels": 64, "predictor_kernel": 3,
                 "predictor_dropout": 0.0, "postnet_channels": 0, "postnet_layers": 0, "aligner_channels": 32},
    "vocoder": {"upsample_initial_channel": 32, "upsample_rates": (8, 8, 4), "upsample_kernel_sizes": (16, 16, 8),
                "resblock_kernel_sizes": (3,), "resblock_dilations": ((1, 3),)},
}

PRESETS = {"tiny": TINY, "v1": V1}
