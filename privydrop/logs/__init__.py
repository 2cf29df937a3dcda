"""Logging helpers shared by every layer.

  - L{privydrop.logs.levels}: the package's L{Logger}, which drops events
    below C{LOG_LEVEL} at the source and never lets an Engine.IO sid
    through, and the flags hot paths check before building an event.
  - L{privydrop.logs.throttle}: lines a client can cause, at most one (or a
    burst, for connection events) per cause per interval.
  - L{privydrop.logs.client_text}: client text cut to a length, URIs with
    their sid redacted, sessions named by a label.

Everything logs through C{twisted.logger}; these decide whether, and what.
"""
