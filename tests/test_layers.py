"""Imports only point down the layers, and no module imports one that imports it back (lazy imports included).

Layers, bottom first: foundation (column names and contracts, errors, value checks and search spaces, session,
the host's description, storage and output destinations) →
data → kernels (exact top-K, the co-occurrence engine, the training launchers) → models → evaluation →
benchmark and report → command-line entry points and job configs → the package's public face.
"""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "spark_retrieval"
LAYERS = [
    ("foundation", ["columns", "errors", "validation", "search", "progress", "session", "host", "storage", "s3", "destinations"]),
    ("data", ["data"]),
    ("kernels", ["retrieval", "models.cooccurrence", "distributed"]),
    ("models", ["models"]),
    ("evaluation", ["evaluation", "significance", "channel_analysis"]),
    ("benchmark", ["report", "benchmark", "tuning"]),
    ("entry points", ["command", "config", "cli", "jobs"]),
    ("public face", [""]),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer_of(module: str) -> int:
    """The layer of the longest matching prefix (``models.cooccurrence`` is a kernel, ``models.als`` a model)."""
    best, best_length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".") or prefix == ""
            if matches and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every package module ``module`` imports, at the top or inside functions."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join([p for p in base if p] + ([node.module] if node.module else []))
            elif (node.module or "").startswith("spark_retrieval"):
                target = node.module.removeprefix("spark_retrieval").lstrip(".")
            else:
                continue
            for alias in node.names:
                child = f"{target}.{alias.name}".lstrip(".")
                found.add(child if child in known else target)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("spark_retrieval").lstrip(".") for a in node.names if a.name.startswith("spark_retrieval")}
    return {m for m in found if m in known and m != module}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {module: imports(module, path, known) for module, path in known.items()}


def test_every_module_has_a_layer():
    assert all(layer_of(module) is not None for module in modules())


def test_imports_point_down_the_layers():
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_no_import_cycles():
    edges = graph()
    state, cycles = {}, []

    def visit(module, trail):
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycles.append(" → ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted("spark_retrieval" + (f".{m}" if m else "") for m in modules())
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    # Top layers first: a module that only worked because something below had already been imported fails here.
    names.sort(key=lambda name: -layer_of(name.removeprefix("spark_retrieval").lstrip(".")))
    result = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
