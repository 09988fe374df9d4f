"""The house, read from the imports: no cycles, the core never reaches up, stages in order."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ctloop", "tasks", "flows", "deployments")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[_module_name(path)] = path
    return found


def _imports(path: Path, modules: dict[str, Path], *, top_level_only: bool) -> set[str]:
    """The project modules `path` imports (anywhere in it, or only at module level)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    targets: set[str] = set()
    for node in nodes:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            # the longest project module the name points at (a module, or a name inside one)
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != me:
                targets.add(name)
    return targets


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: _imports(path, modules, top_level_only=top_level_only)
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _without_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop edges to a package's `__init__` (importing `a.b` runs `a/__init__` first: not a cycle
    of the code, and the project's `__init__` files hold only docstrings)."""
    packages = {name for name, path in _modules().items() if path.name == "__init__.py"}
    return {n: {t for t in ts if t not in packages} for n, ts in graph.items()}


def test_no_import_cycle_at_module_level():
    assert _cycles(_without_packages(_graph(top_level_only=True))) == []


def test_no_import_cycle_even_through_deferred_imports():
    # an import inside a function hides a cycle from Python, not from the design
    assert _cycles(_without_packages(_graph(top_level_only=False))) == []


def test_the_core_never_imports_flows_tasks_or_deployments_at_module_level():
    graph = _graph(top_level_only=True)
    upward = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("ctloop")
        for target in targets
        if target.split(".")[0] in ("flows", "tasks", "deployments")
    }
    assert upward == set()


# the one module of the core that may reach up: the CLI's door to the flows and deployments
UPWARD_DOOR = "ctloop.cli.run"


def test_only_the_cli_door_imports_flows_tasks_or_deployments_even_inside_functions():
    graph = _graph(top_level_only=False)
    upward = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("ctloop") and name != UPWARD_DOOR
        for target in targets
        if target.split(".")[0] in ("flows", "tasks", "deployments")
    }
    assert upward == set(), f"only {UPWARD_DOOR} may import flows/, tasks/, deployments/"
    assert UPWARD_DOOR in graph and any(
        t.split(".")[0] in ("flows", "deployments") for t in graph[UPWARD_DOOR]
    )


def test_package_inits_hold_no_code():
    # packages are rooms, not re-export layers: importing one stage never pulls in another
    for name, path in _modules().items():
        if path.name != "__init__.py" or name.split(".")[0] != "ctloop":
            continue
        tree = ast.parse(path.read_text())
        body = [n for n in tree.body if not isinstance(n, ast.Expr)]
        assigns = [n for n in body if isinstance(n, ast.Assign)]
        assert body == assigns, f"{path} holds code"


def test_stage_packages_read_like_the_pipeline():
    stages = sorted(p.name for p in (ROOT / "ctloop").iterdir() if (p / "__init__.py").exists())
    assert stages == sorted(
        [
            "cli",
            "config",
            "data",
            "gates",
            "ingest",
            "lake",
            "loop",
            "model",
            "monitor",
            "registry",
            "serving",
            "stores",
            "validate",
        ]
    )


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _package_of(module: str) -> str:
    """The room of a module: `ctloop.<stage>` in the core, else its top-level folder."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "ctloop" else parts[0]


def _package_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, targets in _without_packages(_graph(top_level_only=False)).items():
        source = _package_of(name)
        edges.setdefault(source, set()).update(
            _package_of(t) for t in targets if _package_of(t) != source
        )
    return edges


def test_no_cycle_between_stage_packages():
    # rooms, not only modules, stay a ladder: a stage never needs a stage that needs it
    assert _cycles(_package_graph()) == []


def _floors() -> dict[str, int]:
    """Each core package's floor: 1 + the highest floor it imports from (1: imports none)."""
    graph = {
        name: {t for t in targets if t.startswith("ctloop.")}
        for name, targets in _package_graph().items()
        if name.startswith("ctloop.")
    }
    floors: dict[str, int] = {}

    def floor(name: str) -> int:
        if name not in floors:
            floors[name] = 1 + max((floor(t) for t in graph.get(name, ())), default=0)
        return floors[name]

    for name in graph:
        floor(name)
    return floors


def test_the_architecture_page_draws_the_floors_the_imports_make():
    page = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    drawn: dict[str, int] = {}
    for line in page.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] == "floor" and words[1].isdigit():
            for word in words[2:]:
                name = word.rstrip("/")
                if (ROOT / "ctloop" / name).is_dir() or (ROOT / "ctloop" / f"{name}.py").is_file():
                    drawn[f"ctloop.{name}"] = int(words[1])
                elif not word.endswith("/"):
                    break  # the description starts
    assert drawn == _floors()
