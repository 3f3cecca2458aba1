"""The configuration: the seed proxy's JSON format, loaded once into frozen objects.

:mod:`.model` holds the objects, :mod:`.load` reads and checks ``ReverseProxy``, :mod:`.sections` the
``Mirror``, ``Record``, ``Compare`` and ``Agent`` sections, :mod:`.rules` the checks they share;
:mod:`.appsettings` reads JSON as .NET does and :mod:`.transforms` compiles a route's ``Transforms``.
"""

from __future__ import annotations

from ..errors import ConfigError
from .load import config_from_dict, load_config
from .model import (
    AgentSettings,
    Cluster,
    CompareSettings,
    Config,
    ConfigSource,
    Destination,
    HttpClientSettings,
    MirrorSettings,
    RecordSettings,
    Route,
)

__all__ = [
    "AgentSettings",
    "Cluster",
    "CompareSettings",
    "Config",
    "ConfigError",
    "ConfigSource",
    "Destination",
    "HttpClientSettings",
    "MirrorSettings",
    "RecordSettings",
    "Route",
    "config_from_dict",
    "load_config",
]
