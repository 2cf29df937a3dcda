"""Logging helpers shared by every layer.

  - L{privydrop.logs.levels}: which levels some observer may record, so hot
    paths can skip building events nobody keeps.
  - L{privydrop.logs.throttle}: warnings about client input, at most one per
    cause per interval.

Everything logs through C{twisted.logger}; these only decide whether to.
"""
