"""The workflow sandbox shares our models with the host instead of building them per run.

The sandbox re-imports a workflow's module for every run (its state stays the run's own), and
with it every module that module imports unless that import is passed through. Building the
saga's pydantic models again for each run was the largest share of the worker's CPU per mint
(issue 19's profile), and a model nesting another built in a different run's copy failed
validation. `from package import module` is never passed through by the SDK's importer (Python
loads the submodule past it), so the workflow modules import their model modules by full name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic._internal._model_construction import ModelMetaclass
from temporalio import workflow
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

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
