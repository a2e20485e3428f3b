"""The step table is the contract: every step the workflows can schedule has exactly one
activity, with the step's input and output models, and the worker registers exactly those.

A step added without its activity, an activity dropped from the worker, a renamed activity or
one whose models drifted from its step fails here, before a workflow could schedule what no
worker serves (it would wait for ever) or decode a result into the wrong model.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client

import mintsaga.activities
from devstack.config import StackConfig
from mintsaga.workflows import policies
from mintsaga.workflows.health import HEALTH_STEPS, HealthCheck, HealthPinCleanup
from mintsaga.workflows.mint_saga import MintSaga
from mintsaga.workflows.pin_repair import PIN_REPAIR_PINATA_STEPS, PIN_REPAIR_STEPS, PinRepair
from mintsaga.workflows.policies import PINATA, PINATA_STEPS, SAGA_STEPS, provider_task_queue
from mintsaga.workflows.steps import Step
from tests.saga_support import settings_for

STEPS: dict[str, Step[Any, Any]] = {
    step.name: step for step in (*SAGA_STEPS, *HEALTH_STEPS, *PIN_REPAIR_STEPS)
}

# Histories name activities: these names never change (a renamed step strands every running
# mint that has it in its history). Add a name here only with a new step.
NAMES = {
    "wait_out_maintenance",
    "check_ipfs",
    "check_database",
    "check_rpc",
    "claim_mint",
    "compute_image_cid",
    "upload_image",
    "upload_metadata",
    "record_uploads",
    "prepare_transaction",
    "send_transaction",
    "await_confirmation",
    "record_minted",
    "verify_nft",
    "check_gateways",
    "check_partner_view",
    "check_db_consistency",
    "finish_mint",
    "release_pins",
    "rollback_mint",
    "admit_mint",
    "look_up_mint",
    "open_mint",
    "upload_assets",
    "record_notices",
    "health_solana",
    "health_postgres",
    "health_pinata",
    "health_ipfs_roundtrip",
    "health_unpin",
    "pin_repair_scan",
    "pin_repair_check",
    "pin_repair_repin",
}


def activity_name(fn: Callable[..., Any]) -> str:
    definition = activity._Definition.must_from_callable(fn)
    assert definition.name is not None
    return definition.name


def declared_activities() -> Iterator[Callable[..., Any]]:
    """Every function or method declared an activity anywhere in `mintsaga.activities`."""
    for info in pkgutil.iter_modules(mintsaga.activities.__path__):
        module = importlib.import_module(f"mintsaga.activities.{info.name}")
        for owner in vars(module).values():
            if getattr(owner, "__module__", None) != module.__name__:
                continue  # imported here, declared elsewhere
            members = vars(owner).values() if inspect.isclass(owner) else [owner]
            for member in members:
                if callable(member) and activity._Definition.from_callable(member) is not None:
                    yield member


def contract_problems(fn: Callable[..., Any]) -> list[str]:
    """How `fn` (an activity) differs from its step: name, input model, output model."""
    name = activity_name(fn)
    step = STEPS.get(name)
    if step is None:
        return [f"{name}: an activity no workflow schedules (no Step has this name)"]
    hints = typing.get_type_hints(fn)
    params = [p for p in inspect.signature(fn).parameters if p != "self"]
    problems = []
    expected_params = [] if step.input is None else [step.input]
    if [hints.get(p) for p in params] != expected_params:
        problems.append(f"{name}: takes {[hints.get(p) for p in params]}, the step {step.input}")
    returns = hints.get("return")
    expected = type(None) if step.output is None else step.output
    if returns is not expected:
        problems.append(f"{name}: returns {returns}, the step {step.output}")
    return problems


def test_step_names_are_unique_and_never_change() -> None:
    every = [step.name for step in (*SAGA_STEPS, *HEALTH_STEPS, *PIN_REPAIR_STEPS)]
    assert len(every) == len(set(every))
    assert set(every) == NAMES
    assert {step.name: step for step in SAGA_STEPS} == policies.STEPS


def test_every_step_has_one_activity_with_its_models() -> None:
    declared = list(declared_activities())
    names = [activity_name(fn) for fn in declared]
    assert len(names) == len(set(names)), "two activities share a name"
    assert set(names) == set(STEPS), (
        f"steps without an activity: {sorted(set(STEPS) - set(names))}; "
        f"activities without a step: {sorted(set(names) - set(STEPS))}"
    )
    assert [problem for fn in declared for problem in contract_problems(fn)] == []


def calls_to(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == name)
            or (isinstance(node.func, ast.Name) and node.func.id == name)
        )
    ]


def test_the_workflows_schedule_activities_only_through_their_steps() -> None:
    folder = Path(policies.__file__).parent
    scheduling = {
        path.name
        for path in folder.glob("*.py")
        for scheduler in ("execute_activity", "start_activity")
        if calls_to(ast.parse(path.read_text()), scheduler)
    }
    assert scheduling == {"steps.py"}  # `steps.execute`, which takes a Step


def test_the_saga_schedules_every_step_of_its_table() -> None:
    """Each row of the saga's table is named where the saga runs it (its stages in
    mint_stages.py and mint_saga.py, or the machinery in saga.py for the notices every saga
    records)."""
    constants = {
        constant
        for constant, value in vars(policies).items()
        if isinstance(value, Step) and value in SAGA_STEPS
    }
    assert len(constants) == len(SAGA_STEPS)
    folder = Path(policies.__file__).parent
    used = {
        node.id
        for name in ("mint_saga.py", "mint_stages.py", "saga.py")
        for node in ast.walk(ast.parse((folder / name).read_text()))
        if isinstance(node, ast.Name)
    }
    assert constants - used == set()


@pytest.mark.integration
async def test_the_worker_registers_exactly_the_steps_the_workflows_schedule(
    stack: StackConfig, client: Client
) -> None:
    from mintsaga.worker import build_workers, mint_activities

    settings = settings_for(stack)
    queue = "steps-contract"
    async with mint_activities(settings) as activities:
        saga, pinata = (
            one.config() for one in build_workers(client, settings.tuning, queue, activities)
        )
    registered = {activity_name(fn): fn for fn in saga["activities"]}
    assert len(registered) == len(saga["activities"])
    assert set(registered) == set(STEPS)
    assert [problem for fn in registered.values() for problem in contract_problems(fn)] == []
    assert set(saga["workflows"]) == {MintSaga, HealthCheck, HealthPinCleanup, PinRepair}
    assert saga["task_queue"] == queue
    # The Pinata queue serves exactly the steps the saga and the pin repair schedule there.
    assert pinata["task_queue"] == provider_task_queue(queue, PINATA)
    assert {activity_name(fn) for fn in pinata["activities"]} == (
        PINATA_STEPS | PIN_REPAIR_PINATA_STEPS
    )
    assert {step.name for step in PIN_REPAIR_STEPS if step.provider == PINATA} == (
        PIN_REPAIR_PINATA_STEPS
    )
    assert {step.name for step in SAGA_STEPS if step.provider == PINATA} == PINATA_STEPS
