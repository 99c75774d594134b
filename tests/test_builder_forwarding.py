"""Model builders forward to each other by keyword: a reordering of a builder's parameters
(`resnet_video`, `cpnet_resnet`, ...) must not silently mis-bind the arguments of the builders that call it."""
import ast
import pathlib

MODELS = pathlib.Path(__file__).resolve().parents[1] / "kerasvid" / "models"


def _builders(trees):
    """Names of the public top-level functions of kerasvid/models that take `num_classes` (the model builders)."""
    names = set()
    for tree in trees.values():
        for node in tree.body:
            if (isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
                    and "num_classes" in [a.arg for a in node.args.args]):
                names.add(node.name)
    return names


def test_builders_call_builders_by_keyword_only():
    trees = {path.name: ast.parse(path.read_text()) for path in sorted(MODELS.glob("*.py"))}
    builders = _builders(trees)
    assert {"resnet_video", "cpnet_resnet", "c2d_resnet18", "nl_resnet18", "actor_observer_network"} <= builders
    positional = []
    for file_name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in builders:
                if node.args:
                    positional.append(f"{file_name}:{node.lineno} {node.func.id} ({len(node.args)} positional)")
    assert positional == []
