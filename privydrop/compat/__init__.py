"""The only place that touches other libraries' private parts.

One module per library (C{twisted}, C{autobahn}, C{klein}). Each lists the
names it relies on, checks them (on import or on first use), falls back to
public API where one can do the job, and is guarded by a test that fails,
naming the attribute, on a library version where such an internal changed.
docs/architecture.md ("Library internals") lists what each one touches and
its fallback.
"""
