"""Contract tests every component runs against its tiny preset — ours and third parties'.

Subclass :class:`ComponentContract` in a test module::

    class TestMyCodecContract(ComponentContract):
        kind = "audio-codec"
        name = "my-codec"
        preset = "tiny"

        def make_inputs(self, module):
            return {"wav": torch.randn(1, 1, 2400, generator=torch.Generator().manual_seed(0))}

        def expected_shapes(self, inputs):
            return (1, 1, 2400)

pytest collects the ``test_*`` methods below for it.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from aiprod_core.errors import AiprodError, VerificationError


def flatten_shapes(out: Any) -> Any:
    """Output → comparable shape structure: tensor → tuple, sequence → list, mapping → dict."""
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        out = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    if isinstance(out, dict):
        return {k: flatten_shapes(v) for k, v in out.items() if isinstance(v, (torch.Tensor, dict, list, tuple))}
    if isinstance(out, (list, tuple)):
        return [flatten_shapes(v) for v in out]
    return None


def flatten_tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        out = [getattr(out, f.name) for f in dataclasses.fields(out)]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_tensors(v)]
    return []


def _normalise(shapes: Any) -> Any:
    if isinstance(shapes, dict):
        return {k: _normalise(v) for k, v in shapes.items()}
    if isinstance(shapes, list):
        return [_normalise(v) for v in shapes]
    return tuple(shapes)


def seed_all(seed: int = 0) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class ComponentContract:
    """Mixin of contract tests. Set ``kind``, ``name``, ``preset``; implement ``make_inputs``
    and ``expected_shapes``; override ``run_forward`` when the call is not ``module(**inputs)``."""

    kind: str
    name: str
    preset: str = "tiny"
    #: relative tolerance of bfloat16 outputs against float32 (only finiteness is required by default)
    bf16_check_close: bool = False

    # -- to implement -------------------------------------------------------------------
    def make_inputs(self, module: torch.nn.Module) -> dict[str, Any]:
        raise NotImplementedError

    def expected_shapes(self, inputs: dict[str, Any]) -> Any:
        raise NotImplementedError

    def run_forward(self, module: torch.nn.Module, inputs: dict[str, Any]) -> Any:
        return module(**inputs)

    # -- helpers ---------------------------------------------------------------------------
    def spec(self):
        from aiprod_core.registry import get_registry

        return get_registry().component(self.kind, self.name)

    def build(self) -> torch.nn.Module:
        seed_all(0)
        return self.spec().build(self.preset).eval()

    def forward(self, module: torch.nn.Module, inputs: dict[str, Any]) -> Any:
        seed_all(1234)
        with torch.no_grad():
            return self.run_forward(module, inputs)

    @staticmethod
    def cast_inputs(inputs: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
        return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inputs.items()}

    # -- the contract ----------------------------------------------------------------------
    def test_registered_through_entry_point(self):
        spec = self.spec()
        assert spec.kind == self.kind and spec.name == self.name
        assert spec.distribution not in ("", "<local>"), "components register through an `aiprod` entry point"
        assert self.preset in spec.presets, f"preset {self.preset!r} missing; have {list(spec.presets)}"

    def test_satisfies_protocol(self):
        from aiprod_core.interfaces import PROTOCOLS

        proto = PROTOCOLS.get(self.kind)
        if proto is None:
            pytest.skip(f"no protocol for kind {self.kind}")
        assert isinstance(self.build(), proto), f"{self.name} does not satisfy {proto.__name__}"

    def test_forward_shapes_float32(self):
        module = self.build().float()
        inputs = self.make_inputs(module)
        out = self.forward(module, inputs)
        assert _normalise(flatten_shapes(out)) == _normalise(self.expected_shapes(inputs))
        for t in flatten_tensors(out):
            if t.is_floating_point():
                assert torch.isfinite(t).all(), "non-finite output in float32"

    def test_forward_bfloat16(self):
        module = self.build().to(torch.bfloat16)
        inputs = self.cast_inputs(self.make_inputs(module), torch.bfloat16)
        out = self.forward(module, inputs)
        assert _normalise(flatten_shapes(out)) == _normalise(self.expected_shapes(inputs))
        for t in flatten_tensors(out):
            if t.is_floating_point():
                assert torch.isfinite(t.float()).all(), "non-finite output in bfloat16"

    def test_save_load_roundtrip_exact(self, tmp_path: Path, monkeypatch):
        monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / "cache"))
        module = self.build()
        folder = module.save_pretrained(tmp_path / "component")
        loaded = type(module).from_pretrained(folder)
        a, b = module.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{k} differs after save/load"
        inputs = self.make_inputs(module)
        for x, y in zip(flatten_tensors(self.forward(module, inputs)), flatten_tensors(self.forward(loaded, inputs))):
            assert torch.equal(x, y), "outputs differ after save/load"

    def test_meta_build_matches(self):
        module = self.build()
        spec = self.spec()
        with torch.device("meta"):
            meta = spec.build(self.preset)
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert count(meta) == count(module)

    def test_tampered_weights_refused(self, tmp_path: Path, monkeypatch):
        monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / "cache"))
        module = self.build()
        folder = module.save_pretrained(tmp_path / "component")
        target = max(folder.glob("*.safetensors"), key=lambda p: p.stat().st_size)
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
        with pytest.raises(VerificationError):
            type(module).from_pretrained(folder)

    def test_bad_config_is_one_line_error(self):
        spec = self.spec()
        with pytest.raises(AiprodError) as exc:
            spec.build(self.preset, this_key_does_not_exist=1)
        assert "this_key_does_not_exist" in str(exc.value)
