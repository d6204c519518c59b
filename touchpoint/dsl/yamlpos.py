"""YAML with the source line of every key and value kept, for errors that point at the line.

PyYAML's safe loader is used with two changes that matter to CS ops:
- YAML 1.1's ``yes``/``no``/``on``/``off`` are plain strings (Norway's country code ``NO`` stays
  ``"NO"``); only ``true``/``false`` are booleans.
- A key repeated in one mapping is an error instead of silently keeping the last value.
- Bounded: an alias that contains itself, a document that aliases expand past `MAX_NODES`
  values ("billion laughs") or that nests deeper than `MAX_DEPTH` is a problem, not a hang.

Documents are composed by libyaml when PyYAML has it (about 6x faster than the pure-Python
composer, which was most of the time `touchpoint validate` spent on 100 playbooks); a document
libyaml rejects is read again by the pure-Python loader, so a syntax error's message and line are
PyYAML's own whichever loader ran first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]

MAX_NODES = 100_000
"""Values (mappings, lists, scalars) one document may expand to, aliases included."""
MAX_DEPTH = 64
"""Mappings and lists one document may nest."""


class _TooBig(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-style booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

_CLoader: type[yaml.CSafeLoader] | None = None
if yaml.__with_libyaml__:

    class _LibyamlLoader(yaml.CSafeLoader):
        """The same resolvers over libyaml's parser: libyaml composes, Python resolves."""

    _LibyamlLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
    _CLoader = _LibyamlLoader


@dataclass
class YamlProblem:
    """A problem found while reading YAML, before any schema applies."""

    line: int
    message: str


@dataclass
class Positions:
    """Source lines (1-based) by path: a key's own line, and a value's first line."""

    keys: dict[Path, int] = field(default_factory=dict)
    values: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int:
        """The best line for a path: its key, else its value, else the nearest parent's."""
        probe = tuple(path)
        while True:
            if probe in self.keys:
                return self.keys[probe]
            if probe in self.values:
                return self.values[probe]
            if not probe:
                return 1
            probe = probe[:-1]


def load_yaml(text: str) -> tuple[Any, Positions, list[YamlProblem]]:
    """Parse YAML text keeping positions.

    Returns:
        The data (plain dicts, lists and scalars), the positions, and problems such as
        duplicate keys. A syntax error is returned as a problem with data ``None``.
    """
    if _CLoader is not None:
        try:
            return _compose(_CLoader, text)
        except _TooBig as exc:
            return None, Positions(), [YamlProblem(exc.line, exc.message)]
        except RecursionError:
            return None, Positions(), [YamlProblem(1, f"invalid YAML: it nests deeper than {MAX_DEPTH} levels")]
        except yaml.YAMLError:
            pass  # read it again with PyYAML below, for PyYAML's own message and line
    try:
        return _compose(_Loader, text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        return None, Positions(), [YamlProblem(line, f"invalid YAML: {exc.problem or exc}")]
    except yaml.YAMLError as exc:
        return None, Positions(), [YamlProblem(1, f"invalid YAML: {exc}")]
    except _TooBig as exc:
        return None, Positions(), [YamlProblem(exc.line, exc.message)]
    except RecursionError:
        return None, Positions(), [YamlProblem(1, f"invalid YAML: it nests deeper than {MAX_DEPTH} levels")]


def _compose(loader_class: type[yaml.SafeLoader] | type[yaml.CSafeLoader], text: str) -> tuple[Any, Positions, list[YamlProblem]]:
    positions = Positions()
    problems: list[YamlProblem] = []
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else _build(loader, node, (), positions, problems, _Walk())
    finally:
        loader.dispose()
    return data, positions, problems


@dataclass
class _Walk:
    """What `_build` has seen: values built so far, and the collections being built (by id)."""

    built: int = 0
    open: set[int] = field(default_factory=set)


def _build(loader: yaml.SafeLoader | yaml.CSafeLoader, node: yaml.Node, path: Path, pos: Positions, problems: list[YamlProblem], walk: _Walk) -> Any:
    line = node.start_mark.line + 1
    walk.built += 1
    if walk.built > MAX_NODES:
        raise _TooBig(line, f"the document expands to more than {MAX_NODES:,} values (aliases repeating aliases?)")
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if id(node) in walk.open:
            raise _TooBig(line, "an alias refers to a mapping or list that contains it: remove the `*` alias inside its own `&` anchor")
        if len(walk.open) >= MAX_DEPTH:
            raise _TooBig(line, f"the document nests deeper than {MAX_DEPTH} levels")
        walk.open.add(id(node))
        try:
            return _build_collection(loader, node, path, pos, problems, walk)
        finally:
            walk.open.discard(id(node))
    pos.values[path] = line
    return loader.construct_object(node, deep=True)


def _build_collection(loader: yaml.SafeLoader | yaml.CSafeLoader, node: yaml.Node, path: Path, pos: Positions, problems: list[YamlProblem], walk: _Walk) -> Any:
    pos.values[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _TooBig(key_node.start_mark.line + 1, "a key must be a text or a number, not a mapping or a list")
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int)):
                key = str(key)
            line = key_node.start_mark.line + 1
            if key in result:
                problems.append(YamlProblem(line, f"{format_path(path + (key,))}: key `{key}` appears twice in this mapping"))
            pos.keys[path + (key,)] = line
            result[key] = _build(loader, value_node, path + (key,), pos, problems, walk)
        return result
    return [_build(loader, item, path + (i,), pos, problems, walk) for i, item in enumerate(node.value)]


def format_path(path: Path) -> str:
    """``('steps', 2, 'email', 'template')`` -> ``steps[2].email.template``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"
