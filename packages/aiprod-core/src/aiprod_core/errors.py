"""Our own exceptions. The CLI prints each problem as one line and exits with code 2.

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class AiprodError(Exception):
    """Base of every error the user can fix: bad input, bad file, missing dependency."""

    def lines(self) -> list[str]:
        return [str(self)]


class ConfigError(AiprodError):
    """One or more problems in a config; each problem is one line (where, what, expected)."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def lines(self) -> list[str]:
        return self.problems


class VerificationError(AiprodError):
    """A weights folder failed its checksum/manifest verification; no tensor was loaded."""


class PluginError(AiprodError):
    """A plugin could not be loaded or registered something invalid."""
