"""How much one worker process takes on (`WorkerTuning`, its `Pollers`), and the fleet-wide
rate of the Pinata task queue that keeps every worker together under the Pinata plan
(`pinata_activities_per_second`; docs/deploy.md, "The Pinata rate's arithmetic")."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from mintsaga.setting_readers import SettingsError, _float, _int

# Pinata's plans (https://docs.pinata.cloud/account-management/limits): Free 60 requests a
# minute, Picnic 250, Fiesta 500, and on every plan 30 a minute for the /data/* routes
# (testAuthentication, pinList). PINATA_REQUESTS_PER_MINUTE names the account's plan and has no
# default (a wrong guess is a 429 storm on a free account or a fleet held back on a paid one);
# this is the rate `WorkerTuning()` assumes when built without one (the free plan's).
PINATA_REQUESTS_PER_MINUTE = 60
PINATA_DATA_REQUESTS_PER_MINUTE = 30
# The share of it the fleet's Pinata activities may use. The rest is for what the task queue's
# limit does not pace: the health checks (an upload and an unpin each probe, one schedule for
# the whole fleet), operators' tools, and the burst Temporal's token bucket lets through after
# a lull.
PINATA_HEADROOM = 0.8
# Pinata requests per activity on the Pinata queue, for the lean saga (issue 19): 2 for
# upload_assets (the image and its metadata; 3 when the metadata must name another layout's
# CID, a Kubo fallback that asks Pinata nothing more), 2 for release_pins (image and metadata
# unpinned). The happy path averages 2 / 1, the worst mix (rolled back after its uploads)
# (2 + 2) / 2 = 2. Mints started before it make fewer: check_ipfs 0, each upload 1.
PINATA_REQUESTS_PER_ACTIVITY = 2.0


def pinata_activities_per_second(requests_per_minute: int = PINATA_REQUESTS_PER_MINUTE) -> float:
    """The task-queue-wide activity rate that keeps the whole fleet under a Pinata plan of
    `requests_per_minute`: for the free plan's 60, 60 x 0.8 / 60 / 1 = 0.8 activities a
    second."""
    return round(requests_per_minute * PINATA_HEADROOM / 60 / PINATA_REQUESTS_PER_ACTIVITY, 3)


def pinata_limits_from_env(env: Mapping[str, str]) -> tuple[int, int]:
    """(PINATA_REQUESTS_PER_MINUTE, PINATA_DATA_REQUESTS_PER_MINUTE): the account's plan,
    required, and its /data/* limit (30, Pinata's documented figure for every plan)."""
    name = "PINATA_REQUESTS_PER_MINUTE"
    if not env.get(name, "").strip():
        raise SettingsError(
            f"{name} is not set: it names the Pinata plan's request limit (60 on the free plan,"
            " 250 Picnic, 500 Fiesta: https://docs.pinata.cloud/account-management/limits)"
        )
    rpm = _int(env, name, PINATA_REQUESTS_PER_MINUTE, minimum=1)
    data = _int(env, "PINATA_DATA_REQUESTS_PER_MINUTE", PINATA_DATA_REQUESTS_PER_MINUTE, minimum=1)
    return rpm, data


class Pollers(BaseModel):
    """How many long polls a worker keeps open on a task queue: at most `maximum`, or, with
    `minimum` set, as many between the two as the server's backlog hints ask for (autoscaling)."""

    model_config = ConfigDict(frozen=True)

    maximum: int = 5  # the Temporal SDK's default
    minimum: int | None = None  # None: a fixed maximum; set: autoscaling between the two


def _pollers(env: Mapping[str, str], name: str, *, least: int) -> Pollers:
    """`N` (at most N polls), `auto` (autoscaling, `least`..100) or `auto:MIN:MAX`."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return Pollers()
    usage = f"use a number of pollers (at least {least}), auto, or auto:MIN:MAX"
    if raw == "auto":
        return Pollers(minimum=least, maximum=100)
    if raw.startswith("auto:"):
        bounds = raw.removeprefix("auto:").split(":")
        if len(bounds) != 2 or not all(b.isdigit() for b in bounds):
            raise SettingsError(f"{name}: {raw!r} is not auto:MIN:MAX; {usage}")
        low, high = (int(b) for b in bounds)
        if not least <= low <= high:
            raise SettingsError(f"{name}: {raw!r} needs {least} <= MIN <= MAX")
        return Pollers(minimum=low, maximum=high)
    if not raw.isdigit() or int(raw) < least:
        raise SettingsError(f"{name}: {raw!r}: {usage}")
    return Pollers(maximum=int(raw))


# Local activities one process runs at once (WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES).
LOCAL_ACTIVITIES = 20
# Workflow tasks one process runs at once (WORKER_MAX_CONCURRENT_WORKFLOW_TASKS). The Python SDK
# runs each in a thread of its own (a pool this size) and every one needs the GIL, which the
# event loop sending the activities' heartbeats needs too. At the SDK's 100, a wave of 200 mints
# ran workflow tasks for 6 s and timed out `await_confirmation`'s 10 s heartbeat (mints left
# waiting for an operator); at 16, waves of 200 ran at 3.6 mints a second, none waiting, with
# 5-20 MB less resident (BENCHMARKS.md, "The lean saga"). A workflow task is a few milliseconds
# of Python: more threads add no parallelism, only contention. The SDK's core wants at least 2
# while the sticky cache is on.
WORKFLOW_TASKS = 16


class WorkerTuning(BaseModel):
    """How much one worker process takes on, and how it stops (docs/configuration.md, "Worker
    settings")."""

    model_config = ConfigDict(frozen=True)

    max_concurrent_activities: int = 100  # per task queue the process serves
    max_concurrent_workflow_tasks: int = WORKFLOW_TASKS
    # The lean saga's local activities run on the worker's event loop, inside the workflow
    # task that asked: bounded apart from the regular activities, so a burst of mints queues
    # in the worker's core instead of lagging the loop that sends every heartbeat.
    max_concurrent_local_activities: int = LOCAL_ACTIVITIES
    max_cached_workflows: int = 1000  # the sticky cache; 0: every task replays the history
    workflow_pollers: Pollers = Pollers()
    activity_pollers: Pollers = Pollers()
    drain_s: int = 30  # after SIGTERM: running activities get this long to finish
    # Temporal's task-queue-wide limit on the Pinata queue, for the whole fleet; None: no limit.
    pinata_activities_per_second: float | None = pinata_activities_per_second()

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, pinata_requests_per_minute: int | None = None
    ) -> WorkerTuning:
        """From `env`; the Pinata queue's rate is PINATA_ACTIVITIES_PER_SECOND when set, else
        what the plan (`pinata_requests_per_minute`, the free plan's when None) allows."""
        cached = _int(env, "WORKER_MAX_CACHED_WORKFLOWS", 1000, minimum=0)
        plan_rate = pinata_activities_per_second(
            pinata_requests_per_minute or PINATA_REQUESTS_PER_MINUTE
        )
        rate = _float(env, "PINATA_ACTIVITIES_PER_SECOND", plan_rate)
        return cls(
            max_concurrent_activities=_int(env, "WORKER_MAX_CONCURRENT_ACTIVITIES", 100, minimum=1),
            max_concurrent_workflow_tasks=_int(
                env,
                "WORKER_MAX_CONCURRENT_WORKFLOW_TASKS",
                WORKFLOW_TASKS,
                minimum=2 if cached else 1,
            ),
            max_concurrent_local_activities=_int(
                env, "WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES", LOCAL_ACTIVITIES, minimum=1
            ),
            max_cached_workflows=cached,
            # With a sticky cache, the SDK needs two workflow pollers (sticky and normal queue).
            workflow_pollers=_pollers(env, "WORKER_WORKFLOW_POLLERS", least=2 if cached else 1),
            activity_pollers=_pollers(env, "WORKER_ACTIVITY_POLLERS", least=1),
            drain_s=_int(env, "WORKER_DRAIN_S", 30, minimum=0),
            pinata_activities_per_second=rate or None,
        )
