"""The package's shape: no import circle, and worker processes load no web framework.

The import graph is read from the source (module-level imports, ``TYPE_CHECKING`` blocks
left out: they never run), so a circle shows here before it shows as an ImportError in some
import order. The worker check runs the real entry in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import demixer

SRC = Path(demixer.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.Module, *, deferred: bool = False) -> list[str]:
    """Modules imported when the module is imported (not for typing); with ``deferred`` also
    those imported inside functions and classes, when they run."""
    found: list[str] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # ``from pkg import sub`` imports the submodule; ``from pkg import name``
                # the package (import_graph keeps only the names that are modules).
                found.append(node.module + "#")
                found.extend(f"{node.module}.{alias.name}" for alias in node.names)
            elif deferred and isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.For | ast.While
            ):
                visit([*node.body, *getattr(node, "orelse", [])])
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])

    visit(tree.body)
    return found


def import_graph(*, deferred: bool = False) -> dict[str, set[str]]:
    """demixer module -> the demixer modules it imports at import time (with ``deferred``, at
    any time)."""
    paths = {_module_name(p): p for p in SRC.rglob("*.py") if "migrations" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets = _runtime_imports(ast.parse(path.read_text(), str(path)), deferred=deferred)
        submodules = {t for t in targets if t in paths}
        packages = {
            t[:-1]
            for t in targets
            if t.endswith("#") and not any(s.startswith(t[:-1] + ".") for s in submodules)
        }
        graph[name] = {t for t in submodules | packages if t in paths and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            strong(v)
    return found


def test_the_package_has_no_import_circle() -> None:
    graph = import_graph()
    assert "demixer.service.worker.runner" in graph  # the graph sees the tree
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles(graph) == []


def test_no_import_inside_a_function_closes_a_circle() -> None:
    """Importing inside a function keeps a heavy module (torch, FastAPI) out of a process
    until it is needed; it must not be a way around a circle."""
    graph = import_graph(deferred=True)
    # The CLI loads the ensembles' module (and torch with it) only when a command needs it.
    assert "demixer.models.ensemble" not in import_graph()["demixer.cli"]
    assert "demixer.models.ensemble" in graph["demixer.cli"]
    assert _cycles(graph) == []


def test_the_service_imports_neither_the_api_nor_the_vendors() -> None:
    graph = import_graph()
    upward = {
        (module, target)
        for module, targets in graph.items()
        if module.startswith(("demixer.service.", "demixer.storage", "demixer.engine"))
        for target in targets
        if target.startswith(("demixer.api", "demixer.vendors", "demixer.server"))
    }
    assert upward == set()


WORKER_ENTRY = """
import sys, tempfile
from demixer.settings import Settings
from demixer.server.compose import build_services
from demixer.service.worker import Worker
from demixer.service.delivery.dispatcher import Dispatcher
from demixer.service.retention.sweeper import Sweeper
import demixer.cli_service

services = build_services(Settings(data_dir=tempfile.mkdtemp()))
services.db.create_all()
Dispatcher(services), Sweeper(services)
web = sorted(m for m in sys.modules if m.split(".")[0] in ("fastapi", "starlette", "uvicorn"))
print("web:", ",".join(web))
"""


def test_a_worker_process_loads_no_web_framework() -> None:
    """What ``demixer worker`` imports and builds (services with every webhook builder, the
    worker, the dispatcher, the sweeper) pulls in neither FastAPI nor Starlette."""
    done = subprocess.run(
        [sys.executable, "-c", WORKER_ENTRY], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "web:"


def test_the_api_schema_and_the_state_owners_agree() -> None:
    """Each state the API shows is one its owner knows, and the owner has no state the API
    could be asked to show but does not document: a deleted file answers 404 and an expired
    one 410, so those two are the owner's only states the schema leaves out."""
    from typing import get_args

    from demixer.api.schemas import FileStatus, JobStatus, RequestStatus, WebhookStatus
    from demixer.service.delivery.outbox import DeliveryState
    from demixer.service.files.states import GONE, VISIBLE, FileState
    from demixer.service.jobs.queue import JobState
    from demixer.service.worker.child import STAGES

    # Named schema components (TypeAliasType): their values are the alias's.
    job_status, file_status = get_args(JobStatus.__value__), get_args(FileStatus.__value__)
    assert set(job_status) == {
        "IN_QUEUE",
        "IN_PROGRESS",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    }
    assert set(job_status) == set(JobState)
    assert set(file_status) == set(VISIBLE)
    assert set(FileState) - set(VISIBLE) == set(GONE) == {"deleted", "expired"}
    shown = get_args(WebhookStatus.model_fields["delivery_status"].annotation)
    assert set(shown) == {*DeliveryState, "none"}
    stage = RequestStatus.model_fields["stage"].annotation
    assert set(get_args(get_args(stage)[0])) == set(STAGES)
