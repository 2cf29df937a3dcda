"""The join window arithmetic (Node's) and the in-process API call budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from privydrop.ratelimit import (
    CallBudget,
    RateDecision,
    decide,
    join_window,
    rate_limit_message,
)
from privydrop.store.interface import RateResult
from privydrop.store.memory import MemoryStore

NOW = 1_700_000_000_000


def test_join_window_describes_the_node_key_member_and_ttl() -> None:
    """The store records ``<now>-<nonce>`` under ratelimit:join:<ip> for 5 s, as Node does."""
    w = join_window("203.0.113.9", NOW, "0.25", window_s=5, limit=2)
    assert (w.key_suffix, w.member, w.window_ms, w.limit, w.ttl_s) == (
        "203.0.113.9",
        f"{NOW}-0.25",
        5_000,
        2,
        5,
    )


@pytest.mark.parametrize(
    ("count", "oldest_offset_ms", "expected"),
    [
        # allowed = count <= limit; remaining = max(limit - count, 0)
        (1, 0, RateDecision(True, 1, 5)),
        (2, -1_000, RateDecision(True, 0, 4)),
        (3, -2_500, RateDecision(False, 0, 3)),  # ceil(2.5) = 3
        (3, -2_001, RateDecision(False, 0, 3)),  # ceil(2.999) = 3
        (3, -2_000, RateDecision(False, 0, 3)),  # exactly 3
        (3, -4_999, RateDecision(False, 0, 1)),  # ceil(0.001) = 1
        (9, -5_000, RateDecision(False, 0, 0)),
        (9, -60_000, RateDecision(False, 0, 0)),  # never negative
    ],
)
def test_decide_matches_the_node_formulas(
    count: int, oldest_offset_ms: int, expected: RateDecision
) -> None:
    """Users see the same "try again in Ns" numbers as with the Node server."""
    w = join_window("ip", NOW, "n", window_s=5, limit=2)
    assert decide(RateResult(count, NOW + oldest_offset_ms), w, NOW) == expected


def test_rate_limit_message_format() -> None:
    """The exact joinResponse text the client shows."""
    assert (
        rate_limit_message(RateDecision(False, 0, 3))
        == "Rate limit exceeded. Try again in 3s. Attempts left: 0."
    )


# -- CallBudget ----------------------------------------------------------------------


def spend_many(budget: CallBudget, key: str, n: int) -> list[bool]:
    return [budget.spend(key).allowed for _ in range(n)]


def test_fixed_budget_allows_n_calls_per_window() -> None:
    """The N+1st API call in a window gets 429 with the seconds until the next window."""
    clock = Clock()
    budget = CallBudget(3, 60, clock, sliding=False)
    clock.advance(10)
    assert [budget.spend("a").remaining for _ in range(3)] == [2, 1, 0]
    refused = budget.spend("a")
    assert not refused.allowed and refused.retry_after_s == 50
    assert budget.spend("b").allowed  # per client
    clock.advance(50)
    assert spend_many(budget, "a", 4) == [True, True, True, False]


def test_sliding_budget_smooths_the_window_boundary() -> None:
    """Right after a full window a client cannot start a second full burst."""
    clock = Clock()
    budget = CallBudget(10, 60, clock)
    clock.advance(59)
    assert spend_many(budget, "a", 10) == [True] * 10
    clock.advance(2)  # t = 61: the previous window still weighs 59/60
    refused = budget.spend("a")
    assert not refused.allowed
    # 10 * (1 - (1 + t) / 60) + 0 + 1 <= 10  =>  t >= 5
    assert refused.retry_after_s == 5
    clock.advance(4.9)
    assert not budget.spend("a").allowed
    clock.advance(0.2)
    assert budget.spend("a").allowed


def test_refused_calls_are_not_counted() -> None:
    """A client hammering after a 429 is allowed again in the next window, not locked out."""
    clock = Clock()
    budget = CallBudget(2, 10, clock, sliding=False)
    spend_many(budget, "a", 50)
    clock.advance(10)
    assert budget.spend("a").allowed


def test_zero_calls_turns_the_budget_off() -> None:
    """API_RATE_LIMIT=0 means no limit at all."""
    budget = CallBudget(0, 60, Clock())
    assert not budget.enabled
    assert all(spend_many(budget, "a", 1_000))
    assert len(budget) == 0


def test_idle_clients_are_forgotten() -> None:
    """Memory does not grow with every address ever seen."""
    clock = Clock()
    budget = CallBudget(5, 60, clock)
    for n in range(1_000):
        budget.spend(f"10.0.{n // 256}.{n % 256}")
    assert len(budget) == 1_000
    clock.advance(120)
    budget.spend("late")
    assert len(budget) == 1


def test_key_count_is_capped() -> None:
    """A flood of distinct addresses within one window cannot exhaust memory."""
    budget = CallBudget(5, 60, Clock(), max_keys=100)
    for n in range(1_000):
        budget.spend(f"k{n}")
    assert len(budget) == 100


@pytest.mark.parametrize(
    "kwargs",
    [
        {"calls": -1, "window_s": 60},
        {"calls": 5, "window_s": 0},
        {"calls": 5, "window_s": 60, "max_keys": 0},
    ],
)
def test_nonsense_budgets_are_rejected(kwargs: dict[str, float]) -> None:
    """A misconfiguration fails at start-up rather than limiting everything or nothing."""
    with pytest.raises(ValueError):
        CallBudget(clock=Clock(), **kwargs)  # type: ignore[arg-type]


@given(
    sliding=st.booleans(),
    gaps=st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), max_size=200),
)
def test_budget_never_exceeds_n_per_window_nor_2n_per_interval(
    sliding: bool, gaps: list[float]
) -> None:
    """Property: at most N allowed calls per aligned window; in any S seconds at most
    2N with fixed windows (a burst each side of a boundary) and fewer with sliding."""
    calls, window = 5, 10.0
    clock = Clock()
    budget = CallBudget(calls, window, clock, sliding=sliding)
    allowed_at: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        if budget.spend("k").allowed:
            allowed_at.append(clock.seconds())
    per_window: dict[int, int] = {}
    for t in allowed_at:
        per_window[int(t // window)] = per_window.get(int(t // window), 0) + 1
    assert all(n <= calls for n in per_window.values())
    for i, start in enumerate(allowed_at):
        in_interval = [t for t in allowed_at[i:] if t < start + window]
        assert len(in_interval) <= (2 * calls - 1 if sliding else 2 * calls)


def test_eviction_cost_does_not_grow_with_the_table() -> None:
    """Forgetting idle clients costs each call a bounded number of steps
    however many clients are remembered: an IPv6 flood fills the table with
    100,000 keys, and scanning them all once per window would stall every
    API call of that moment."""

    def steps_per_call(size: int) -> float:
        clock = Clock()
        budget = CallBudget(5, 60, clock, max_keys=size)
        for n in range(size):
            budget.spend(f"old{n}")
        clock.advance(60)  # one window on: every key still counts (previous window)
        for n in range(size):
            budget.spend(f"new{n}")
        before = budget.keys_examined
        clock.advance(60)  # now the "old" keys are idle for two windows
        calls = 2 * size
        for n in range(calls):
            budget.spend(f"next{n}")
        assert len(budget) <= size
        return (budget.keys_examined - before) / calls

    small, large = steps_per_call(1_000), steps_per_call(50_000)
    assert small <= 3 and large <= 3
    # Idle keys are forgotten each in one step, at most once each.
    clock = Clock()
    budget = CallBudget(5, 60, clock)
    for n in range(10_000):
        budget.spend(f"k{n}")
    clock.advance(60)
    start = budget.keys_examined
    for _ in range(100):  # a key still in use keeps no idle key alive, nor costs a scan
        budget.spend("busy")
    assert budget.keys_examined - start <= 2 * 100
    clock.advance(120)
    budget.spend("late")
    assert len(budget) == 1
    assert budget.keys_examined - start <= 10_000 + 2 * 101


# -- one budget across processes ------------------------------------------------


def alternate(budgets: list[CallBudget], key: str, n: int) -> list[bool]:
    return [budgets[i % len(budgets)].spend(key).allowed for i in range(n)]


def test_processes_sharing_a_store_share_the_budget() -> None:
    """Two processes behind one load balancer give a client one budget, not
    two: calls alternating between them are counted together."""
    clock = Clock()
    clock.advance(1_000)
    store = MemoryStore(clock)
    one = CallBudget(10, 60, clock, store=store, name="api")
    two = CallBudget(10, 60, clock, store=store, name="api")
    allowed = alternate([one, two], "203.0.113.9", 40)
    assert 10 <= sum(allowed) <= 11
    assert two.spend("198.51.100.1").allowed  # another client, another budget
    # The next window grants a budget again (minus what still slides in).
    clock.advance(120)
    assert sum(alternate([one, two], "203.0.113.9", 40)) in (10, 11)


def test_budgets_of_different_names_count_apart() -> None:
    """The logs_debug budget and the API budget of one client are two counts."""
    clock = Clock()
    store = MemoryStore(clock)
    api = CallBudget(3, 60, clock, store=store, name="api")
    logs = CallBudget(3, 60, clock, store=store, name="logs_debug")
    assert spend_many(api, "k", 3) == [True] * 3
    assert spend_many(logs, "k", 3) == [True] * 3


def test_counts_of_other_processes_arriving_late_still_count() -> None:
    """Another process's calls, learned only when the shared count answers,
    are added to what this process allows from then on."""
    clock = Clock()
    clock.advance(1_000)
    store = MemoryStore(clock)
    here = CallBudget(10, 60, clock, store=store, name="api")
    there = CallBudget(10, 60, clock, store=store, name="api")
    assert spend_many(there, "k", 8) == [True] * 8
    assert here.spend("k").allowed  # learns of the 8 from its own count's answer
    assert spend_many(here, "k", 3) == [True, False, False]


class _DownStore(MemoryStore):
    async def count_calls(self, *args: object) -> object:
        from privydrop.store.interface import StoreUnavailable

        raise StoreUnavailable("Redis at nowhere: not connected")


def test_an_unreachable_store_leaves_the_budget_per_process() -> None:
    """With Redis down the budget still answers at once, counting this
    process's calls alone; nothing is raised into the request."""
    clock = Clock()
    budget = CallBudget(3, 60, clock, store=_DownStore(clock), name="api")
    assert spend_many(budget, "k", 4) == [True, True, True, False]
