"""State-dict shapes without torch: what a component config builds, for ``aiprod validate``.

A plugin gives its component a ``shapes`` function (``ComponentSpec.shapes``, next to its config
class, in a module that imports neither torch nor model code) that returns the state-dict
key -> shape mapping its factory builds from a validated config. :mod:`aiprod_core.checks` then
counts parameters and compares a weights folder's tensors without building the module. Each family
tests its function against a meta-device build of every preset (``assert_shapes_match``).

:class:`Shapes` writes the entries of the usual torch layers under their torch names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


class Shapes(dict):
    """``{state-dict key: shape tuple}``, filled with the torch layers' parameter names."""

    def param(self, name: str, *shape: int) -> Shapes:
        self[name] = tuple(int(d) for d in shape)
        return self

    def linear(self, name: str, fin: int, fout: int, bias: bool = True) -> Shapes:
        self.param(f"{name}.weight", fout, fin)
        return self.param(f"{name}.bias", fout) if bias else self

    def conv(self, name: str, cin: int, cout: int, kernel: Iterable[int], groups: int = 1, bias: bool = True) -> Shapes:
        """``nn.Conv1d/2d/3d`` (``kernel`` has one entry per spatial axis)."""
        self.param(f"{name}.weight", cout, cin // groups, *kernel)
        return self.param(f"{name}.bias", cout) if bias else self

    def conv_transpose(self, name: str, cin: int, cout: int, kernel: Iterable[int], groups: int = 1,
                       bias: bool = True) -> Shapes:
        self.param(f"{name}.weight", cin, cout // groups, *kernel)
        return self.param(f"{name}.bias", cout) if bias else self

    def norm(self, name: str, dim: int, bias: bool = True) -> Shapes:
        """``nn.LayerNorm`` / ``GroupNorm`` with affine parameters (``bias=False``: RMSNorm, weight only)."""
        self.param(f"{name}.weight", dim)
        return self.param(f"{name}.bias", dim) if bias else self

    def embedding(self, name: str, num: int, dim: int) -> Shapes:
        return self.param(f"{name}.weight", num, dim)

    def lstm(self, name: str, input_size: int, hidden: int, layers: int, bidirectional: bool = False) -> Shapes:
        """``nn.LSTM`` (bias, no projection)."""
        for i in range(layers):
            for sfx in ("", "_reverse") if bidirectional else ("",):
                fin = input_size if i == 0 else hidden * (2 if bidirectional else 1)
                self.param(f"{name}.weight_ih_l{i}{sfx}", 4 * hidden, fin)
                self.param(f"{name}.weight_hh_l{i}{sfx}", 4 * hidden, hidden)
                self.param(f"{name}.bias_ih_l{i}{sfx}", 4 * hidden)
                self.param(f"{name}.bias_hh_l{i}{sfx}", 4 * hidden)
        return self

    def numel(self) -> int:
        return sum(math.prod(s) for s in self.values())


def numel(shapes: Mapping[str, Iterable[int]]) -> int:
    return sum(math.prod(s) for s in shapes.values())


def assert_shapes_match(shapes_fn: Any, factory: Any, config: Any) -> None:
    """Test helper: ``shapes_fn(config)`` equals the meta-device build's state dict, key for key, and its
    total equals the module's parameters and persistent buffers (imports torch)."""
    from aiprod_core.weights import meta_device

    with meta_device():
        module = factory(**config.model_dump())
    built = {k: tuple(t.shape) for k, t in module.state_dict().items()}
    got = shapes_fn(config)
    assert got is not None, "the shapes function cannot describe this config"
    got = dict(got)
    missing, extra = sorted(set(built) - set(got)), sorted(set(got) - set(built))
    assert not missing and not extra, f"missing {missing[:8]} ({len(missing)}), extra {extra[:8]} ({len(extra)})"
    wrong = {k: (got[k], built[k]) for k in built if tuple(got[k]) != built[k]}
    assert not wrong, f"wrong shapes (shapes fn, built): {dict(list(wrong.items())[:8])}"
    total = (sum(p.numel() for p in module.parameters())
             + sum(b.numel() for name, b in module.named_buffers() if name in built))
    assert numel(got) == total, (numel(got), total)
