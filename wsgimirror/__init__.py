"""wsgimirror: mirror ("shadow") WSGI traffic to other HTTP services without touching the real response."""

from __future__ import annotations

import logging

from .config import Config, load_config
from .errors import ConfigError
from .middleware import MirrorMiddleware

__all__ = ["Config", "ConfigError", "MirrorMiddleware", "load_config"]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
