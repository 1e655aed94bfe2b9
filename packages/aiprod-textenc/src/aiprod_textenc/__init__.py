"""AIPROD-Text-Encoder v1: Gemma 3 (local, frozen) + LoRA + a connector into SHDT's text space."""

from aiprod_textenc.model import Gemma3LoraConfig, Gemma3LoraTextEncoder

__all__ = ["Gemma3LoraConfig", "Gemma3LoraTextEncoder"]
