"""What the Temporal server offers that the saga may lean on, detected, not assumed.

Task priorities (``temporalio.common.Priority(priority_key=...)``; 1 is the highest, 5 the
lowest, 3 when unset; activities inherit their workflow's). Whether a server honours them
cannot be asked directly: ``GetSystemInfo``'s capabilities have no flag for it, and the switch
that turns the priority-aware matcher on (``matching.useNewMatcher``) is the server's dynamic
config, which a client cannot read. So the rule goes by the server's version, from the server's
own history (github.com/temporalio/temporal):

- before 1.28.0: the server's API has no ``Priority``; a priority sent is dropped unread.
- 1.28.0 to 1.30.x: the history records a priority ("Priority-enabled TaskMatcher", #7196,
  first released in 1.28.0) but the matcher that honours it is off unless the operator sets
  ``matching.useNewMatcher`` (``common/dynamicconfig/constants.go``: default false).
- 1.31.0 and later: ``matching.useNewMatcher`` defaults to true ("Enable
  matching.useNewMatcher and enableMigration by default", #9595, first tagged v1.31.0), as
  https://docs.temporal.io/develop/task-queue-priority-fairness says: "Priority is enabled by
  default in both Temporal Cloud and self-hosted Temporal. To disable Priority in self-hosted
  Temporal, set the dynamic config matching.useNewMatcher to false".
- Temporal Cloud (an address under ``tmprl.cloud``): enabled by default, the same page says.

Setting a priority where it is not honoured does no harm: the task is dispatched in the
queue's usual order (an older server drops the field it does not know, a classic matcher
ignores it). Priority holds within one task queue partition (the same page), so ordering
across a partitioned queue is approximate. What this cannot see: an operator who turned the
matcher off on a 1.31+ server, or on before 1.31.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

__all__ = [
    "PRIORITIES_BY_DEFAULT_FROM",
    "PRIORITIES_RECORDED_FROM",
    "TaskPriorities",
    "priorities_for",
    "task_priorities",
    "task_priorities_supported",
]

PRIORITIES_RECORDED_FROM = (1, 28, 0)  # the history keeps Priority; the matcher is opt-in
PRIORITIES_BY_DEFAULT_FROM = (1, 31, 0)  # matching.useNewMatcher on by default
CLOUD_SUFFIX = ".tmprl.cloud"
SYSTEM_INFO_TIMEOUT = timedelta(seconds=10)  # the worker asks once at start: never waits long
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class TaskPriorities:
    """Whether the server honours task priorities, and why we think so."""

    supported: bool
    server_version: str
    reason: str


def priorities_for(server_version: str, *, address: str = "") -> TaskPriorities:
    """The rule of the module docstring, for a server reporting `server_version` at
    `address` (its host decides for Temporal Cloud)."""
    host = address.rsplit(":", 1)[0].lower()
    if host.endswith(CLOUD_SUFFIX):
        return TaskPriorities(True, server_version, "Temporal Cloud: priorities on by default")
    found = _VERSION.match(server_version.strip())
    if found is None:
        return TaskPriorities(
            False, server_version, "server version unknown: priorities not assumed"
        )
    version = tuple(int(part) for part in found.groups())
    shown = ".".join(map(str, version))
    if version >= PRIORITIES_BY_DEFAULT_FROM:
        return TaskPriorities(
            True, server_version, f"server {shown}: priorities on by default (since 1.31.0)"
        )
    if version >= PRIORITIES_RECORDED_FROM:
        return TaskPriorities(
            False,
            server_version,
            f"server {shown}: priorities recorded, honoured only with the dynamic config"
            " matching.useNewMatcher=true (not visible to a client: not assumed)",
        )
    return TaskPriorities(
        False, server_version, f"server {shown}: no task priorities before 1.28.0"
    )


async def task_priorities(client: Client) -> TaskPriorities:
    """Ask the server its version (GetSystemInfo) and apply `priorities_for`; a server that
    does not answer gives 'not supported' with the reason."""
    address = client.service_client.config.target_host
    try:
        info = await client.workflow_service.get_system_info(
            GetSystemInfoRequest(), timeout=SYSTEM_INFO_TIMEOUT
        )
    except Exception as exc:  # RPCError, or a connection gone: the answer is "unknown"
        return TaskPriorities(False, "", f"GetSystemInfo failed ({exc}): priorities not assumed")
    return priorities_for(info.server_version, address=address)


async def task_priorities_supported(client: Client) -> bool:
    """True when the server `client` talks to honours task priorities by default."""
    return (await task_priorities(client)).supported
