"""AIPROD end-to-end pipelines.

- :mod:`aiprod_pipelines.api`: the pipeline objects (:class:`TextToVideoPipeline`, :class:`TextToSpeechPipeline`,
  :class:`VideoReconstructPipeline`) with ``from_pretrained`` / ``save_pretrained`` / ``to`` / ``__call__``;
- :mod:`aiprod_pipelines.serve`: ``aiprod serve``, an HTTP job server over the same pipelines;
- :mod:`aiprod_pipelines.media`: mp4 (H.264 + AAC, PyAV) and wav (soundfile) I/O, audio/video length rules;
- :mod:`aiprod_pipelines.text_to_video`: the ``text-to-video`` pipeline kind (``aiprod run``);
- :mod:`aiprod_pipelines.eval`: ``aiprod eval`` (PSNR, SI-SDR, mel distance, colour-hit rate);
- :mod:`aiprod_pipelines.corpus`: the captioned video corpus (coloured shapes over ``skimage.data`` photos).

Models are reached only through the registry (:class:`aiprod_core.pipeline.ComponentRef`) and the
Protocols of :mod:`aiprod_core.interfaces`; no model package is imported here.
"""

__version__ = "0.1.0"

_API = ("TextToVideoPipeline", "TextToSpeechPipeline", "VideoReconstructPipeline", "Pipeline", "VideoOutput",
        "AudioOutput")
__all__ = [*_API]


def __getattr__(name: str):  # the pipeline objects import torch: only on first use
    if name in _API:
        from aiprod_pipelines import api

        return getattr(api, name)
    raise AttributeError(f"module 'aiprod_pipelines' has no attribute {name!r}")
