"""Reads experiment files (YAML or gin) and overrides into one raw mapping.

Every key remembers where it was set ("file:line" or "--override '...'"), so
validation errors can name the file that is actually wrong, even when it is a
base file pulled in by `base:`/`include`.

YAML files
    A mapping of sections (`model:`, `data:`, ...). A top-level `base:` (or
    `include:`) names one file or a list of files, resolved relative to the
    including file; they are loaded first and this file is merged over them.
    Floats may be written `1e-4` (plain PyYAML would read that as a string).

gin files
    Bindings of key paths with gin's own syntax, parsed by gin's parser:
    `data.crop_size = [65, 65]` sets the key `data.crop_size`; everything before
    the last dot is the section path, the last part is the key (exactly the key
    path of `--override`). Blocks (`model:` followed by indented `key = value`
    lines), macros (`NUM_CLASSES = 7` ... `%NUM_CLASSES`) and
    `include 'other.gin'` (relative to the including file) work as in gin.
    Scopes, `@configurable` references and imports are rejected: the file
    describes data, not Python objects.

Merging: mappings merge key by key; lists and scalars replace the older value.
"""

import copy
import dataclasses
import io
import os
import re
import tokenize

import gin.config_parser
import tensorflow as tf
import yaml

from axial_tf.experiment.config_validation import ConfigError, format_key_path

YAML_SUFFIXES = (".yaml", ".yml")
GIN_SUFFIXES = (".gin",)
INCLUDE_KEYS = ("base", "include")


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as `1e-4` and `2E5`."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclasses.dataclass
class RawConfig:
    """A nested mapping of raw values with the source of every key.

    Attributes:
        values: Nested dict of plain values (as read, before typing).
        sources: Maps a key path tuple to the source that set it, e.g.
            ("training", "steps") -> "exp.yaml:7".
        origin: Description of the whole config (the main file), used for keys
            that no file set (e.g. a default that conflicts with another key).
    """

    values: dict = dataclasses.field(default_factory=dict)
    sources: dict = dataclasses.field(default_factory=dict)
    origin: str = "<config>"

    def source_of(self, path):
        """Returns the source of the longest prefix of `path` that has one."""
        for end in range(len(path), 0, -1):
            source = self.sources.get(tuple(path[:end]))
            if source is not None:
                return source
        return self.origin

    def set(self, path, value, source):
        """Sets `path` to `value` (mappings merge), recording `source`.

        Args:
            path: Tuple of keys.
            value: Plain value; a dict merges into an existing dict.
            source: Where the value comes from.

        Raises:
            ConfigError: If a prefix of `path` holds a non-mapping value.
        """
        node = self.values
        for depth, key in enumerate(path[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"{source}: cannot set {format_key_path(path)!r}: "
                    f"{format_key_path(path[: depth + 1])!r} is {child!r}, not a mapping")
            node = child
        key = path[-1]
        if isinstance(value, dict) and isinstance(node.get(key), dict):
            for sub_key, sub_value in value.items():
                self.set(path + (sub_key,), sub_value, source)
        else:
            node[key] = copy.deepcopy(value)  # later merges must not edit the caller's data
        self.sources[tuple(path)] = source

    def merge(self, other):
        """Merges `other` over this config, keeping `other`'s sources."""
        for key, value in other.values.items():
            self.set((key,), value, other.source_of((key,)))
        self.sources.update(other.sources)


def read_config_file(path, _including=()):
    """Reads a YAML or gin experiment file (with its bases) into a RawConfig.

    Args:
        path: File path (local or any filesystem tf.io.gfile supports).
        _including: Chain of files including this one, to detect cycles.

    Returns:
        RawConfig of the file merged over its bases.

    Raises:
        ConfigError: Missing file, a directory, unsupported suffix, syntax error, include cycle.
    """
    path = os.fspath(path)
    chain = _including + (os.path.abspath(path),)
    if os.path.abspath(path) in _including:
        cycle = " -> ".join(chain)
        raise ConfigError(f"{path}: include cycle: {cycle}")
    if tf.io.gfile.isdir(path):
        raise ConfigError(f"{path}: is a directory, not a config file; {_config_files_hint(path)}")
    lowered = path.lower()
    if lowered.endswith(YAML_SUFFIXES):
        reader = _read_yaml
    elif lowered.endswith(GIN_SUFFIXES):
        reader = _read_gin
    else:
        supported = ", ".join(YAML_SUFFIXES + GIN_SUFFIXES)
        raise ConfigError(f"{path}: unsupported config file type; use one of {supported}")
    if not tf.io.gfile.exists(path):
        raise ConfigError(f"{path}: config file not found")
    with tf.io.gfile.GFile(path, "r") as stream:
        return reader(path, stream.read(), chain)


def _config_files_hint(directory, shown=3):
    """Names a few experiment files of `directory` for the error about passing the directory itself."""
    suffixes = YAML_SUFFIXES + GIN_SUFFIXES
    names = sorted(name for name in tf.io.gfile.listdir(directory) if name.lower().endswith(suffixes))
    if not names:
        return f"give a {', '.join(suffixes)} file (there is none in it)"
    more = ", ..." if len(names) > shown else ""
    return f"give one of the files in it, e.g. {', '.join(names[:shown])}{more}"


def _read_yaml(path, text, chain):
    """Parses a YAML experiment file, resolving its `base`/`include` files."""
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_yaml_document(path, node)
        values = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {_yaml_error_text(error)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply for an experiment file") from None
    finally:
        loader.dispose()
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got {type(values).__name__}")
    key_lines = {}
    _collect_key_lines(node, (), key_lines)

    raw = RawConfig(origin=path)
    include_keys = [key for key in INCLUDE_KEYS if key in values]
    if len(include_keys) > 1:
        raise ConfigError(f"{path}: use either 'base' or 'include', not both")
    for include_key in include_keys:
        bases = values.pop(include_key)
        bases = [bases] if isinstance(bases, str) else bases
        if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
            raise ConfigError(f"{path}:{key_lines[(include_key,)]}: {include_key}: expected a file "
                              f"path or a list of file paths, got {bases!r}")
        for base in bases:
            raw.merge(read_config_file(_relative_to(path, base), chain))

    own = RawConfig(origin=path)
    own.values = values
    own.sources = {key_path: f"{path}:{line}" for key_path, line in key_lines.items()}
    raw.merge(own)
    return raw


# An experiment file has a few hundred nodes. Aliases share one node, but everything that walks
# the values (key lines, merging, saving) sees each use, so nested aliases grow exponentially:
# 2 KB of them expand to billions of nodes ("billion laughs").
MAX_EXPANDED_YAML_NODES = 100_000


def _check_yaml_document(path, root):
    """Rejects duplicate mapping keys and documents whose aliases expand past MAX_EXPANDED_YAML_NODES.

    Walks each distinct composed node once; the expanded size of a node is computed from its
    children's, so the check costs what the text does, not what the aliases would expand to.

    Raises:
        ConfigError: A repeated key (naming both lines) or an alias bomb.
    """
    expanded_sizes = {}

    def expanded_size(node):
        if id(node) in expanded_sizes:
            return expanded_sizes[id(node)]
        expanded_sizes[id(node)] = 1  # a node reached again through itself (a recursive alias)
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(path, node)
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        size = 1 + sum(expanded_size(child) for child in children)
        if size > MAX_EXPANDED_YAML_NODES:
            raise ConfigError(
                f"{path}:{node.start_mark.line + 1}: YAML aliases expand this document past "
                f"{MAX_EXPANDED_YAML_NODES:,} values; an experiment file needs far fewer")
        expanded_sizes[id(node)] = size
        return size

    expanded_size(root)


def _check_unique_keys(path, mapping):
    """Raises ConfigError naming both lines when a mapping repeats a key (YAML forbids it)."""
    first_lines = {}
    for key_node, _ in mapping.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        line = key_node.start_mark.line + 1
        if key_node.value in first_lines:
            raise ConfigError(f"{path}:{line}: duplicate key {key_node.value!r} (first given at line "
                              f"{first_lines[key_node.value]}); a repeated key would silently win")
        first_lines[key_node.value] = line


def _collect_key_lines(node, prefix, key_lines):
    """Records the 1-based line of every mapping key of a composed YAML node."""
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            key_path = prefix + (key_node.value,)
            key_lines[key_path] = key_node.start_mark.line + 1
            _collect_key_lines(value_node, key_path, key_lines)


def _yaml_error_text(error):
    """A one-line description of a YAML error with its line and column."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is None:
        return problem
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


@dataclasses.dataclass(frozen=True)
class _GinMacro:
    """A `%NAME` reference, resolved once the whole file is read."""

    name: str


@dataclasses.dataclass(frozen=True)
class _GinReference:
    """An `@name` configurable reference (rejected with its location)."""

    name: str


class _GinDelegate(gin.config_parser.ParserDelegate):
    """Keeps macros and references as markers instead of resolving them in gin."""

    def configurable_reference(self, scoped_configurable_name, evaluate):
        return _GinReference(scoped_configurable_name)

    def macro(self, macro_name):
        return _GinMacro(macro_name)


def _read_gin(path, text, chain):
    """Parses a gin experiment file into a RawConfig (see the module doc)."""
    stream = io.StringIO(text)
    stream.name = path  # gin's parser takes the file name for its messages from here.
    try:
        statements = list(gin.config_parser.ConfigParser(stream, _GinDelegate()))
    except SyntaxError as error:
        raise ConfigError(f"{path}:{error.lineno}: invalid gin syntax: {error.msg}") from None
    except tokenize.TokenError as error:  # e.g. an unclosed bracket
        message, (line, _) = error.args
        raise ConfigError(f"{path}:{line}: invalid gin syntax: {message}") from None

    macros, macro_lines = {}, {}
    for statement in statements:
        if isinstance(statement, gin.config_parser.BindingStatement) and not statement.arg_name:
            macros[statement.selector] = statement.value
            macro_lines[statement.selector] = statement.location.line_num

    raw = RawConfig(origin=path)
    used_macros = set()
    for statement in statements:
        where = f"{path}:{statement.location.line_num}"
        if isinstance(statement, gin.config_parser.IncludeStatement):
            raw.merge(read_config_file(_relative_to(path, statement.filename), chain))
        elif isinstance(statement, gin.config_parser.ImportStatement):
            raise ConfigError(f"{where}: imports are not supported in experiment gin files "
                              "(they bind config keys, not Python objects)")
        elif isinstance(statement, gin.config_parser.BindingStatement) and statement.arg_name:
            if statement.scope:
                raise ConfigError(f"{where}: gin scopes ({statement.scope}/...) are not supported "
                                  "in experiment gin files")
            key_path = tuple(statement.selector.split(".")) + (statement.arg_name,)
            value = _resolve_gin_value(statement.value, macros, where, used_macros)
            raw.set(key_path, value, where)
    unused = sorted(set(macros) - used_macros, key=macro_lines.get)
    if unused:
        # `steps = 10` is a gin macro, not a key: an unused one is almost surely a
        # binding that lost its section.
        name = unused[0]
        raise ConfigError(f"{path}:{macro_lines[name]}: gin macro {name!r} is never used; to set "
                          "a key write SECTION.KEY = value, e.g. training.steps = 1000")
    return raw


def _resolve_gin_value(value, macros, where, used_macros, _resolving=()):
    """Replaces macros by their values (noting them in `used_macros`) and tuples by lists."""
    if isinstance(value, _GinMacro):
        if value.name not in macros:
            raise ConfigError(f"{where}: undefined gin macro %{value.name}")
        if value.name in _resolving:
            raise ConfigError(f"{where}: gin macro %{value.name} refers to itself")
        used_macros.add(value.name)
        return _resolve_gin_value(
            macros[value.name], macros, where, used_macros, _resolving + (value.name,))
    if isinstance(value, _GinReference):
        raise ConfigError(f"{where}: configurable references (@{value.name}) are not supported in "
                          "experiment gin files; write the value itself")
    if isinstance(value, (list, tuple)):
        return [_resolve_gin_value(item, macros, where, used_macros, _resolving) for item in value]
    if isinstance(value, dict):
        return {key: _resolve_gin_value(item, macros, where, used_macros, _resolving)
                for key, item in value.items()}
    return value


def _relative_to(including_file, included):
    """Resolves an included path relative to the including file's folder."""
    if os.path.isabs(included) or "://" in included:
        return included
    return os.path.join(os.path.dirname(including_file), included)


def parse_override(text):
    """Parses one `--override key.sub=value` string.

    The value is read as a YAML scalar or flow collection: `3`, `1e-4`, `true`,
    `[65, 65]`, `{drop_path_keep_prob: 0.8}`, `null`, or a plain string.

    Args:
        text: The override, e.g. "data.crop_size=[65, 65]".

    Returns:
        Tuple (key path tuple, value).

    Raises:
        ConfigError: Missing "=", an empty key part, or an unparsable value.
    """
    source = f"--override {text!r}"
    key, separator, value_text = text.partition("=")
    key = key.strip()
    if not separator or not key:
        raise ConfigError(f"{source}: expected KEY.PATH=VALUE, e.g. training.steps=1000")
    key_path = tuple(part.strip() for part in key.split("."))
    if not all(key_path):
        raise ConfigError(f"{source}: empty part in key path {key!r}")
    try:
        value = yaml.load(value_text, Loader=_YamlLoader)
    except yaml.YAMLError as error:
        raise ConfigError(
            f"{source}: cannot parse value {value_text!r}: {_yaml_error_text(error)}") from None
    return key_path, value


def apply_overrides(raw, overrides):
    """Applies `--override` strings to a RawConfig in order (later ones win).

    Args:
        raw: RawConfig to modify in place.
        overrides: Iterable of "key.sub=value" strings.
    """
    for text in overrides:
        key_path, value = parse_override(text)
        raw.set(key_path, value, f"--override {text!r}")


class _YamlDumper(yaml.SafeDumper):
    """SafeDumper writing mappings as blocks and lists of scalars on one line."""


def _represent_list(dumper, items):
    """Flow style (`[65, 65]`) for lists of scalars, block style otherwise."""
    flat = all(not isinstance(item, (list, dict)) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_YamlDumper.add_representer(list, _represent_list)


def dump_yaml(values):
    """Serialises plain values as block-style YAML, keeping the schema's key order."""
    return yaml.dump(values, Dumper=_YamlDumper, sort_keys=False, default_flow_style=False)
