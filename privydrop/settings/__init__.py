"""Settings: one immutable object, read once at start-up.

  - L{privydrop.settings.sections}: the frozen shapes and their defaults
    (L{Settings} and one section per component); re-exported here.
  - L{privydrop.settings.sources}: defaults < C{.env} file < environment <
    twistd options, validated into a L{Settings}
    (L{privydrop.settings.sources.settings_from_options}), and the table of
    every variable and option that feeds C{--help} and the README.

Nothing else in the package reads the environment; each component receives
the slice it needs (C{settings.engine}, C{settings.redis} ...).
"""

from privydrop.settings.sections import (
    DEV_EXTRA_ORIGINS,
    DEV_ORIGIN_PATTERNS,
    ApiSettings,
    ClusterSettings,
    ConfigError,
    EngineSettings,
    Environment,
    HttpSettings,
    MetricsSettings,
    OriginSettings,
    RedisSettings,
    RoomSettings,
    SentinelSettings,
    Settings,
    SocketIOSettings,
    TrackingSettings,
    TurnSettings,
)

__all__ = [
    "DEV_EXTRA_ORIGINS",
    "DEV_ORIGIN_PATTERNS",
    "ApiSettings",
    "ClusterSettings",
    "ConfigError",
    "EngineSettings",
    "Environment",
    "HttpSettings",
    "MetricsSettings",
    "OriginSettings",
    "RedisSettings",
    "RoomSettings",
    "SentinelSettings",
    "Settings",
    "SocketIOSettings",
    "TrackingSettings",
    "TurnSettings",
]
