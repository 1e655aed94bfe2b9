"""AIPROD-Text-Encoder v1: Gemma 3 (local, frozen) + LoRA + a connector into SHDT"s text space."""

# Lazy (PEP 562): importing the package -- as the plugin registry does to locate its modules -- must not
# import torch, so that ``aiprod --help`` and ``aiprod plugins`` start fast.
_LAZY = {
    "Gemma3LoraConfig": "aiprod_textenc.config",
    "Gemma3LoraTextEncoder": "aiprod_textenc.model",
}

__all__ = ["Gemma3LoraConfig", "Gemma3LoraTextEncoder"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
