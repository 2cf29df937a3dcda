"""The join rate limit: a sliding window of attempts per client IP.

Pure functions. L{join_window} describes the check the store makes as part
of L{IStore.join_room} (so counting and joining are one atomic step), and
L{decide} interprets what the store counted, with the Node backend's
arithmetic::

    allowed    = count <= limit
    remaining  = max(limit - count, 0)
    resetAfter = max(0, ceil((oldest + window * 1000 - now) / 1000))

The client sees the result in the Node backend's words (L{rate_limit_message}).
"""

from __future__ import annotations

import attrs

from privydrop.store.interface import RateResult, RateWindow


@attrs.frozen
class RateDecision:
    """Whether an attempt is allowed, and what to tell the client.

    @ivar allowed: the attempt fits in the window.
    @ivar remaining: attempts left in the window.
    @ivar reset_after_s: whole seconds until the oldest attempt leaves the window.
    """

    allowed: bool
    remaining: int
    reset_after_s: int


def join_window(
    client_ip: str, now_ms: int, nonce: str, window_s: int, limit: int
) -> RateWindow:
    """The sliding-window check for one join attempt.

    @param client_ip: the client's address; it becomes the key suffix
        (C{ratelimit:join:<ip>}).
    @param now_ms: the attempt's time.
    @param nonce: makes the member unique when two attempts share a
        millisecond (C{<now_ms>-<nonce>}; the Node backend uses a random
        fraction).
    @param window_s: the window's length (and the key's TTL).
    @param limit: attempts allowed inside the window.
    """
    return RateWindow(
        key_suffix=client_ip,
        member=f"{now_ms}-{nonce}",
        window_ms=window_s * 1000,
        limit=limit,
        ttl_s=window_s,
    )


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def decide(result: RateResult, window: RateWindow, now_ms: int) -> RateDecision:
    """Interpret the store's count the way the Node backend does.

    @param result: what the store counted, this attempt included.
    @param window: the window the attempt was recorded in.
    @param now_ms: the attempt's time (the same one given to the store).
    """
    reset_after = _ceil_div(result.oldest_ms + window.window_ms - now_ms, 1000)
    return RateDecision(
        allowed=result.count <= window.limit,
        remaining=max(window.limit - result.count, 0),
        reset_after_s=max(0, reset_after),
    )


def rate_limit_message(decision: RateDecision) -> str:
    """The Node backend's C{joinResponse} message for a refused attempt."""
    return (
        f"Rate limit exceeded. Try again in {decision.reset_after_s}s."
        f" Attempts left: {decision.remaining}."
    )
