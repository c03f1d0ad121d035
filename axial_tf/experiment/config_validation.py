"""Typed conversion of a raw (YAML/gin) mapping into the experiment dataclasses.

The schema's type annotations are the single source of truth: `int`, `float`,
`bool`, `str`, `Optional[...]`, `list[...]`, `Literal[...]` (enumerations),
`dict[str, Any]` (free-form options handed to a builder) and nested
dataclasses. Range and length limits live in each field's `metadata`:

- `ge`, `gt`, `le`, `lt`: numeric bounds (for a list field, checked on every item);
- `length`: exact number of items of a list; `min_length`: minimum number of items.

Problems are collected over the whole mapping, not only the first one, and raised
together as one `ConfigError` whose message names, for every problem, the file
(and line) that set the key and the key's full dotted path.
"""

import dataclasses
import difflib
import types
import typing
from typing import Callable, Literal, Union

KeyPath = tuple  # e.g. ("data", "crop_size", 1), printed as "data.crop_size[1]"
# Returned by the converters for a value already reported as wrong (None is a valid value).
INVALID = object()

_BOUND_CHECKS = {
    "ge": (lambda value, bound: value >= bound, ">="),
    "gt": (lambda value, bound: value > bound, ">"),
    "le": (lambda value, bound: value <= bound, "<="),
    "lt": (lambda value, bound: value < bound, "<"),
}


class ConfigError(ValueError):
    """An invalid experiment configuration; the message is complete by itself.

    Attributes:
        issues: The individual `ConfigIssue`s (empty for file-level errors such
            as a missing file or a YAML syntax error).
    """

    def __init__(self, message, issues=()):
        super().__init__(message)
        self.issues = tuple(issues)


@dataclasses.dataclass(frozen=True)
class ConfigIssue:
    """One problem of a configuration.

    Attributes:
        source: Where the offending key was set, e.g. "configs/demo.yaml:12" or
            "--override 'training.steps=abc'".
        key_path: Full dotted key path, e.g. "data.crop_size[1]".
        message: What is wrong and, where possible, how to fix it.
    """

    source: str
    key_path: str
    message: str

    def __str__(self):
        return f"{self.source}: {self.key_path}: {self.message}"


def format_key_path(path):
    """Formats a key path tuple as "a.b[2].c".

    Args:
        path: Tuple of mapping keys (str) and list indices (int).

    Returns:
        The dotted path; "<root>" for the empty path.
    """
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "<root>"


class IssueCollector:
    """Accumulates issues, attributing each to the source that set its key.

    Args:
        source_of: Callable mapping a key path tuple to a source description.
        known_paths: Every valid dotted key path of the schema, used to suggest
            the right section for a key written in the wrong one.
    """

    def __init__(self, source_of: Callable[[KeyPath], str], known_paths=()):
        self._source_of = source_of
        self.known_paths = tuple(known_paths)
        self.issues = []

    def add(self, path, message):
        """Records that the value at `path` is wrong because of `message`."""
        self.issues.append(ConfigIssue(self._source_of(path), format_key_path(path), message))

    def raise_if_any(self, title="Invalid experiment config"):
        """Raises one ConfigError listing every recorded issue, if there are any."""
        if not self.issues:
            return
        count = len(self.issues)
        lines = [f"{title} ({count} problem{'s' if count > 1 else ''}):"]
        lines += [f"  - {issue}" for issue in self.issues]
        raise ConfigError("\n".join(lines), self.issues)


def build_dataclass(cls, raw, collector, defaults=None, path=()):
    """Builds `cls` from a raw mapping, checking keys, types and ranges.

    Keys absent from `raw` keep their defaults: the attributes of `defaults` if
    given (so that a nested section whose default differs from its class
    defaults, like the instance decoder, keeps that default), else the class's
    field defaults.

    Args:
        cls: A dataclass type of the schema.
        raw: The raw mapping (None is read as an empty mapping).
        collector: IssueCollector receiving every problem found.
        defaults: Optional instance of `cls` supplying the defaults.
        path: Key path of `raw` inside the whole config.

    Returns:
        An instance of `cls`, or INVALID when `raw` is not a mapping (already reported).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        collector.add(path, f"expected a mapping of {cls.__name__} options, got {_describe(raw)}")
        return INVALID
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            collector.add(path + (key,), _unknown_key_message(key, fields, path, collector.known_paths))
    kwargs = {}
    for name, field in fields.items():
        default = getattr(defaults, name) if defaults is not None else _field_default(field)
        if name not in raw:
            kwargs[name] = default
            continue
        field_type = hints[name]
        if dataclasses.is_dataclass(field_type):
            value = build_dataclass(field_type, raw[name], collector, default, path + (name,))
        else:
            value = convert_value(field_type, raw[name], collector, path + (name,), field.metadata)
        # A wrong value is already reported; its default lets the other keys be checked.
        kwargs[name] = default if value is INVALID else value
    return cls(**kwargs)


def convert_value(annotation, value, collector, path, constraints=None):
    """Converts one raw value to `annotation`, reporting problems.

    Args:
        annotation: The field's type annotation.
        value: The raw value (from YAML, gin or an override).
        collector: IssueCollector receiving problems.
        path: Key path of the value.
        constraints: Field metadata with bounds/length limits (see module doc).

    Returns:
        The converted value, or INVALID when it is wrong (already reported).
    """
    constraints = constraints or {}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return convert_value(inner, value, collector, path, constraints)
    if value is None:
        collector.add(path, f"expected {_expected_phrase(annotation)}, got null")
        return INVALID
    if origin is Literal:
        return _convert_choice(args, value, collector, path)
    if origin is list:
        return _convert_list(args[0], value, collector, path, constraints)
    if origin is dict:
        return _convert_free_mapping(value, collector, path)
    converted = _convert_scalar(annotation, value, collector, path)
    if converted is not INVALID and not _check_bounds(converted, constraints, collector, path):
        return INVALID
    return converted


def _convert_scalar(annotation, value, collector, path):
    """Converts an int/float/bool/str value; ints are accepted for floats."""
    is_bool = isinstance(value, bool)
    if annotation is bool and is_bool:
        return value
    if annotation is int and isinstance(value, int) and not is_bool:
        return value
    if annotation is float and isinstance(value, (int, float)) and not is_bool:
        return float(value)
    if annotation is str and isinstance(value, str):
        return value
    collector.add(path, f"expected {_expected_phrase(annotation)}, got {_describe(value)}")
    return INVALID


def _convert_choice(choices, value, collector, path):
    """Checks an enumeration value (type-strict: True is not 1)."""
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return value
    allowed = ", ".join(repr(choice) for choice in choices)
    message = f"invalid value {value!r}; allowed values: {allowed}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(c) for c in choices], n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0]!r}?"
    collector.add(path, message)
    return INVALID


def _convert_list(item_type, value, collector, path, constraints):
    """Converts a list (a tuple from gin is accepted) and its items."""
    if not isinstance(value, (list, tuple)):
        collector.add(path, f"expected {_expected_phrase(list[item_type])}, got {_describe(value)}")
        return INVALID
    length = constraints.get("length")
    min_length = constraints.get("min_length")
    if length is not None and len(value) != length:
        collector.add(
            path, f"expected a list of exactly {length} items, got {len(value)}: {list(value)!r}")
        return INVALID
    if min_length is not None and len(value) < min_length:
        collector.add(path, f"expected a list of at least {min_length} item(s), got {list(value)!r}")
        return INVALID
    item_constraints = {key: bound for key, bound in constraints.items() if key in _BOUND_CHECKS}
    items = [
        convert_value(item_type, item, collector, path + (index,), item_constraints)
        for index, item in enumerate(value)
    ]
    return INVALID if any(item is INVALID for item in items) else items


def _convert_free_mapping(value, collector, path):
    """Checks a free-form options mapping: string keys, YAML-representable values."""
    if not isinstance(value, dict):
        collector.add(path, f"expected a mapping, got {_describe(value)}")
        return INVALID
    bad_keys = [key for key in value if not isinstance(key, str)]
    if bad_keys:
        collector.add(path, f"keys must be strings, got {bad_keys!r}")
        return INVALID
    return _plain_value(value, collector, path)


def _plain_value(value, collector, path):
    """Returns `value` as plain YAML data (tuples become lists), or INVALID."""
    if isinstance(value, (list, tuple)):
        items = [_plain_value(item, collector, path + (index,)) for index, item in enumerate(value)]
        return INVALID if any(item is INVALID for item in items) else items
    if isinstance(value, dict):
        items = {key: _plain_value(item, collector, path + (key,)) for key, item in value.items()}
        return INVALID if any(item is INVALID for item in items.values()) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    collector.add(path, f"expected plain data (number, string, list, mapping), got {_describe(value)}")
    return INVALID


def _check_bounds(value, constraints, collector, path):
    """Checks the numeric bounds in `constraints`; returns whether they hold."""
    for key, (holds, symbol) in _BOUND_CHECKS.items():
        if key in constraints and not holds(value, constraints[key]):
            collector.add(path, f"must be {symbol} {constraints[key]}, got {value!r}")
            return False
    return True


def _unknown_key_message(key, fields, path, known_paths):
    """Explains an unknown key with a "did you mean" suggestion or the valid keys.

    A close key of the same section is preferred; otherwise a key of the same
    name elsewhere in the schema (e.g. `seed` written under `model`) is offered.
    """
    section = format_key_path(path) if path else "the top level"
    message = f"unknown key {key!r} in {section}"
    close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    by_leaf = {}
    for known in known_paths:
        by_leaf.setdefault(known.rsplit(".", 1)[-1], []).append(known)
    close = difflib.get_close_matches(str(key), list(by_leaf), n=1, cutoff=0.8)
    if close:
        candidates = " or ".join(repr(known) for known in by_leaf[close[0]])
        return f"{message}; did you mean {candidates}?"
    return f"{message}; valid keys: {', '.join(fields)}"


def schema_key_paths(cls, prefix=""):
    """Lists the dotted paths of every field of a schema dataclass, recursively.

    Args:
        cls: A dataclass type.
        prefix: Dotted path of `cls` inside the root schema.

    Returns:
        List of dotted key paths (sections and leaves).
    """
    paths = []
    for name, annotation in typing.get_type_hints(cls).items():
        dotted = f"{prefix}.{name}" if prefix else name
        paths.append(dotted)
        if dataclasses.is_dataclass(annotation):
            paths.extend(schema_key_paths(annotation, dotted))
    return paths


def _field_default(field):
    """The default value of a dataclass field."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _expected_phrase(annotation):
    """Describes what a value of `annotation` looks like, for messages."""
    origin = typing.get_origin(annotation)
    if origin is list:
        return f"a list of {_plural(typing.get_args(annotation)[0])}"
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(annotation))
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        annotation, str(annotation))


def _plural(annotation):
    """Plural noun for list items of `annotation`."""
    if typing.get_origin(annotation) is Literal:
        return "values among " + ", ".join(repr(choice) for choice in typing.get_args(annotation))
    return {int: "integers", float: "numbers", bool: "booleans", str: "strings"}.get(
        annotation, str(annotation))


def _describe(value):
    """Describes a raw value with its YAML type, e.g. "the string 'abc'"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (list, tuple)):
        return f"the list {list(value)!r}"
    if isinstance(value, dict):
        return f"a mapping {value!r}"
    return f"a {type(value).__name__} ({value!r})"
