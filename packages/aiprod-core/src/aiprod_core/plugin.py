"""The core's own plugin entry point (``core = aiprod_core.plugin``).

The core ships no model; it registers through the same hooks as every other plugin so
that ``aiprod plugins`` shows it, and owns the quantizer backends once they land.
"""

from __future__ import annotations

from aiprod_core.hookspecs import hookimpl


@hookimpl
def aiprod_register_components() -> list:
    return []
