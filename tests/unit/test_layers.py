"""The house rules of the package's imports (docs/architecture.md, "Layers"), read from the source.

Every import counts — at module level or inside a function — because a function-level import is still a
dependency; only the ORM model registration inside ``adapters/db`` may go in a circle. A failure names
the modules, so whoever reintroduces a cycle or reaches into a module's privates sees where.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "propcrm"

#: The layers, innermost first: a part may import its own layer and the ones before it (in this
#: tuple), never a later one. ``roles`` is data every layer may read.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"domain", "roles"}),
    frozenset({"engine"}),
    frozenset({"analytics", "synth"}),
    frozenset({"adapters"}),
    frozenset({"services", "cluster", "features"}),
    frozenset({"http"}),  # the HTTP kernel: auth, page rendering, errors
    frozenset({"api", "web"}),
    frozenset({"cli", "tools"}),
)

#: Known exceptions, each with the reason and what removes it. Keep this short.
ALLOWED_PRIVATE: set[tuple[str, str]] = set()
ALLOWED_CROSSINGS = {
    # services/ -> features/ (issue 20's platform hooks, marked "-- platforms" in the code): the only
    # edges that make services and features a circle. They go when the services move into their
    # feature slices and the composition root wires connectors into the dispatcher (issue 13, next steps).
    ("propcrm.services.dispatch", "propcrm.features.platforms.commands"),
    ("propcrm.services.payouts", "propcrm.features.platforms.payouts"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        rel = path.relative_to(SRC).with_suffix("")
        found[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    return found


MODULES = _modules()


def _imports(module: str) -> list[tuple[str, str | None]]:
    """(imported module of the package, imported name or None) for every import in ``module``."""
    path = MODULES[module]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.append((full, None) if full in MODULES else (target, alias.name))
        elif isinstance(node, ast.Import):
            out.extend((alias.name, None) for alias in node.names)
    resolved = []
    for target, name in out:
        while target and target not in MODULES and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in MODULES and target != module and target.startswith(PACKAGE + "."):
            resolved.append((target, name))
    return resolved


EDGES = {module: _imports(module) for module in MODULES}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(part: str) -> int:
    for number, members in enumerate(LAYERS):
        if part in members:
            return number
    raise AssertionError(f"propcrm.{part} is in no layer: add it to LAYERS in tests/unit/test_layers.py "
                         "and to docs/architecture.md")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan, iterative)."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def test_every_part_of_the_package_has_a_layer():
    for module in MODULES:
        if module != PACKAGE:
            _layer(_part(module))


def test_no_import_cycles_between_modules_except_the_orm_model_registration():
    graph = {module: {target for target, _ in EDGES[module]} for module in MODULES}
    cycles = [c for c in _cycles(graph) if not all(m.startswith("propcrm.adapters.db") for m in c)]
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycles_between_the_parts_of_the_package():
    graph: dict[str, set[str]] = {}
    for module, targets in EDGES.items():
        graph.setdefault(_part(module), set())
        for target, _ in targets:
            if (module, target) not in ALLOWED_CROSSINGS and _part(target) != _part(module):
                graph[_part(module)].add(_part(target))
                graph.setdefault(_part(target), set())
    assert _cycles(graph) == []


def test_no_module_imports_another_modules_private_names():
    private = sorted(
        (module, f"{target}.{name}")
        for module, targets in EDGES.items()
        for target, name in targets
        if name and name.startswith("_") and not name.startswith("__")
    )
    assert [p for p in private if p not in ALLOWED_PRIVATE] == []


@pytest.mark.parametrize("part", ["domain", "engine"])
def test_the_core_imports_nothing_outside_itself(part):
    allowed = {"domain"} if part == "domain" else {"domain", "engine"}
    outside = sorted(f"{module} -> {target}" for module, targets in EDGES.items() if _part(module) == part
                     for target, _ in targets if _part(target) not in allowed)
    assert outside == []


def test_imports_point_inwards():
    """A part imports its own layer and the inner ones: nothing below the HTTP kernel imports it, the
    kernel imports neither the API nor the pages, services never import the command line."""
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in EDGES.items() if module != PACKAGE
        for target, _ in targets
        if _layer(_part(target)) > _layer(_part(module)) and (module, target) not in ALLOWED_CROSSINGS
    )
    assert upward == []


#: Everything under the HTTP kernel (issue 13, "Done when"): pinned by name, so that moving a part to a later
#: layer in ``LAYERS`` cannot quietly allow it to import the kernel, the API or the pages.
BELOW_THE_KERNEL = ("domain", "roles", "engine", "analytics", "synth", "adapters", "services", "cluster", "features")


@pytest.mark.parametrize("part", BELOW_THE_KERNEL)
def test_nothing_below_the_http_kernel_imports_it_the_api_or_the_pages(part):
    upward = sorted(f"{module} -> {target}" for module, targets in EDGES.items() if _part(module) == part
                    for target, _ in targets if _part(target) in {"http", "api", "web", "cli", "tools"})
    assert upward == []


def test_the_allowed_exceptions_still_exist():
    """An exception that is fixed is taken off the list, so that it cannot come back unnoticed."""
    imports = {(module, target) for module, targets in EDGES.items() for target, _ in targets}
    private = {(module, f"{target}.{name}") for module, targets in EDGES.items() for target, name in targets if name}
    assert ALLOWED_CROSSINGS <= imports
    assert ALLOWED_PRIVATE <= private
