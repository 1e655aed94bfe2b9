"""AIPROD-TTS v1: English text → 24 kHz speech (FastSpeech 2 + ProsodyModeler + HiFi-GAN).

    from aiprod_tts.synthesizer import FastSpeech2HiFiGAN
    tts = FastSpeech2HiFiGAN.from_pretrained("weights/aiprod-tts-v1")
    wav = tts.synthesize("Hello world", speed=1.1, pitch_shift=2)   # float32 [N] at tts.sample_rate
"""

__version__ = "0.1.0"
