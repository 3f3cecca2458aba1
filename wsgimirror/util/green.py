"""What the server owner did with gevent: wsgimirror never monkey-patches, it only looks."""

from __future__ import annotations

import importlib
import typing as t


def original(module: str, name: str) -> t.Any:
    """``module.name`` as it was before any monkey-patching (the same object when nothing was patched)."""
    try:
        from gevent.monkey import get_original
    except ImportError:  # pragma: no cover - gevent is a dependency
        return getattr(importlib.import_module(module), name)
    return get_original(module, name)


def sockets_patched() -> bool:
    """True when the server owner called ``gevent.monkey.patch_all()`` (or patched sockets)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return bool(monkey.is_module_patched("socket"))


# A real OS-thread lock, even after gevent monkey-patching. The critical sections here are a
# few increments with no I/O, so no greenlet can switch while one is held; gevent's patched
# lock costs ten times as much.
new_lock: t.Callable[[], t.Any] = original("_thread", "allocate_lock")
