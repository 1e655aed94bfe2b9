"""AIPROD core: interfaces, plugin registry, weights store, pipeline runner and CLI.

Plugin authors write ``@aiprod_core.hookimpl`` on functions in their ``plugin`` module
and point an ``aiprod`` entry point at that module (see docs/plugins.md).
"""

from aiprod_core.errors import AiprodError, ConfigError, VerificationError
from aiprod_core.hookspecs import hookimpl, hookspec
from aiprod_core.records import ComponentSpec, PipelineSpec, RecipeSpec

__version__ = "0.1.0"

__all__ = [
    "AiprodError",
    "ComponentSpec",
    "ConfigError",
    "PipelineSpec",
    "RecipeSpec",
    "VerificationError",
    "__version__",
    "hookimpl",
    "hookspec",
]
