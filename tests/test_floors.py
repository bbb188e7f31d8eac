"""The three packages stand as floors: ``eco_guard`` (the core) imports neither ``classifiers`` nor ``benchmarks``,
``classifiers`` imports only the core, ``benchmarks`` stands on both; the command line (``eco_guard.cli``) is the
one face that reaches up, and only inside its functions. No project module imports another in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("eco_guard", "classifiers", "benchmarks")
FLOOR = {"eco_guard": 0, "classifiers": 1, "benchmarks": 2}


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported project module, at module level?) for every import statement of a file; an import inside a
    function body runs only when the function does."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, not in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    name = f"{child.module}.{alias.name}"
                    found.append((name if name in modules else child.module, not in_function))
            visit(child, inside)

    visit(tree, False)
    return [(name, top) for name, top in found if name.split(".")[0] in PACKAGES]


def test_no_upward_import():
    modules = project_modules()
    assert len(modules) > 60 and "eco_guard.core" in modules and "eco_guard.cli.optimize" in modules
    upward = []
    for module, path in modules.items():
        floor = FLOOR[module.split(".")[0]]
        face = module.startswith("eco_guard.cli")
        for target, top in imports(path, modules):
            above = FLOOR[target.split(".")[0]] > floor
            if above and (top or not face):
                upward.append(f"{module} imports {target}" + ("" if top else " (in a function)"))
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    modules = project_modules()
    graph = {
        m: sorted({t for t, top in imports(p, modules) if top and t in modules and t != m})
        for m, p in modules.items()
    }
    state: dict[str, int] = {}
    cycles = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(
                    " -> ".join(stack[stack.index(nxt) :] + [node, nxt])
                    if nxt in stack
                    else f"{node} -> {nxt}"
                )
            elif nxt not in state:
                walk(nxt, [*stack, node])
        state[node] = 2

    for module in graph:
        if module not in state:
            walk(module, [])
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_an_upward_import(tmp_path):
    """The walker finds a module-level import and tells it from one inside a function."""
    source = tmp_path / "m.py"
    source.write_text(
        "import benchmarks.demo\nfrom classifiers import terms\n\ndef f():\n    import benchmarks.finetune\n"
    )
    modules = project_modules()
    assert imports(source, modules) == [
        ("benchmarks.demo", True),
        ("classifiers.terms", True),
        ("benchmarks.finetune", False),
    ]
