"""A small reader for protobuf text format (enough for DeepLab2 experiment files).

DeepLab2's protos are not a dependency: messages become dicts, every field a
list of its values (fields may repeat), scalars Python values.
"""

import re

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<comment>\#[^\n]*)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<punct>[{}:<>\[\],;])
      | (?P<word>[-+]?[A-Za-z0-9_.+-]+)
    )""",
    re.VERBOSE,
)


class TextProtoError(ValueError):
    """A text-format file could not be parsed; the message names file and line."""


def _tokens(text, source):
    position, line = 0, 1
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            if text[position:].strip() == "":
                return
            raise TextProtoError(f"{source}:{line}: cannot parse {text[position:position + 20]!r}")
        line += text.count("\n", position, match.end())
        position = match.end()
        if match.lastgroup != "comment":
            yield match.lastgroup, match.group(match.lastgroup), line


def _scalar(kind, value):
    if kind == "string":
        return bytes(value[1:-1], "utf-8").decode("unicode_escape")
    if value in ("true", "True"):
        return True
    if value in ("false", "False"):
        return False
    try:
        return int(value)
    except ValueError:
        pass
    for number in (value, value[:-1] if value[-1:] in "fF" else None):  # text format allows "1.5f"
        try:
            return float(number)
        except (TypeError, ValueError):
            pass
    return value  # an enum name


def parse_textproto(text, source="<text>"):
    """Parses text format into `{field: [values]}` (nested messages are dicts)."""
    tokens = list(_tokens(text, source))
    index = 0

    def message(closing):
        nonlocal index
        fields = {}
        while index < len(tokens):
            kind, value, line = tokens[index]
            if kind == "punct" and value == closing:
                index += 1
                return fields
            if kind == "punct" and value in ",;":
                index += 1
                continue
            if kind != "word":
                raise TextProtoError(f"{source}:{line}: expected a field name, got {value!r}")
            name = value
            index += 1
            if index < len(tokens) and tokens[index][1] == ":":
                index += 1
            if index >= len(tokens):
                raise TextProtoError(f"{source}:{line}: field {name!r} has no value")
            kind, value, line = tokens[index]
            if value in ("{", "<"):
                index += 1
                fields.setdefault(name, []).append(message("}" if value == "{" else ">"))
            elif value == "[":
                index += 1
                while index < len(tokens) and tokens[index][1] != "]":
                    if tokens[index][1] != ",":
                        fields.setdefault(name, []).append(_scalar(tokens[index][0], tokens[index][1]))
                    index += 1
                if index >= len(tokens):
                    raise TextProtoError(f"{source}:{line}: the list of field {name!r} has no closing ']'")
                index += 1
            else:
                index += 1
                fields.setdefault(name, []).append(_scalar(kind, value))
        if closing is not None:
            raise TextProtoError(f"{source}: missing {closing!r} at end of file")
        return fields

    return message(None)


def read_textproto(path):
    """Parses a text-format file; errors name the file and line."""
    with open(path, encoding="utf-8") as handle:
        return parse_textproto(handle.read(), str(path))

