"""The house matches the roles: imports flow one way through the layers, no modules
import each other in a loop, no file outgrows 600 lines (docs/design.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lmrl_ray"
# Bottom to top: a module may import its own layer and the layers below it.
LAYERS = ["stats", "io", "cluster", "envs", "data", "models", "engines", "actors", "learners", "simulators",
          "baselines", "drivers", "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every lmrl_ray module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lmrl_ray.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmrl_ray"):
            for alias in node.names:  # `from lmrl_ray.envs import play` names a module
                child = f"{node.module}.{alias.name}"
                found.add(child if (PACKAGE.parent / child.replace(".", "/")).with_suffix(".py").exists()
                          or (PACKAGE.parent / child.replace(".", "/")).is_dir() else node.module)
    return found - {"lmrl_ray"}


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[1])


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: imports_of(p) for m, p in MODULES.items() if m != "lmrl_ray"}


def test_every_folder_and_top_module_has_a_layer():
    assert {m.split(".")[1] for m in GRAPH} == set(LAYERS)


def test_imports_flow_down_the_layers():
    upward = [f"{m} imports {i}" for m, imported in GRAPH.items() for i in imported if layer(i) > layer(m)]
    assert upward == []


def test_no_modules_import_each_other_in_a_loop():
    """Depth-first search for a cycle, function-level imports included (they hide one)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for nxt in sorted(GRAPH.get(m, ())):
            nxt = nxt if nxt in GRAPH else nxt.rsplit(".", 1)[0]  # `import a.b.name` of a name
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt in GRAPH and state.get(nxt) is None:
                visit(nxt, path + [nxt])
        state[m] = 2

    for m in GRAPH:
        if m not in state:
            visit(m, [m])
    # A package's __init__ re-exporting its own modules is not a loop of roles.
    cycles = [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))]
    assert cycles == []


def test_no_file_is_over_600_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}
