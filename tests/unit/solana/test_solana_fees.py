"""The priority-fee and compute-unit arithmetic (clients/solana_fees.py) and its settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mintsaga.setting_readers import SettingsError
from mintsaga.settings import (
    DEFAULT_PRIORITY_FEE_CAP,
    MAX_PRIORITY_FEE_MICRO_LAMPORTS,
    Settings,
    operator_fee_cap_from_env,
    priority_fee_cap_from_env,
)
from mintsaga.solana.fees import (
    FALLBACK_COMPUTE_UNIT_LIMIT,
    MAX_COMPUTE_UNIT_LIMIT,
    RESIGN_FLOOR_MICRO_LAMPORTS,
    compute_unit_limit,
    helius_priority_level,
    mint_budget,
    mint_cost,
    parse_priority_fee_estimate,
    parse_recent_fees,
    percentile_fee,
    priority_fee_from_recent,
    priority_lamports,
    raised_fee,
    rent_exempt_minimum,
    rent_is_plausible,
)
from tests.unit.solana.settings_env import settings_env

# -- percentile ------------------------------------------------------------------------------


def test_percentile_is_nearest_rank_over_all_samples_zeros_included() -> None:
    # Issue 15: a 0 is a slot where a zero bid landed next to the accounts; it counts.
    fees = [0, 400, 0, 100, 300, 200, 0]  # sorted: 0 0 0 100 200 300 400
    assert percentile_fee(fees, 75) == 300  # rank ceil(0.75 * 7) = 6
    assert percentile_fee(fees, 50) == 100  # rank 4
    assert percentile_fee(fees, 100) == 400
    assert percentile_fee(fees, 1) == 0
    assert percentile_fee(fees, 0) == 0  # the lowest, never an index of -1
    assert percentile_fee(range(1, 101), 75) == 75
    assert percentile_fee([7], 75) == 7
    # One expensive slot on a quiet chain is not the estimate (it was, over non-zero fees).
    assert percentile_fee([0] * 149 + [90_000], 75) == 0
    # A chain busy in 3 slots of 4 is.
    assert percentile_fee([0, 5_000, 6_000, 7_000] * 30, 75) == 6_000


def test_percentile_of_no_fees_is_zero() -> None:
    assert percentile_fee([], 75) == 0
    assert percentile_fee([0, 0, 0], 75) == 0


@pytest.mark.parametrize("percentile", [-1, 101])
def test_percentile_out_of_range_is_refused(percentile: int) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile_fee([1], percentile)


# -- the raise per re-sign and the cap ------------------------------------------------------


def test_each_resign_raises_by_half_rounded_up() -> None:
    assert raised_fee(6000, resign=0, cap=10**9) == 6000
    assert raised_fee(6000, resign=1, cap=10**9) == 9000
    assert raised_fee(6000, resign=2, cap=10**9) == 13500
    assert raised_fee(6000, resign=3, cap=10**9) == 20250
    assert raised_fee(1001, resign=1, cap=10**9) == 1502  # 1501.5 rounded up
    # exact integer arithmetic: ceil(ceil(ceil(ceil(3000*1.5)*1.5)*1.5)*1.5)
    assert raised_fee(3000, resign=4, cap=10**9) == 15188


def test_the_cap_always_holds() -> None:
    assert raised_fee(6000, resign=0, cap=5000) == 5000
    assert raised_fee(4000, resign=1, cap=5000) == 5000
    assert raised_fee(10**6, resign=10_000, cap=DEFAULT_PRIORITY_FEE_CAP) == 100_000
    assert raised_fee(6000, resign=3, cap=0) == 0


def test_a_resign_with_no_recent_fees_still_bids() -> None:
    assert raised_fee(0, resign=0, cap=10**6) == 0
    assert raised_fee(0, resign=1, cap=10**6) == RESIGN_FLOOR_MICRO_LAMPORTS * 3 // 2
    assert raised_fee(0, resign=2, cap=10**6) > raised_fee(0, resign=1, cap=10**6)


def test_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        raised_fee(1, resign=-1, cap=10)
    with pytest.raises(ValueError):
        raised_fee(-1, resign=0, cap=10)


def test_fee_from_recent_combines_percentile_raise_and_cap() -> None:
    recent = [0, 1000, 2000, 3000, 4000, 0, 5000, 6000, 7000, 8000]
    assert priority_fee_from_recent(recent, percentile=75, cap=10**6) == 6000  # rank 8 of 10
    assert priority_fee_from_recent(recent, percentile=75, cap=10**6, resign=1) == 9000
    assert priority_fee_from_recent(recent, percentile=75, cap=7000, resign=1) == 7000
    assert priority_fee_from_recent(recent, percentile=50, cap=10**6) == 3000  # rank 5 of 10
    assert priority_fee_from_recent([0] * 150, percentile=75, cap=10**6) == 0


@pytest.mark.parametrize(
    ("percentile", "level"),
    [
        (0, "Min"),
        (1, "Low"),
        (25, "Low"),
        (50, "Medium"),
        (75, "High"),
        (90, "VeryHigh"),
        (95, "VeryHigh"),
        (96, "UnsafeMax"),
        (100, "UnsafeMax"),
    ],
)
def test_helius_level_is_the_lowest_at_or_above_the_percentile(percentile: int, level: str) -> None:
    assert helius_priority_level(percentile) == level


def test_helius_estimates_are_parsed_strictly_and_rounded_up() -> None:
    assert parse_priority_fee_estimate({"priorityFeeEstimate": 33549.0}) == 33549
    assert parse_priority_fee_estimate({"priorityFeeEstimate": 120.2}) == 121
    assert parse_priority_fee_estimate({"priorityFeeEstimate": 0}) == 0
    for bad in (
        [],
        {},
        {"priorityFeeEstimate": -1},
        {"priorityFeeEstimate": "5"},
        {"priorityFeeEstimate": True},
        {"priorityFeeEstimate": float("nan")},
        {"priorityFeeEstimate": float("inf")},
    ):
        with pytest.raises((TypeError, ValueError)):
            parse_priority_fee_estimate(bad)


def test_recent_fees_are_parsed_strictly() -> None:
    answer = [{"slot": 5, "prioritizationFee": 0}, {"slot": 6, "prioritizationFee": 1500}]
    assert parse_recent_fees(answer) == [0, 1500]
    for bad in ({"slot": 1}, [{"slot": 1, "prioritizationFee": -1}], [{"slot": 1}]):
        with pytest.raises((TypeError, ValueError, KeyError)):
            parse_recent_fees(bad)
    with pytest.raises(ValueError):
        parse_recent_fees([{"slot": 1, "prioritizationFee": "12"}])


# -- compute-unit limit ---------------------------------------------------------------------


def test_compute_unit_limit_is_simulation_plus_margin() -> None:
    assert compute_unit_limit(26_260) == 31_512 + 1000  # 26260 * 1.2 = 31512 exactly
    assert compute_unit_limit(26_261) == 31_514 + 1000  # 31513.2 rounded up
    assert compute_unit_limit(0) == 1000
    assert compute_unit_limit(1_300_000) == MAX_COMPUTE_UNIT_LIMIT
    assert compute_unit_limit(30_000) < FALLBACK_COMPUTE_UNIT_LIMIT


# -- settings --------------------------------------------------------------------------------


def test_priority_fee_settings_default_and_parse(tmp_path: Path) -> None:
    settings = Settings.from_env(settings_env(tmp_path))
    assert settings.solana_priority_fee_cap == 100_000
    assert settings.solana_priority_fee_percentile == 75
    settings = Settings.from_env(
        settings_env(tmp_path, SOLANA_PRIORITY_FEE_CAP="5000", SOLANA_PRIORITY_FEE_PERCENTILE="90")
    )
    assert (settings.solana_priority_fee_cap, settings.solana_priority_fee_percentile) == (
        5000,
        90,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SOLANA_PRIORITY_FEE_CAP", "-1", "below the minimum 0"),
        ("SOLANA_PRIORITY_FEE_CAP", "lots", "is not an integer"),
        ("SOLANA_PRIORITY_FEE_CAP", str(2**64), "above the maximum"),
        ("SOLANA_PRIORITY_FEE_PERCENTILE", "101", "above the maximum 100"),
        ("SOLANA_PRIORITY_FEE_PERCENTILE", "-5", "below the minimum 0"),
    ],
)
def test_bad_priority_fee_settings_name_the_variable(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(settings_env(tmp_path, **{name: value}))
    assert str(raised.value).startswith(f"{name}: ")
    assert says in str(raised.value)


# -- the spend policy (issue 14) ----------------------------------------------------------------


def test_the_rent_formula_is_agaves_default() -> None:
    # A 165-byte SPL token account needs 2,039,280 lamports on every public cluster.
    assert rent_exempt_minimum(165) == 2_039_280
    assert rent_is_plausible(2_039_280, 165)
    assert rent_is_plausible(2_039_280 * 21 // 20, 165)
    assert not rent_is_plausible(2_039_280 * 21 // 20 + 1, 165)  # a node asking for more
    assert not rent_is_plausible(-1, 165)


@given(
    size=st.integers(min_value=0, max_value=10_000),
    cap=st.integers(min_value=0, max_value=MAX_PRIORITY_FEE_MICRO_LAMPORTS),
    price=st.integers(min_value=0, max_value=MAX_PRIORITY_FEE_MICRO_LAMPORTS),
    limit=st.integers(min_value=1, max_value=MAX_COMPUTE_UNIT_LIMIT),
)
def test_a_mint_within_the_policy_fits_its_budget_and_one_beyond_does_not(
    size: int, cap: int, price: int, limit: int
) -> None:
    rent = rent_exempt_minimum(size)
    within = price <= cap and limit <= FALLBACK_COMPUTE_UNIT_LIMIT
    cost = mint_cost(rent, price, limit)
    if within:
        assert cost <= mint_budget(size, cap)
    if priority_lamports(price, limit) > priority_lamports(cap, FALLBACK_COMPUTE_UNIT_LIMIT) + (
        rent * 21 // 20 - rent
    ):
        assert cost > mint_budget(size, cap)


def test_the_operator_cap_is_bounded_and_never_below_the_cap() -> None:
    with pytest.raises(SettingsError, match=r"SOLANA_PRIORITY_FEE_CAP: .* above the maximum"):
        priority_fee_cap_from_env({"SOLANA_PRIORITY_FEE_CAP": str(10**18)})
    with pytest.raises(SettingsError, match="is below SOLANA_PRIORITY_FEE_CAP"):
        operator_fee_cap_from_env(
            {"SOLANA_PRIORITY_FEE_CAP": "5000", "SOLANA_OPERATOR_PRIORITY_FEE_CAP": "10"}
        )
    assert operator_fee_cap_from_env({}) == 10 * DEFAULT_PRIORITY_FEE_CAP


def test_priority_fee_estimator_settings_default_and_parse(tmp_path: Path) -> None:
    settings = Settings.from_env(settings_env(tmp_path))
    assert settings.solana_priority_fee_estimator == "rpc"
    assert settings.solana_priority_fee_accounts == ()
    busy = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
    settings = Settings.from_env(
        settings_env(
            tmp_path,
            SOLANA_PRIORITY_FEE_ESTIMATOR="Helius",
            SOLANA_PRIORITY_FEE_ACCOUNTS=f" {busy}, ,{busy[:-1]}",
        )
    )
    assert settings.solana_priority_fee_estimator == "helius"
    assert settings.solana_priority_fee_accounts == (busy, busy[:-1])
    for name, value in (
        ("SOLANA_PRIORITY_FEE_ESTIMATOR", "quicknode"),
        ("SOLANA_PRIORITY_FEE_ACCOUNTS", "not-base58-0OIl"),
    ):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env(settings_env(tmp_path, **{name: value}))
