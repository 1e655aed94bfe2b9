"""The one YAML reader of the project: safe, bounded, and strict about ambiguity.

PyYAML's ``SafeLoader`` builds only plain data, but it still expands aliases (a 630-byte
"billion laughs" document becomes gigabytes), recurses once per nesting level (5,000
levels end in a ``RecursionError``), reads any size, and lets the last of two equal keys
win silently. :class:`StrictLoader` refuses all of that:

* anchors and aliases (``&a`` / ``*a``) and merge keys (``<<``): a config spells out its values;
* more than :data:`MAX_DEPTH` nested collections or :data:`MAX_NODES` nodes;
* a key given twice in one mapping;
* a file over :data:`MAX_BYTES` or text that is not UTF-8.

Every refusal is a :class:`~aiprod_core.errors.ConfigError` with one line: file, line and
column, what was found. Messages quote at most a short excerpt of the input (:func:`excerpt`).
"""

from __future__ import annotations

import os
import reprlib
from pathlib import Path
from typing import Any

import yaml

from aiprod_core.errors import ConfigError

#: largest YAML file read (bytes); AIPROD_MAX_YAML_BYTES overrides it
MAX_BYTES = 1 << 20
#: deepest nesting of mappings / sequences
MAX_DEPTH = 64
#: most nodes (scalars + collections) in one document
MAX_NODES = 200_000
#: longest excerpt of an input value quoted in a message
EXCERPT = 80

_repr = reprlib.Repr()
_repr.maxstring = EXCERPT
_repr.maxother = EXCERPT
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 6
_repr.maxlevel = 3


def excerpt(value: Any, limit: int = EXCERPT) -> str:
    """A short ``repr`` of ``value`` for a message: long strings and collections are cut with ``...``."""
    try:
        text = _repr.repr(value)
    except Exception:  # a broken __repr__ must not hide the real problem
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text.replace("\n", "\\n")


def clip(text: str, limit: int = 300) -> str:
    """Cut a message part to ``limit`` characters on one line."""
    text = " ".join(str(text).split("\n"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _max_bytes() -> int:
    try:
        return int(os.environ.get("AIPROD_MAX_YAML_BYTES", MAX_BYTES))
    except ValueError:
        return MAX_BYTES


class _Refused(yaml.MarkedYAMLError):
    """A document :class:`StrictLoader` will not build (alias, duplicate key, too deep...)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` without aliases, anchors, merge keys and duplicate keys, and with depth/node limits."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(f"alias *{clip(event.anchor, 40)} is not allowed (write the value out)", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise _Refused(f"anchor &{clip(event.anchor, 40)} is not allowed (write the value out)", event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES} values in one document", event.start_mark)
        collection = isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent))
        if collection:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            if collection:
                self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise _Refused("merge key '<<' is not allowed (write the keys out)", key_node.start_mark)
                if isinstance(key_node, yaml.ScalarNode):
                    key = self.construct_object(key_node, deep=True)
                    try:
                        hash(key)
                    except TypeError:
                        continue  # the base class reports unhashable keys
                    if key in seen:
                        raise _Refused(f"duplicate key {excerpt(key, 60)} (each key once per mapping)",
                                       key_node.start_mark)
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _where(err: Exception) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def loads(text: str, source: str, what: str = "invalid YAML") -> Any:
    """Parse one YAML document from ``text`` with :class:`StrictLoader`; problems name ``source``."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except _Refused as err:
        raise ConfigError([f"{source}: {_where(err)}{err.problem}"]) from None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or (str(err).splitlines() or ["unreadable"])[0]
        raise ConfigError([f"{source}: {_where(err)}{what}: {clip(problem, 200)}"]) from None
    except (ValueError, OverflowError, RecursionError, TypeError) as err:
        # e.g. an integer of more than 4300 digits; never a traceback for a bad input
        raise ConfigError([f"{source}: {what}: {clip(f'{type(err).__name__}: {err}', 200)}"]) from None


def load_file(path: str | Path) -> Any:
    """Read and parse a YAML file: size limit, strict UTF-8, then :func:`loads`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: file not found" if not path.exists() else f"{path}: not a file"])
    limit = _max_bytes()
    try:
        size = path.stat().st_size
        if size > limit:
            raise ConfigError([f"{path}: {size} bytes; a YAML config is at most {limit} bytes "
                               "(AIPROD_MAX_YAML_BYTES raises the limit)"])
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError([f"{path}: cannot read ({err.strerror or err})"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ConfigError([f"{path}: line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})"]) from None
    return loads(text, str(path))
