"""SOLANA_COMMITMENT (issue 15): the setting, and the confirmation wait's success condition.

Pure: the setting parsed from dictionaries; the wait run against a scripted minter (the
statuses a node would answer; its poll rounds answer at once). The devstack's own finalized
notion is tested in tests/integration/test_commitment.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from mintsaga.activities import solana as solana_activities
from mintsaga.activities.solana import SolanaActivities
from mintsaga.observability.metrics import sample_value
from mintsaga.setting_readers import SettingsError
from mintsaga.settings import Settings, commitment_from_env
from mintsaga.solana.minter import SigStatus
from mintsaga.workflows import activity_models as io
from tests.unit.solana.settings_env import settings_env

# -- the setting ---------------------------------------------------------------------------------


def test_the_commitment_defaults_to_confirmed_and_takes_finalized(tmp_path: Path) -> None:
    assert Settings.from_env(settings_env(tmp_path)).solana_commitment == "confirmed"
    finalized = Settings.from_env(settings_env(tmp_path, SOLANA_COMMITMENT=" Finalized\n"))
    assert finalized.solana_commitment == "finalized"
    assert commitment_from_env({"SOLANA_COMMITMENT": ""}) == "confirmed"
    assert commitment_from_env({"SOLANA_COMMITMENT": "confirmed"}) == "confirmed"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("processed", "a processed block can still be skipped"),
        ("max", "is not one of confirmed, finalized"),  # Agave's old alias of finalized
        ("root", "is not one of confirmed, finalized"),
        ("singleGossip", "is not one of confirmed, finalized"),
        ("final", "is not one of confirmed, finalized"),
    ],
)
def test_any_other_commitment_is_refused_naming_the_variable(
    tmp_path: Path, value: str, says: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(settings_env(tmp_path, SOLANA_COMMITMENT=value))
    assert str(raised.value).startswith("SOLANA_COMMITMENT: ")
    assert says in str(raised.value)


# -- the confirmation wait -----------------------------------------------------------------------


@dataclasses.dataclass
class ScriptedMinter:
    """Answers the statuses in `script` in turn (the last one for ever), and a block height
    already past every blockhash's lastValidBlockHeight when `expired`."""

    script: list[SigStatus]
    expired: bool = False
    status_calls: int = 0
    broadcasts: int = 0

    async def signature_status(self, signature: str, **kw: Any) -> SigStatus:
        status = self.script[min(self.status_calls, len(self.script) - 1)]
        self.status_calls += 1
        return status

    async def block_height(self) -> int:
        return 10_000 if self.expired else 0

    async def poll_status(self, signature: str) -> tuple[SigStatus, int]:
        """What the worker's shared poll round answers: the status and the block height."""
        return await self.signature_status(signature), await self.block_height()

    async def broadcast(self, tx_base64: str, **kw: Any) -> Any:
        self.broadcasts += 1
        raise AssertionError("a landed transaction is not rebroadcast")


UNSEEN = SigStatus(found=False)
CONFIRMED = SigStatus(found=True, slot=41, confirmation_status="confirmed")
FINALIZED = SigStatus(found=True, slot=41, confirmation_status="finalized")
PROCESSED = SigStatus(found=True, slot=41, confirmation_status="processed")

WAIT = io.ConfirmIn(
    mint_id="m-1", signature="sig", tx_base64="AA==", last_valid_block_height=100, wait_s=5.0
)


def waiting(minter: ScriptedMinter, commitment: str | None = None) -> SolanaActivities:
    extra = {} if commitment is None else {"commitment": commitment}
    return SolanaActivities(
        minter=minter,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        spend_limit_lamports=0,
        **extra,
    )


async def test_by_default_a_confirmed_status_ends_the_wait() -> None:
    minter = ScriptedMinter([UNSEEN, CONFIRMED])
    out = await ActivityEnvironment().run(waiting(minter).await_confirmation, WAIT)
    assert (out.outcome, out.slot, minter.status_calls) == ("confirmed", 41, 2)


async def test_finalized_waits_past_confirmed_and_past_the_blockhash_expiry() -> None:
    """Confirmed at a block height already past lastValidBlockHeight: landed, not expired; the
    wait goes on (no rebroadcast) until the status says finalized."""
    minter = ScriptedMinter([CONFIRMED, CONFIRMED, CONFIRMED, CONFIRMED, FINALIZED], expired=True)
    out = await ActivityEnvironment().run(waiting(minter, "finalized").await_confirmation, WAIT)
    assert (out.outcome, out.slot, minter.status_calls) == ("confirmed", 41, 5)
    assert minter.broadcasts == 0


async def test_once_confirmed_a_node_that_has_not_seen_it_does_not_make_it_expire() -> None:
    minter = ScriptedMinter([CONFIRMED, UNSEEN, UNSEEN, FINALIZED], expired=True)
    out = await ActivityEnvironment().run(waiting(minter, "finalized").await_confirmation, WAIT)
    assert (out.outcome, minter.status_calls) == ("confirmed", 4)


async def test_finalized_still_calls_an_unseen_or_processed_transaction_expired() -> None:
    for seen in (UNSEEN, PROCESSED):
        minter = ScriptedMinter([seen], expired=True)
        out = await ActivityEnvironment().run(waiting(minter, "finalized").await_confirmation, WAIT)
        assert out.outcome == "expired"


async def test_a_failed_transaction_is_failed_at_either_commitment() -> None:
    failed = SigStatus(
        found=True, slot=9, err={"InstructionError": [0, "X"]}, confirmation_status="confirmed"
    )
    for commitment in ("confirmed", "finalized"):
        out = await ActivityEnvironment().run(
            waiting(ScriptedMinter([failed]), commitment).await_confirmation, WAIT
        )
        assert out.outcome == "failed"


async def test_confirmed_never_finalized_is_a_retryable_finalization_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wait is stretched by FINALIZATION_GRACE_S after the first confirmed status, then
    gives up retryably (the next attempt waits on; nothing is re-signed)."""
    monkeypatch.setattr(solana_activities, "FINALIZATION_GRACE_S", 0.3)
    minter = ScriptedMinter([CONFIRMED], expired=True)
    short = WAIT.model_copy(update={"wait_s": 0.05})
    timeouts = sample_value("mintsaga_solana_finalization_timeouts_total") or 0.0
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(waiting(minter, "finalized").await_confirmation, short)
    assert raised.value.type == "FinalizationTimeout" and not raised.value.non_retryable
    assert sample_value("mintsaga_solana_finalization_timeouts_total") == timeouts + 1
    assert "confirmed in slot 41 but not finalized" in str(raised.value)
    assert minter.status_calls > 5  # polled through the grace, not just the 0.05 s wait


def test_the_longest_wait_and_its_finalization_grace_fit_the_step_timeout() -> None:
    from mintsaga.workflows.models import MintOptions
    from mintsaga.workflows.policies import AWAIT_CONFIRMATION

    longest = MintOptions.model_fields["confirmation_wait_s"].metadata
    most = max(getattr(m, "le", 0) or 0 for m in longest)
    assert most == 600
    timeout = AWAIT_CONFIRMATION.timeout.total_seconds()
    assert most + solana_activities.FINALIZATION_GRACE_S + 10 <= timeout
