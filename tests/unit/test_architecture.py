"""The layers of docs/architecture.md, checked on the source: imports point one way only.

entry points (cli, api, workers) → use cases (ingest, query, embeddings) → the service (the
composition root) → ports and adapters (store, jobs, locks, queue, contexts, migrations) →
core (model, documents, names, config, errors). Imports inside functions count too: a lazy
import that reaches up is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers.builders import ROOT

LAYERS: list[tuple[str, ...]] = [
    (
        "app.errors",
        "app.config",
        "app.names",
        "app.documents",
        "app.model",
        "app.data",
        "app.logs",
        "app.bm25",
    ),
    (
        "app.store",
        "app.jobs",
        "app.locks",
        "app.queue",
        "app.contexts",
        "app.serving",
        "migrations",
    ),
    ("app.service",),
    (
        "app.ingest",
        "app.query",
        "app.embeddings",
        "app.reconcile",
        "app.lifecycle",
        "app.rebuild",
        "app.rebuild_batches",
        "app.deliveries",
        "app.evaluation",
        "app.sparse",
    ),
    ("app.cli", "app.api", "app.integrations", "workers"),
]


def layer_of(module: str) -> int:
    if module in ("app", "workers"):  # the packages themselves: their __init__ imports nothing up
        return len(LAYERS) - 1
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


SOURCES = sorted(p for d in ("app", "workers", "migrations") for p in (ROOT / d).rglob("*.py"))
MODULES = {module_name(p) for p in SOURCES}


def project_imports(path: Path) -> set[str]:
    """Project modules imported anywhere in ``path`` (``from pkg import submodule`` included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m.split(".")[0] in ("app", "workers", "migrations")}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    module = module_name(path)
    rank = layer_of(module)
    upward = [m for m in project_imports(path) if layer_of(m) > rank]
    assert not upward, f"{module} (layer {rank}) imports a higher layer: {upward}"


def test_model_knows_nothing_of_the_service() -> None:
    for path in (ROOT / "app" / "model").rglob("*.py"):
        outside = {
            m for m in project_imports(path) if not m.startswith("app.model") and m != "app.errors"
        }
        assert not outside, f"{path.name} imports {outside}"


def test_model_modules_import_each_other_by_full_name() -> None:
    """`from app.model import stages` inside app/model runs the package's __init__ (which
    imports the modules that import it): a cycle through the package's face."""
    for path in (ROOT / "app" / "model").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module != "app.model", f"{path.name}: from app.model import …"


def test_integrations_are_clients_only() -> None:
    """The deprecated adapters only re-export cdeq-client's: none imports cdeq's server code."""
    paths = sorted((ROOT / "app" / "integrations").rglob("*.py"))
    assert len(paths) >= 3  # __init__, langchain, llamaindex
    for path in paths:
        outside = {m for m in project_imports(path) if not m.startswith("app.integrations")}
        assert not outside, f"{path.name} imports {outside}"


CLIENT = ROOT / "clients" / "python" / "cdeq_client"
# what cdeq-client may import besides the standard library: its one dependency and its extras
CLIENT_THIRD_PARTY = {"httpx", "langchain_core", "llama_index", "pydantic"}


def test_client_package_imports_nothing_of_the_server() -> None:
    """cdeq-client installs with httpx alone: it imports only itself, the standard library,
    httpx and (in its adapters) the frameworks of its extras."""
    import sys

    paths = sorted(CLIENT.rglob("*.py"))
    assert len(paths) >= 6
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            allowed = {"cdeq_client", "__future__", *CLIENT_THIRD_PARTY}
            foreign = {r for r in roots if r not in allowed and r not in sys.stdlib_module_names}
            assert not foreign, f"{path.name} imports {foreign}"


def test_no_import_cycle() -> None:
    graph = {module_name(p): project_imports(p) for p in SOURCES}

    def resolve(name: str) -> str | None:  # `from app.store import X` → the package module
        while name and name not in graph:
            name = name.rpartition(".")[0]
        return name or None

    edges = {m: {r for i in imps if (r := resolve(i)) and r != m} for m, imps in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_no_hidden_default_service() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in SOURCES)
    assert "default_service" not in text
    assert "global " not in text
