"""Rate limits: the join sliding window (over the store) and the API call budgets.

No I/O of its own: L{privydrop.ratelimit.join} computes what the store checks
and interprets its answer; L{privydrop.ratelimit.budget} decides in memory
and, given a store, counts there too so processes share one budget.
"""

from privydrop.ratelimit.budget import BudgetDecision, CallBudget
from privydrop.ratelimit.join import (
    RateDecision,
    decide,
    join_window,
    rate_limit_message,
)

__all__ = [
    "BudgetDecision",
    "CallBudget",
    "RateDecision",
    "decide",
    "join_window",
    "rate_limit_message",
]
