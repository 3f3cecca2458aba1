"""wsgimirror: mirror ("shadow") WSGI traffic to other HTTP services without touching the real response.

The names are imported on first use, so that ``wsgimirror serve`` can monkey-patch with
gevent before urllib3 and ssl are imported.
"""

from __future__ import annotations

import logging
import typing as t

if t.TYPE_CHECKING:
    from .commands.serve import RawTargetHandler
    from .config.load import load_config
    from .config.model import Config
    from .errors import ConfigError
    from .middleware import MirrorMiddleware

__all__ = ["Config", "ConfigError", "MirrorMiddleware", "RawTargetHandler", "load_config"]
__version__ = "0.1.0"

_EXPORTS = {
    "MirrorMiddleware": "middleware",
    "load_config": "config",
    "Config": "config",
    "ConfigError": "errors",
    "RawTargetHandler": "commands.serve",  # gevent's handler that keeps the request target as the client sent it
}

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> t.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wsgimirror' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
