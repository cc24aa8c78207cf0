"""The import graph of ``sfc_deploy``: layers point one way and no module imports itself back.

Every import statement counts, including those inside functions (a lazy import is still a
dependency). The layer order is the one ARCHITECTURE.md documents; ``lint-imports`` checks the
same order in CI with import-linter (``pyproject.toml``), this test needs nothing but the AST and
also finds cycles between modules of one layer.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sfc_deploy"

#: lowest first; packages on one line are independent siblings (neither may import the other)
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("common", "ops"),
    ("models",),
    ("data",),
    ("export",),
    ("runtime",),
    ("verify",),
    ("train", "bench"),
    ("eval",),
    ("scale",),
    ("cli",),
]


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the sfc_deploy modules it imports (``from a import b`` counts a.b when it is a module)."""
    modules = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("sfc_deploy"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if not mod.startswith("sfc_deploy"):
                    continue
                for alias in node.names:
                    sub = f"{mod}.{alias.name}"
                    targets.add(sub if sub in modules else mod)
        graph[name] = {t for t in targets if t != name}
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the root package: the public API, above everything
    for i, group in enumerate(LAYERS):
        if parts[1] in group:
            return i
    return -1


def test_every_subpackage_has_a_layer() -> None:
    unknown = sorted({m.split(".")[1] for m in import_graph() if len(m.split(".")) > 1 and _layer(m) == -1})
    assert not unknown, f"give these a layer in LAYERS and ARCHITECTURE.md: {unknown}"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in graph.items():
        for target in targets:
            ls, lt = _layer(source), _layer(target)
            if lt is None and ls is not None:
                bad.append(f"{source} -> {target} (the root package imports every layer)")
            elif ls is not None and lt is not None and (lt > ls or (lt == ls and source.split(".")[1] != target.split(".")[1])):
                bad.append(f"{source} -> {target}")
    return sorted(bad)


def test_layers_point_one_way() -> None:
    bad = layer_violations(import_graph())
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("layer", [g for group in LAYERS for g in group])
def test_layer_exists(layer: str) -> None:
    assert (PACKAGE / layer).is_dir() or (PACKAGE / f"{layer}.py").is_file()


def test_the_package_root_and_the_shared_helpers_import_without_torch() -> None:
    # benchmarks/gpu/collect.py writes with sfc_deploy.common.atomic after every step of the GPU check:
    # an import of torch there cost 2 s a call; the root's names load sfc_deploy.models on first use
    code = ("import sys, sfc_deploy, sfc_deploy.common.atomic, sfc_deploy.errors\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]\n"
            "assert sfc_deploy.create_model.__module__ == 'sfc_deploy.models.factory' and 'torch' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
