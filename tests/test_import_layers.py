"""The package's structure holds: imports point down, no import cycles, task branches only in Tasks.

`LAYERS` is the design's guard: every `axial_tf` package sits on one layer, and a module may import
from its own package or from a lower layer, never from a higher one. Packages on the same layer are
siblings: they do not import each other unless `ALLOWED_SIBLING_EDGES` lists the edge and says why.

    6  tools                          command-line entry points
    5  training, export               Trainer/Evaluator; SavedModel, serving, Predictor (siblings)
    4  experiment                     config schema, builders, Tasks, checkpoint layout
    3  data, checkpoints, presets     datasets and pipelines; weight converters; preset catalogue and cache
    2  models, metrics, postprocessing, losses, targets, utils.flops, the package root
    1  layers                         Keras layers
    0  utils                          errors, files, visualization, shapes

Every import counts: `import x` and `from x import y`, relative ones, at module level and inside
functions (a function-level import is how an upward edge hides from the import-time cycle).
Cycles are checked on module-level imports only, where Python resolves them at import time.
"""

import ast
import collections

from conftest import REPO_ROOT

PACKAGE = "axial_tf"

# Layer of each package (low to high); a module belongs to the longest entry its name starts with.
LAYERS = {
    "axial_tf.utils": 0,
    "axial_tf.layers": 1,
    "axial_tf.models": 2,
    "axial_tf.metrics": 2,
    "axial_tf.postprocessing": 2,
    "axial_tf.losses": 2,
    "axial_tf.targets": 2,
    "axial_tf.utils.flops": 2,  # counts the multiply-adds of layers and model blocks
    "axial_tf": 2,  # the package root only: `import axial_tf` registers the layers and models
    "axial_tf.data": 3,
    "axial_tf.checkpoints": 3,
    "axial_tf.experiment": 4,
    "axial_tf.presets": 3,  # the catalogue and the download cache (standard library only)  # the published checkpoints by name: catalogue, download, cache
    "axial_tf.training": 5,
    "axial_tf.export": 5,
    "axial_tf.tools": 6,
}

# Same-layer imports that are part of the design, importer -> imported.
ALLOWED_SIBLING_EDGES = {
    # Registration: loading a .keras file needs every serializable model class registered.
    ("axial_tf", "axial_tf.models"),
    # models/inference.py runs a model and turns its raw outputs into panoptic labels; the
    # post-processing itself is model-free tensor code and never imports models.
    ("axial_tf.models", "axial_tf.postprocessing"),
    # The FLOP counter walks model blocks (InceptionStem, BlockGroup, the panoptic decoder).
    ("axial_tf.utils.flops", "axial_tf.models"),
}
# losses, metrics and targets import no sibling: the losses take targets as tensors, and the
# metrics take predictions, so no edge names them.

# Upward imports the design allows inside a function only (run on first use, never at import),
# importer module -> imported module.
DEFERRED_UPWARD_IMPORTS = {
    # `import axial_tf` registers the preset loader behind `AxialDeepLab.from_preset` and the other
    # models' (models/presets.py); converting a checkpoint needs the configs and converters above.
    ("axial_tf", "axial_tf.experiment.pretrained"),
}

# Only the Task classes may branch on the task (`task == "panoptic"`) or on task outputs.
TASKS_PACKAGE = "axial_tf/experiment/tasks/"
TASK_OUTPUT_KEYS = {"panoptic_pred", "semantic_pred"}


def package_modules():
    """{module name: path} for every module of the package."""
    modules = {}
    for path in sorted((REPO_ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = package_modules()


def is_package(module):
    return MODULES[module].name == "__init__.py"


def unit_of(module):
    """The LAYERS entry a module belongs to, or None (the root entry holds only the root)."""
    if module == PACKAGE:
        return PACKAGE
    prefixes = [key for key in LAYERS if key != PACKAGE and (module == key or module.startswith(key + "."))]
    return max(prefixes, key=len, default=None)


def short(unit):
    return unit if unit == PACKAGE else unit[len(PACKAGE) + 1:]


def _absolute(module, node):
    """The module a `from ... import` statement names, relative levels resolved."""
    if not node.level:
        return node.module
    base = module.split(".")
    if not is_package(module):
        base = base[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(node):
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:` (never run)."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING"


def imports_of(module):
    """(line, imported module, at module level) for every axial_tf import of a module.

    `from package import name` imports the submodule `package.name` when there is one, else the
    package itself. Module level means run at import time: not in a function or a TYPE_CHECKING block.
    """
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found = []

    def visit(node, at_module_level):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or _is_type_checking(node):
            at_module_level = False
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, at_module_level) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((node.lineno, submodule if submodule in MODULES else source, at_module_level))
        for child in ast.iter_child_nodes(node):
            visit(child, at_module_level)

    visit(tree, True)
    return [(line, name, top) for line, name, top in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def where(module, line):
    return f"{MODULES[module].relative_to(REPO_ROOT)}:{line}"


def test_every_module_has_a_layer():
    assert [module for module in MODULES if unit_of(module) is None] == []


def test_every_axial_tf_import_names_an_existing_module():
    dangling = [f"{where(module, line)} imports {name}, which does not exist"
                for module in MODULES for line, name, _ in imports_of(module) if name not in MODULES]
    assert dangling == [], "\n" + "\n".join(dangling)


def layer_violation(importer, imported):
    """Why `importer` must not import `imported`, or None when it may."""
    source, target = unit_of(importer), unit_of(imported)
    if source == target or target is None:
        return None
    low, high = LAYERS[target], LAYERS[source]
    if low < high or (source, target) in ALLOWED_SIBLING_EDGES:
        return None
    rule = "imports must point down" if low > high else "siblings must not import each other"
    return f"imports {imported} ({short(target)}, layer {low}) from {short(source)} (layer {high}): {rule}"


def test_relative_imports_resolve_against_the_importing_module():
    def source(module, statement):
        return _absolute(module, ast.parse(statement).body[0])

    assert source("axial_tf.data.pipeline", "from . import records") == "axial_tf.data"
    assert source("axial_tf.data", "from .records import x") == "axial_tf.data.records"
    assert source("axial_tf.models.axial_resnet", "from ..layers import ConvBN") == "axial_tf.layers"


def test_layer_rule_examples():
    assert layer_violation("axial_tf.models.axial_resnet", "axial_tf.layers.conv_bn") is None
    assert layer_violation("axial_tf.models.inference", "axial_tf.postprocessing") is None
    assert layer_violation("axial_tf.utils.files", "axial_tf.utils.errors") is None
    assert layer_violation("axial_tf.utils.files", "axial_tf.utils.flops").endswith("imports must point down")
    assert layer_violation("axial_tf.postprocessing.merge", "axial_tf.models").endswith("must not import each other")
    assert layer_violation("axial_tf.export.predictor", "axial_tf.training.trainer") == (
        "imports axial_tf.training.trainer (training, layer 5) from export (layer 5): "
        "siblings must not import each other")


def test_imports_point_down_the_layers():
    violations = []
    for module in MODULES:
        for line, imported, at_module_level in imports_of(module):
            reason = layer_violation(module, imported)
            if reason and (at_module_level or (module, imported) not in DEFERRED_UPWARD_IMPORTS):
                violations.append(f"{where(module, line)} {reason}")
    assert violations == [], "\n" + "\n".join(violations)


def test_every_deferred_upward_import_is_used_and_deferred():
    found = {(module, imported): top for module in MODULES for _, imported, top in imports_of(module)}
    assert DEFERRED_UPWARD_IMPORTS <= set(found)
    assert not any(found[edge] for edge in DEFERRED_UPWARD_IMPORTS)


def test_every_allowed_sibling_edge_is_used():
    used = {(unit_of(module), unit_of(imported)) for module in MODULES for _, imported, _ in imports_of(module)}
    assert ALLOWED_SIBLING_EDGES - used == set()
    assert all(LAYERS[source] == LAYERS[target] for source, target in ALLOWED_SIBLING_EDGES)


def find_cycles(graph):
    """One cycle path (first node repeated at the end) per strongly connected component with a cycle."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(node):  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for component in components:
        start = min(component)
        parents, queue = {}, collections.deque([start])
        while queue:  # the shortest path from start back to start inside the component
            node = queue.popleft()
            if start in graph[node]:
                path = [start, node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                cycles.append(path[::-1] if node != start else [start, start])
                break
            for successor in sorted(graph[node] & component):
                if successor not in parents and successor != start:
                    parents[successor] = node
                    queue.append(successor)
    return cycles


def test_find_cycles_reports_a_path_per_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "d"}, "e": set()}
    assert sorted(find_cycles(graph)) == [["a", "b", "c", "a"], ["d", "d"]]


def test_no_import_cycles():
    graph = {module: set() for module in MODULES}
    for module in MODULES:
        graph[module] |= {name for _, name, top in imports_of(module) if top and name in MODULES and name != module}
    cycles = [" -> ".join(cycle) for cycle in find_cycles(graph)]
    assert cycles == [], "\n" + "\n".join(cycles)


def _names_task(node):
    """`task`, `x.task`, `x["task"]` or `x.get("task")`."""
    if isinstance(node, ast.Name):
        return node.id == "task"
    if isinstance(node, ast.Attribute):
        return node.attr == "task"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "task"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "task"
    return False


def _is_string_literal(node):
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_is_string_literal(element) for element in node.elts)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def task_branches(tree):
    """(line, reason) for each comparison that selects behaviour by task."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands, operands[1:]):
            if isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) and any(
                    _names_task(a) and _is_string_literal(b) for a, b in ((left, right), (right, left))):
                found.append((node.lineno, f"compares the task with a name: {ast.unparse(node)}"))
            elif (isinstance(op, (ast.In, ast.NotIn)) and isinstance(left, ast.Constant)
                  and left.value in TASK_OUTPUT_KEYS):
                found.append((node.lineno, f"tests for a task's output: {ast.unparse(node)}"))
    return found


def test_task_branches_are_found():
    source = ('a = task == "panoptic"\nb = config.model.task != "classification"\nc = "panoptic_pred" in out\n'
              'd = info["task"] in ("semantic", "panoptic")\ne = task == other.task\nf = "semantic" in names\n')
    assert [line for line, _ in task_branches(ast.parse(source))] == [1, 2, 3, 4]


def test_only_tasks_branch_on_the_task():
    branches = []
    for path in MODULES.values():
        relative = path.relative_to(REPO_ROOT).as_posix()
        if not relative.startswith(TASKS_PACKAGE):
            tree = ast.parse(path.read_text(), filename=relative)
            branches += [f"{relative}:{line} {reason}" for line, reason in task_branches(tree)]
    assert branches == [], "\n" + "\n".join(branches)
