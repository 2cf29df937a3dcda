"""The only place that touches other libraries' private parts.

One module per library. Each checks at import time that the internals it
relies on are there, falls back to public API where one exists, and is
guarded by a test that fails, naming the attribute, on a library version
where such an internal changed.
"""
