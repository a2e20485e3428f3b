"""The workflow sandbox shares our models with the host instead of building them per run.

The sandbox re-imports a workflow's module for every run (its state stays the run's own), and
with it every module that module imports unless that import is passed through. Building the
saga's pydantic models again for each run was the largest share of the worker's CPU per mint
(issue 19's profile), and a model nesting another built in a different run's copy failed
validation. `from package import module` is never passed through by the SDK's importer (Python
loads the submodule past it), so the workflow modules import their model modules by full name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic._internal._model_construction import ModelMetaclass
from temporalio import workflow
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import mintsaga.workflows as workflow_modules
from mintsaga.worker import WORKFLOWS

# Modules of plain models and tables: nothing in them changes after import.
SHARED = (
    "mintsaga.workflows.activity_models",
    "mintsaga.workflows.models",
    "mintsaga.workflows.policies",
)


@pytest.fixture
def models_built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The module of every pydantic model class created while the fixture is in use."""
    built: list[str] = []
    original = ModelMetaclass.__new__

    def recording(mcs: Any, name: str, bases: Any, namespace: dict[str, Any], *a: Any, **k: Any):  # type: ignore[no-untyped-def]
        built.append(str(namespace.get("__module__")))
        return original(mcs, name, bases, namespace, *a, **k)

    monkeypatch.setattr(ModelMetaclass, "__new__", recording)
    yield built


@pytest.mark.parametrize("defn", WORKFLOWS, ids=lambda w: w.__name__)
async def test_a_workflow_run_builds_none_of_the_shared_models_again(
    defn: type, models_built: list[str]
) -> None:
    # What the worker does for each run it starts (validation builds a run in the sandbox,
    # on the worker's event loop).
    SandboxedWorkflowRunner().prepare_workflow(workflow._Definition.must_from_class(defn))
    rebuilt = sorted({module for module in models_built if module in SHARED})
    assert rebuilt == [], f"{defn.__name__}: the sandbox built the models of {rebuilt} again"


# Workflow code the sandbox shares with the host: it runs inside workflows, but the sandbox does
# not restrict what a passed-through module calls, so nothing in it may reach a clock, a random
# source, the environment or the network except through `temporalio.workflow`.
SHARED_WORKFLOW_CODE = ("mint_stages.py", "mint_state.py", "saga.py", "steps.py")
ALLOWED_IMPORTS = (
    "__future__",
    "asyncio",
    "contextlib",
    "functools",
    "collections",  # .abc: the types
    "dataclasses",
    "datetime",  # the types; the clocks are refused below
    "typing",
    "temporalio",
    "pydantic",
    "mintsaga",
)
CLOCKS = {"now", "utcnow", "today", "fromtimestamp"}


@pytest.mark.parametrize("name", SHARED_WORKFLOW_CODE)
def test_shared_workflow_code_reaches_no_clock_randomness_or_io(name: str) -> None:
    source = (Path(workflow_modules.__file__).parent / name).read_text()
    tree = ast.parse(source)
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    outside = [m for m in imported if m.split(".")[0] not in ALLOWED_IMPORTS]
    assert outside == [], f"{name} imports {outside}"
    clocks = [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in CLOCKS
        and isinstance(node.value, ast.Name)
        and node.value.id in ("datetime", "date")
    ]
    assert clocks == [], f"{name} reads the host's clock: {clocks}"
    assert "open(" not in source.replace("_open(", ""), f"{name} opens a file"
