"""Pipeline objects: load a pipeline folder once, call it like a function (the diffusers way).

    from aiprod_pipelines import TextToVideoPipeline
    pipe = TextToVideoPipeline.from_pretrained("weights/tiny")
    out = pipe("a red circle moving left over a photo of a cat", num_inference_steps=8, seed=0)
    out.save("out/clip.mp4")                      # .mp4 | .webm | .gif | a folder of PNGs (+ wav)

A *pipeline folder* holds its component folders and a small ``pipeline.json``::

    {"format": "aiprod-pipeline/1", "pipeline": "text-to-video",
     "components": {"text_encoder": "text_encoder", "denoiser": "shdt", "autoencoder": "hwvae",
                    "speech": "tts", "upsampler": "upsampler"},
     "defaults": {"num_frames": 17, "height": 64, "width": 64, "num_inference_steps": 8, ...}}

Loading verifies ``pipeline.json`` against the folder's ``MANIFEST.json`` (``aiprod manifest DIR``)
and each component against its own manifest, like any ``weights:`` folder. The ``aiprod run``
pipeline kinds (``text-to-video``) are thin wrappers that build the same objects from the YAML's
component references (:func:`aiprod_pipelines.text_to_video.run`).

Components are reached through the registry and the Protocols of :mod:`aiprod_core.interfaces`:
no model package is imported here. Sampling goes through a registered ``sampler`` component
(``euler``, ``heun``, ``dpm++2m`` from aiprod-shdt), the one integrator of the stack.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from aiprod_core.errors import AiprodError

PIPELINE_FILE = "pipeline.json"
FORMAT = "aiprod-pipeline/1"


# -- outputs -------------------------------------------------------------------------------------------
@dataclass
class VideoOutput:
    """What :class:`TextToVideoPipeline` returns: one entry per prompt."""

    frames: list[np.ndarray]  # uint8 [T, H, W, 3] each
    audio: list[np.ndarray | None]  # float32 [N] mono each (None: no speech component)
    sample_rate: int | None
    fps: float
    prompts: list[str] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)

    def save(self, path: str | Path, index: int = 0, *, sync: str = "longest", overwrite: bool = False,
             **kw: Any) -> Path:
        """Write clip ``index``; the format follows the extension (:func:`aiprod_pipelines.media.write_output`)."""
        from aiprod_pipelines.media import write_output

        return write_output(path, self.frames[index], self.fps, self.audio[index], self.sample_rate,
                            sync=sync, overwrite=overwrite, **kw)


@dataclass
class AudioOutput:
    audio: list[np.ndarray]
    sample_rate: int

    def save(self, path: str | Path, index: int = 0, *, overwrite: bool = False) -> Path:
        from aiprod_pipelines.media import write_wav

        return write_wav(path, self.audio[index], self.sample_rate, overwrite=overwrite)


# -- pipeline folders ------------------------------------------------------------------------------------
def read_pipeline_json(folder: Path) -> dict[str, Any]:
    path = folder / PIPELINE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AiprodError(f"{folder}: no {PIPELINE_FILE}; a pipeline folder holds its component folders "
                          f"and a {PIPELINE_FILE} naming them") from None
    except ValueError as err:
        raise AiprodError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("components"), dict):
        raise AiprodError(f"{path}: expected {{'format': {FORMAT!r}, 'pipeline': ..., 'components': {{...}}}}")
    return data


def verify_pipeline_json(folder: Path, force: bool = False) -> None:
    """``pipeline.json`` must be listed, with its size and SHA-256, in the folder's ``MANIFEST.json``."""
    from aiprod_core.errors import VerificationError
    from aiprod_core.store import MANIFEST, hash_files

    man = folder / MANIFEST
    if not man.is_file():
        raise VerificationError(f"{folder}: no {MANIFEST}; write one with `aiprod manifest {folder}`")
    try:
        entries = {e["path"]: e for e in json.loads(man.read_text())["files"]}
    except (ValueError, KeyError, TypeError) as err:
        raise VerificationError(f"{man}: not a manifest ({err})") from None
    entry = entries.get(PIPELINE_FILE)
    path = folder / PIPELINE_FILE
    if entry is None:
        raise VerificationError(f"{path}: not listed in {man}; refusing an unverified file")
    if path.stat().st_size != entry["bytes"] or hash_files([path], force=force)[path] != entry["sha256"]:
        raise VerificationError(f"{path}: does not match {man}")


class Pipeline:
    """Base of the pipeline objects: components by key, ``from_pretrained``, ``save_pretrained``, ``to``."""

    pipeline_name: ClassVar[str] = ""
    #: key → component kind; keys in ``optional`` may be None
    component_kinds: ClassVar[dict[str, str]] = {}
    optional: ClassVar[frozenset[str]] = frozenset()
    default_values: ClassVar[dict[str, Any]] = {}

    def __init__(self, **components: Any) -> None:
        from aiprod_core.interfaces import PROTOCOLS

        unknown = set(components) - set(self.component_kinds) - {"defaults"}
        if unknown:
            raise AiprodError(f"{type(self).__name__}: unknown components {sorted(unknown)} "
                              f"(expected {', '.join(self.component_kinds)})")
        self.defaults = {**self.default_values, **(components.pop("defaults", None) or {})}
        self.components: dict[str, Any] = {}
        for key, kind in self.component_kinds.items():
            module = components.get(key)
            if module is None:
                if key not in self.optional:
                    raise AiprodError(f"{type(self).__name__}: component {key!r} ({kind}) is required")
                self.components[key] = None
                continue
            proto = PROTOCOLS.get(kind)
            if proto is not None and not isinstance(module, proto):
                raise AiprodError(f"{key}: {type(module).__name__} does not implement the {kind} interface "
                                  f"(aiprod_core.interfaces.{proto.__name__})")
            self.components[key] = module
        self.device = self._first_device()
        self.dtype: torch.dtype | None = None
        self.offload: str | None = None
        self._hooks: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        comps = self.__dict__.get("components")
        if comps is not None and name in comps:
            return comps[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def _first_device(self) -> torch.device:
        for m in self.components.values():
            p = next(m.parameters(), None) if isinstance(m, torch.nn.Module) else None
            if p is not None:
                return p.device
        return torch.device("cpu")

    # -- loading and saving -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, force_verify: bool = False, **overrides: Any) -> Pipeline:
        """Load a pipeline folder (verified), or a single component folder for one-component pipelines.

        ``Pipeline.from_pretrained(folder)`` returns the class its ``pipeline.json`` names."""
        from aiprod_core.weights import load_component, read_config

        folder = Path(os.path.expanduser(str(folder)))
        if not folder.is_dir():
            raise AiprodError(f"{folder}: pipeline folder not found")
        if not (folder / PIPELINE_FILE).is_file() and (folder / "config.json").is_file():
            kind = (read_config(folder).get("_aiprod") or {}).get("kind")
            keys = [k for k, v in cls.component_kinds.items() if v == kind]
            if len(keys) == 1 and all(k in cls.optional for k in cls.component_kinds if k != keys[0]):
                module = load_component(folder, device=device, dtype=dtype, force_verify=force_verify)
                return cls(**{keys[0]: module}, **overrides)
        verify_pipeline_json(folder, force_verify)
        spec = read_pipeline_json(folder)
        if cls is Pipeline:  # Pipeline.from_pretrained: the class pipeline.json names
            kind = spec.get("pipeline")
            if kind not in PIPELINES:
                raise AiprodError(f"{folder / PIPELINE_FILE}: pipeline {kind!r} unknown (known: {', '.join(PIPELINES)})")
            return PIPELINES[kind].from_pretrained(folder, device=device, dtype=dtype, force_verify=force_verify,
                                                   **overrides)
        parts = spec["components"]
        loaded: dict[str, Any] = {}
        for key in cls.component_kinds:
            if key in overrides:
                loaded[key] = overrides.pop(key)
                continue
            sub = parts.get(key)
            if sub is None:
                continue
            sub_path = (folder / sub).resolve()
            if not sub_path.is_relative_to(folder.resolve()):
                raise AiprodError(f"{folder / PIPELINE_FILE}: components.{key}: {sub!r} escapes the pipeline folder")
            module = load_component(sub_path, device=device, dtype=dtype, force_verify=force_verify)
            if module.component_kind != cls.component_kinds[key]:
                raise AiprodError(f"{folder / PIPELINE_FILE}: components.{key}: {sub} holds a "
                                  f"{module.component_kind}, expected a {cls.component_kinds[key]}")
            loaded[key] = module
        defaults = {k: v for k, v in (spec.get("defaults") or {}).items() if k in cls.default_values}
        pipe = cls(**loaded, defaults={**defaults, **overrides.pop("defaults", {})}, **overrides)
        if dtype is not None:
            pipe.dtype = dtype
        return pipe

    def save_pretrained(self, folder: str | Path, *, dtype: torch.dtype | None = None) -> Path:
        """Write every component folder, ``pipeline.json`` and one manifest over the whole folder, atomically."""
        from aiprod_core.store import atomic_dir, write_manifest

        folder = Path(folder)
        if any(not lora.fused for lora in getattr(self, "loras", [])):
            raise AiprodError("save_pretrained: fuse_lora() first (or unload_lora()): unfused adapters are not weights")
        parts = {}
        with atomic_dir(folder) as tmp:
            for key, module in self.components.items():
                if module is None:
                    continue
                if not hasattr(module, "save_pretrained"):
                    raise AiprodError(f"save_pretrained: component {key!r} ({type(module).__name__}) cannot be saved")
                module.save_pretrained(tmp / key, dtype=dtype)
                parts[key] = key
            doc = {"format": FORMAT, "pipeline": self.pipeline_name, "class": f"{type(self).__module__}:{type(self).__qualname__}",
                   "components": parts, "defaults": self.defaults}
            (tmp / PIPELINE_FILE).write_text(json.dumps(doc, indent=2) + "\n")
            write_manifest(tmp)
        return folder

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Pipeline:
        """Move (and cast) every component; FP8-quantized components keep their FP8 weights."""
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        for module in self.components.values():
            if not isinstance(module, torch.nn.Module):
                continue
            if self.offload is None:
                module.to(self.device)
            if dtype is not None and not _is_quantized(module):
                module.to(dtype=dtype)
        return self

    # -- memory: offload -----------------------------------------------------------------------------
    def enable_model_cpu_offload(self, device: str | torch.device | None = None) -> Pipeline:
        """Keep components on the CPU; each moves to ``device`` only while it runs (``offload: model``)."""
        return self._set_offload("model", device)

    def enable_sequential_cpu_offload(self, device: str | torch.device | None = None) -> Pipeline:
        """Finer still: each leaf module's weights move to ``device`` for its own forward only."""
        return self._set_offload("sequential", device)

    def disable_offload(self) -> Pipeline:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self.offload = None
        return self.to(self.device)

    def _set_offload(self, mode: str, device: str | torch.device | None) -> Pipeline:
        if self.offload is not None:
            self.disable_offload()
        if device is not None:
            self.device = torch.device(device)
        self.offload = mode
        for module in self.components.values():
            if isinstance(module, torch.nn.Module):
                module.to("cpu")
                if mode == "sequential":
                    self._hooks += _sequential_hooks(module, self.device)
        return self

    @contextlib.contextmanager
    def _on_device(self, key: str) -> Iterator[Any]:
        """The component ``key``, on ``self.device`` for the duration of the block (offload: model)."""
        module = self.components[key]
        if self.offload == "model" and isinstance(module, torch.nn.Module):
            module.to(self.device)
            try:
                yield module
            finally:
                module.to("cpu")
        else:
            yield module


def _is_quantized(module: torch.nn.Module) -> bool:
    """FP8 weights (torch float8 dtypes or a quantization library's tensor subclass) are never cast."""
    return any(p.dtype.itemsize == 1 or type(p.data) is not torch.Tensor for p in module.parameters())


def _move_own(m: torch.nn.Module, device: torch.device | str) -> None:
    """Move the module's *own* parameters and buffers (not its children's), in place."""
    for p in m.parameters(recurse=False):
        p.data = p.data.to(device)
    for name, buf in m.named_buffers(recurse=False):
        if buf is not None:
            m._buffers[name] = buf.to(device)


def _sequential_hooks(module: torch.nn.Module, device: torch.device) -> list[Any]:
    """Forward hooks moving each module's own tensors to ``device`` for its forward, back to the CPU after
    (accelerate-style). A model that reads another module's ``.weight`` outside that module's forward (SHDT's
    fused AdaLN path does) needs ``offload: model`` on a GPU; on the CPU both are the same."""
    hooks = []
    for sub in module.modules():
        if next(sub.parameters(recurse=False), None) is None and next(sub.buffers(recurse=False), None) is None:
            continue

        def pre(m, args, kwargs):
            _move_own(m, device)
            return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args), kwargs

        def post(m, args, out):
            _move_own(m, "cpu")
            return out

        hooks.append(sub.register_forward_pre_hook(pre, with_kwargs=True))
        hooks.append(sub.register_forward_hook(post))
    return hooks


# -- text to video ----------------------------------------------------------------------------------------
def _param(module: Any) -> torch.Tensor | None:
    return next(module.parameters(), None) if isinstance(module, torch.nn.Module) else None


def _pad(t: torch.Tensor, m: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    extra = length - t.shape[1]
    if extra == 0:
        return t, m
    return torch.nn.functional.pad(t, (0, 0, 0, extra)), torch.nn.functional.pad(m, (0, extra), value=False)


def load_image(image: Any, width: int, height: int) -> torch.Tensor:
    """A path, PIL image or ``uint8 [H, W, 3]`` array → ``float32 [3, height, width]`` in [-1, 1] (resized)."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        path = Path(os.path.expanduser(str(image)))
        if not path.is_file():
            raise AiprodError(f"image: {path}: file not found")
        try:
            image = Image.open(path)
            image.load()
        except OSError as err:
            raise AiprodError(f"image: {path}: not a readable image ({err})") from None
    if isinstance(image, torch.Tensor):
        t = image.float()
        if t.dim() != 3 or t.shape[0] != 3:
            raise AiprodError(f"image: expected a [3, H, W] tensor in [-1, 1], got {list(t.shape)}")
        return torch.nn.functional.interpolate(t[None], size=(height, width), mode="bilinear",
                                               align_corners=False, antialias=True)[0]
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    rgb = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)
    return torch.from_numpy(rgb).permute(2, 0, 1) / 127.5 - 1.0


class TextToVideoPipeline(Pipeline):
    """prompt(s) → text-encoder → video-denoiser + sampler (→ x2 upsampler + refine) → video-autoencoder
    (→ speech-synthesizer narration). ``__call__`` returns frames and audio (:class:`VideoOutput`)."""

    pipeline_name = "text-to-video"
    component_kinds = {"text_encoder": "text-encoder", "denoiser": "video-denoiser", "autoencoder": "video-autoencoder",
                       "speech": "speech-synthesizer", "upsampler": "latent-upsampler"}
    optional = frozenset({"speech", "upsampler"})
    default_values = {"num_frames": 17, "height": 64, "width": 64, "num_inference_steps": 20, "guidance_scale": 4.0,
                      "fps": 8, "sampler": "euler", "batch_size": 1}

    def __init__(self, **components: Any) -> None:
        super().__init__(**components)
        self.vae_kwargs: dict[str, Any] = {}
        self.loras: list[Any] = []  # aiprod_pipelines.lora.LoadedLora
        self._check_fit()

    def _check_fit(self) -> None:
        te, dn, vae, up = (self.components[k] for k in ("text_encoder", "denoiser", "autoencoder", "upsampler"))
        if te.out_dim != dn.text_dim:
            raise AiprodError(f"text_encoder gives {te.out_dim}-wide embeddings, the denoiser expects text_dim {dn.text_dim}")
        if vae.latent_channels != dn.in_channels:
            raise AiprodError(f"autoencoder has {vae.latent_channels} latent channels, "
                              f"the denoiser expects in_channels {dn.in_channels}")
        up_ch = getattr(up, "latent_channels", None)
        if up_ch is not None and up_ch != dn.in_channels:
            raise AiprodError(f"upsampler has {up_ch} latent channels, the denoiser expects {dn.in_channels}")

    # -- options ------------------------------------------------------------------------------------------
    def enable_vae_tiling(self, tile: int | None = None, overlap: int = 16, chunk: int | None = None) -> Pipeline:
        """Decode in spatial tiles of ``tile`` latent pixels (cross-faded over ``overlap``) and/or
        ``chunk`` latent frames at a time: memory grows with the output, not with T·H·W activations."""
        import inspect

        kwargs = {k: v for k, v in {"tile": tile, "overlap": overlap if tile else None, "chunk": chunk}.items()
                  if v is not None}
        vae = self.components["autoencoder"]
        params = inspect.signature(vae.decode).parameters
        missing = [k for k in kwargs if k not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values())]
        if missing:
            raise AiprodError(f"vae_tiling: the autoencoder {type(vae).__name__} does not decode by "
                              f"{' / '.join(missing)} (its decode takes {', '.join(params)})")
        self.vae_kwargs = kwargs
        return self

    def disable_vae_tiling(self) -> Pipeline:
        self.vae_kwargs = {}
        return self

    def load_lora(self, path: str | Path, scale: float = 1.0, *, force_verify: bool = False) -> Pipeline:
        """Apply a LoRA exported by ``aiprod train`` (``<run>/final/lora``: peft ``adapter_model.safetensors``
        + ``adapter_config.json``), verified against its manifest, to the denoiser (not fused)."""
        from aiprod_pipelines.lora import load_lora

        self.loras.append(load_lora(self.components["denoiser"], path, scale, force_verify=force_verify))
        return self

    def fuse_lora(self) -> Pipeline:
        """Fold every loaded LoRA into the denoiser's weights (no extra matmuls while sampling)."""
        for lora in self.loras:
            lora.fuse()
        return self

    def unfuse_lora(self) -> Pipeline:
        """Take the fused LoRAs out of the weights again (they stay loaded, applied unfused)."""
        for lora in self.loras:
            lora.unfuse()
        return self

    def unload_lora(self) -> Pipeline:
        for lora in reversed(self.loras):
            lora.remove()
        self.loras = []
        return self

    # -- generation ---------------------------------------------------------------------------------------
    def _sampler(self, name: str | Any, progress: bool) -> Any:
        if not isinstance(name, str):
            return name
        from aiprod_core.errors import ConfigError
        from aiprod_core.registry import get_registry

        try:
            spec = get_registry().component("sampler", name)
        except ConfigError as err:
            raise AiprodError(f"sampler: {err.lines()[0]}") from None
        sampler = spec.build("default" if "default" in spec.presets else None)
        sampler.progress = progress
        return sampler

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str = "",
        *,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        callback_on_step_end: Callable | None = None,
        image: Any = None,
        narration: str | list[str | None] | None = None,
        speech_speed: float = 1.0,
        sampler: str | Any | None = None,
        batch_size: int | None = None,
        two_stage: dict[str, Any] | None = None,
        fps: float | None = None,
        progress: bool = True,
    ) -> VideoOutput:
        """Generate one clip per prompt (frames ``uint8 [T, H, W, 3]``) and its narration.

        ``generator`` (a CPU ``torch.Generator``) draws the noise of every clip in turn; without it clip
        ``i`` uses ``seed + i`` (``seed`` defaults to 0), so a clip does not depend on its batch.
        ``callback_on_step_end(pipe, step, sigma, {"latents": x})`` runs after every sampling step; a
        returned dict with ``"latents"`` replaces the state. ``image`` (path, PIL, array): first-frame
        conditioning, the encoded image is kept as the clean first latent frame through sampling.
        ``two_stage={"sigma": 0.6, "steps": 3}`` samples at half size, upsamples x2 and refines.
        ``narration`` (one text, or one per prompt; None speaks the prompt) needs a speech component.
        """
        from aiprod_pipelines.media import video_to_frames

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        videos = self.generate_videos(prompts, negative_prompt, num_frames=num_frames, height=height, width=width,
                                      num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                      generator=generator, seed=seed, callback_on_step_end=callback_on_step_end,
                                      image=image, sampler=sampler, batch_size=batch_size, two_stage=two_stage,
                                      progress=progress)
        narr = narration if isinstance(narration, list) else [narration] * len(prompts)
        if len(narr) != len(prompts):
            raise AiprodError(f"narration: {len(narr)} texts for {len(prompts)} prompts")
        audio, sr = self.narrate([n if n is not None else p for p, n in zip(prompts, narr, strict=True)], speech_speed)
        seeds = [None] * len(prompts) if generator is not None else [(seed or 0) + i for i in range(len(prompts))]
        return VideoOutput([video_to_frames(v) for v in videos], audio, sr, float(fps or self.defaults["fps"]),
                           prompts, seeds)

    @torch.no_grad()
    def narrate(self, texts: list[str], speed: float = 1.0) -> tuple[list[np.ndarray | None], int | None]:
        """Speak each text with the speech component (``[None] * n, None`` without one)."""
        if self.components["speech"] is None:
            return [None] * len(texts), None
        with self._on_device("speech") as sp:
            return [sp.synthesize(t, speed=speed).float().cpu().numpy() for t in texts], int(sp.sample_rate)

    @torch.no_grad()
    def generate_videos(
        self,
        prompts: list[str],
        negative_prompt: str = "",
        *,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        callback_on_step_end: Callable | None = None,
        image: Any = None,
        sampler: str | Any | None = None,
        batch_size: int | None = None,
        two_stage: dict[str, Any] | None = None,
        progress: bool = True,
        video: torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> list[torch.Tensor]:
        """The clips as ``float32 [3, T, H, W]`` in [-1, 1] on the CPU, one per prompt (see :meth:`__call__`).

        ``video`` (``[3, T, H, W]`` or one per prompt ``[B, 3, T, H, W]``, in [-1, 1]) with ``strength`` < 1:
        video to video (SDEdit, Meng et al. 2021, https://arxiv.org/abs/2108.01073): the clip is encoded,
        noised to ``sigma = strength`` and sampled back from there on the sampler's grid (its steps below
        ``strength``, so fewer than ``num_inference_steps``). ``aiprod eval --strength`` uses it to tell how
        much of a prompt the denoiser keeps when the layout is given."""
        d = self.defaults
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise AiprodError("prompt: expected a non-empty text (or a list of them)")
        frames_n = int(num_frames or d["num_frames"])
        height, width = int(height or d["height"]), int(width or d["width"])
        steps = int(num_inference_steps or d["num_inference_steps"])
        cfg = float(d["guidance_scale"] if guidance_scale is None else guidance_scale)
        batch = max(1, int(batch_size or d["batch_size"]))
        self._check_sizes(frames_n, height, width, two_stage is not None)
        init = self._video_latents(video, strength, len(prompts), frames_n, height, width, image, two_stage)
        smp = self._sampler(sampler or d["sampler"], progress)
        seeds = [None] * len(prompts) if generator is not None else [(seed or 0) + i for i in range(len(prompts))]
        first = None
        if image is not None:
            if two_stage is not None:
                raise AiprodError("image: first-frame conditioning is not supported with two_stage")
            first = self._vae_encode(load_image(image, width, height)[None, :, None])  # [1, C, 1, h, w]
        videos: list[torch.Tensor] = []
        for b0 in range(0, len(prompts), batch):
            latents = self._sample_latents(prompts[b0:b0 + batch], negative_prompt, frames_n, height, width, steps,
                                           cfg, smp, generator, seeds[b0:b0 + batch], callback_on_step_end, first,
                                           two_stage, None if init is None else (init[b0:b0 + batch], strength))
            with self._on_device("autoencoder") as vae_dev:
                p = _param(vae_dev)
                video = vae_dev.decode(latents.to(p.device, p.dtype), **self.vae_kwargs)
            if tuple(video.shape[-3:]) != (frames_n, height, width):
                raise AiprodError(f"the autoencoder decoded {tuple(video.shape[-3:])} (T, H, W), "
                                  f"expected {(frames_n, height, width)}")
            videos += list(video.float().clamp(-1, 1).cpu())
        return videos

    def _check_sizes(self, frames: int, height: int, width: int, two_stage: bool) -> None:
        dn, vae = self.components["denoiser"], self.components["autoencoder"]
        if two_stage and self.components["upsampler"] is None:
            raise AiprodError("two_stage: this pipeline has no upsampler component")
        step = vae.spatial_compression * dn.patch_size * (2 if two_stage else 1)
        for name, v in (("width", width), ("height", height)):
            if v % step or v <= 0:
                raise AiprodError(f"{name}: {v} is not a multiple of {step} (autoencoder x{vae.spatial_compression} "
                                  f"x patch {dn.patch_size}" + (" x upsampler 2)" if two_stage else ")"))
        if frames < 1 or (frames - 1) % vae.temporal_compression:
            raise AiprodError(f"num_frames: {frames} is not 1 + {vae.temporal_compression}k")

    def _video_latents(self, video, strength, n, frames, height, width, image, two_stage) -> torch.Tensor | None:
        """``video`` encoded, one latent clip per prompt (None without one); checks ``strength`` and sizes."""
        if video is None:
            if strength != 1.0:
                raise AiprodError(f"strength: {strength} needs a video to start from (video to video)")
            return None
        if not 0.0 < strength <= 1.0:
            raise AiprodError(f"strength: expected a noise level in (0, 1], got {strength}")
        if image is not None or two_stage is not None:
            raise AiprodError("video: video to video is not supported with image or two_stage")
        video = torch.as_tensor(video, dtype=torch.float32)
        if video.dim() == 4:
            video = video[None]
        if video.dim() != 5 or video.shape[0] not in (1, n) or tuple(video.shape[1:]) != (3, frames, height, width):
            raise AiprodError(f"video: expected [3, {frames}, {height}, {width}] or [{n}, 3, {frames}, {height}, "
                              f"{width}] in [-1, 1], got {list(video.shape)}")
        latents = self._vae_encode(video)
        return latents.expand(n, *latents.shape[1:])

    def _vae_encode(self, video: torch.Tensor) -> torch.Tensor:
        """``video [B, 3, T, H, W]`` in [-1, 1] -> normalised latents, float32 on the CPU (the autoencoder on its
        device and dtype for the call)."""
        with self._on_device("autoencoder") as vae_dev:
            p = _param(vae_dev)
            return vae_dev.encode(video if p is None else video.to(p.device, p.dtype)).float().cpu()

    def _encode(self, prompts: list[str], negative: str, cfg_on: bool):
        with self._on_device("text_encoder") as te:
            text, mask = te.encode(prompts)
            neg = None
            if cfg_on and negative:
                neg = te.encode([negative])
        return text, mask, neg

    def _sample_latents(self, prompts, negative, frames, height, width, steps, cfg, smp, generator, seeds,
                        callback_on_step_end, first, two_stage, start=None) -> torch.Tensor:
        vae = self.components["autoencoder"]
        cfg_on = cfg != 1.0
        text, mask, neg = self._encode(prompts, negative, cfg_on)
        b = len(prompts)
        factor = vae.spatial_compression * (2 if two_stage is not None else 1)
        shape = (vae.latent_channels, 1 + (frames - 1) // vae.temporal_compression, height // factor, width // factor)
        if generator is not None:
            noise = torch.randn((b, *shape), generator=generator)
        else:
            noise = torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(s)) for s in seeds])
        with self._on_device("denoiser") as dn:
            p = _param(dn)
            device, dtype = p.device, p.dtype
            if self.offload == "sequential":
                device = self.device
            if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
                dtype = self.dtype or torch.float32
            velocity = _guided_velocity(dn, text.to(device, dtype), mask.to(device).bool(), neg, cfg, device, dtype)
            num_tokens = shape[1] * (shape[2] // dn.patch_size) * (shape[3] // dn.patch_size)
            sigmas = smp.sigmas(steps, num_tokens)
            if start is not None:  # video to video: from the clip noised to sigma = strength, the grid below it
                init, strength = start
                noise = (1.0 - strength) * init + strength * noise
                sigmas = torch.cat([torch.tensor([strength]), sigmas[sigmas < strength]])
            callback = None
            if first is not None:
                ff = first.to(device).expand(b, -1, -1, -1, -1)

                def callback(x: torch.Tensor, s: float) -> torch.Tensor:  # the conditioning frame stays clean
                    x = x.clone()
                    x[:, :, :1] = ff
                    return x

            on_step = None
            if callback_on_step_end is not None:
                def on_step(i: int, s: float, x: torch.Tensor):
                    out = callback_on_step_end(self, i, s, {"latents": x})
                    return out.get("latents") if isinstance(out, dict) else None

            x = smp.sample(velocity, noise.to(device), sigmas, callback=callback, on_step=on_step)
            if two_stage is not None:
                x = self._refine(dn, velocity, smp, x, generator, seeds, two_stage, device)
        return x

    def _refine(self, dn, velocity, smp, low, generator, seeds, two_stage, device) -> torch.Tensor:
        """Stage 2 (LTX-Video multi-scale): x2 upsample, re-noise to ``sigma``, the same sampler back to 0."""
        sigma, steps = float(two_stage.get("sigma", 0.6)), int(two_stage.get("steps", 3))
        if not 0 < sigma <= 1 or steps < 1:
            raise AiprodError(f"two_stage: sigma must be in (0, 1] and steps >= 1, got {sigma}, {steps}")
        with self._on_device("upsampler") as up:
            p = _param(up)
            x = up(low.to(p.device if p is not None else device, p.dtype if p is not None else low.dtype)).float()
        if generator is not None:
            noise = torch.randn(x.shape, generator=generator)
        else:
            noise = torch.cat([torch.randn((1, *x.shape[1:]), generator=torch.Generator().manual_seed(s + 1))
                               for s in seeds])
        x = (1.0 - sigma) * x.to(device) + sigma * noise.to(device)
        return smp.sample(velocity, x, torch.linspace(sigma, 0.0, steps + 1))


def _guided_velocity(dn: Any, text, mask, neg, cfg: float, device, dtype) -> Callable:
    """``f(x, sigma) -> v``; classifier-free guidance (Ho & Salimans 2022) in one batch when ``cfg != 1``:
    ``v = v_u + g (v_c - v_u)`` against the negative prompt or the empty (all-masked) one."""
    b = text.shape[0]
    if cfg == 1.0:
        return lambda x, s: dn(x.to(dtype), s.to(dtype), text, mask)
    if neg is None:
        neg_t, neg_m = torch.zeros_like(text), torch.zeros_like(mask)
    else:
        neg_t = neg[0].to(device, dtype).expand(b, -1, -1)
        neg_m = neg[1].to(device).bool().expand(b, -1)
    length = max(text.shape[1], neg_t.shape[1])
    (t, m), (nt, nm) = _pad(text, mask, length), _pad(neg_t, neg_m, length)
    t_all, m_all = torch.cat([t, nt]), torch.cat([m, nm])

    def f(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        v = dn(torch.cat([x, x]).to(dtype), torch.cat([s, s]).to(dtype), t_all, m_all).float()
        v_c, v_u = v.chunk(2)
        return v_u + cfg * (v_c - v_u)

    return f


# -- text to speech -----------------------------------------------------------------------------------------
class TextToSpeechPipeline(Pipeline):
    """text → speech-synthesizer → mono waveform. ``from_pretrained`` takes a pipeline folder with a
    ``speech`` component or a speech-synthesizer folder itself."""

    pipeline_name = "tts"
    component_kinds = {"speech": "speech-synthesizer"}
    default_values = {"speed": 1.0}

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], *, speed: float | None = None, pitch_shift: float = 0.0,
                 pitch_scale: float = 1.0, energy_scale: float = 1.0) -> AudioOutput:
        texts = [prompt] if isinstance(prompt, str) else list(prompt)
        speed = float(speed or self.defaults["speed"])
        with self._on_device("speech") as sp:
            audio = [sp.synthesize(t, speed=speed, pitch_shift=pitch_shift, pitch_scale=pitch_scale,
                                   energy_scale=energy_scale).float().cpu().numpy() for t in texts]
            return AudioOutput(audio, int(sp.sample_rate))


# -- video reconstruct ---------------------------------------------------------------------------------------
class VideoReconstructPipeline(Pipeline):
    """``uint8 [T, H, W, 3]`` frames → video-autoencoder encode + decode → frames (and the PSNR)."""

    pipeline_name = "video-reconstruct"
    component_kinds = {"autoencoder": "video-autoencoder"}

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        from aiprod_pipelines.media import frames_to_video, video_to_frames

        with self._on_device("autoencoder") as vae:
            p = _param(vae)
            t = vae.temporal_compression
            n = 1 + (frames.shape[0] - 1) // t * t
            x = torch.from_numpy(frames_to_video(frames[:n]))[None].to(p.device, p.dtype)
            y = vae.decode(vae.encode(x), **getattr(self, "vae_kwargs", {}))
        out = video_to_frames(y[0].float().cpu())
        mse = float(np.mean((out.astype(np.float64) - frames[:n].astype(np.float64)) ** 2))
        return out, (math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse))


PIPELINES: dict[str, type[Pipeline]] = {c.pipeline_name: c for c in
                                        (TextToVideoPipeline, TextToSpeechPipeline, VideoReconstructPipeline)}
