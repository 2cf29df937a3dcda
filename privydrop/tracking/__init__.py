"""Referrer statistics over the store; no I/O of its own."""

from privydrop.tracking.referrers import (
    InvalidTrack,
    ReferrerTracker,
    utc_day,
    validate_ref,
)

__all__ = ["InvalidTrack", "ReferrerTracker", "utc_day", "validate_ref"]
