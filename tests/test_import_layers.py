"""Imports point downward (docs/architecture.md, "Layers"): every kerasvid-internal import, at module level or inside
a function, goes to a layer below the importing module's own, or to its own layer, except the lazy imports the
architecture page names."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The rows of docs/architecture.md's diagram, bottom (0) to top; a subpackage's modules share its row.
LAYERS = [
    ("_submodules", "_lazy", "_locks", "_quiet", "_registration"),
    ("command_flags",),
    ("progress",),
    ("flow", "viz"),
    ("weights",),
    ("data",),
    ("ops",),
    ("losses", "metrics"),
    ("layers",),
    ("backbones",),
    ("models", "zoo"),
    ("tasks",),
    ("training",),
    ("export",),
    ("predict", "extract", "run_report"),
    ("config_flags", "train_cli"),
    ("cli",),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
# Upward imports docs/architecture.md allows, all inside functions: a task serves its model through export.
ALLOWED_LAZY = {("tasks", "export")}


def _top(module):
    """'kerasvid.data.pipeline' -> 'data'; None for 'kerasvid' itself and for other packages."""
    parts = module.split(".")
    return parts[1] if parts[0] == "kerasvid" and len(parts) > 1 else None


def _imports(path):
    """(line, imported kerasvid module or name, inside a function) of one file."""
    tree = ast.parse(path.read_text())
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" if node.module == "kerasvid" else node.module for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("kerasvid."):
                yield node.lineno, name, id(node) in in_function


def test_every_module_has_a_layer():
    tops = {p.stem if p.suffix == ".py" else p.name for p in (ROOT / "kerasvid").iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert sorted(tops - set(RANK)) == [], "add the new module to LAYERS here and to docs/architecture.md's diagram"


def test_imports_point_downward():
    upward = []
    for path in sorted((ROOT / "kerasvid").rglob("*.py")):
        parts = [part for part in path.relative_to(ROOT / "kerasvid").with_suffix("").parts if part != "__init__"]
        me = _top(".".join(["kerasvid", *parts]))
        if me is None:  # kerasvid/__init__.py: imports nothing of its own eagerly
            continue
        for line, name, lazy in _imports(path):
            target = _top(name)
            if target in RANK and RANK[target] > RANK[me] and not (lazy and (me, target) in ALLOWED_LAZY):
                upward.append(f"kerasvid/{path.relative_to(ROOT / 'kerasvid')}:{line} ({me}) imports {name}")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The walk finds module-level and function-level imports (what the test above relies on)."""
    module = tmp_path / "m.py"
    module.write_text("from kerasvid.training import loop\n\ndef f():\n    import kerasvid.export\n")
    assert list(_imports(module)) == [(1, "kerasvid.training", False), (4, "kerasvid.export", True)]
