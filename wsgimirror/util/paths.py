"""File arguments given as paths or globs, as ``wsgimirror report`` and ``wsgimirror replay`` take them."""

from __future__ import annotations

import glob
import typing as t


class NoMatch(Exception):
    """A glob that matches no file; the message is the glob."""


def expand(patterns: t.Iterable[str]) -> list[str]:
    """Each path as given, each glob as the sorted files it matches; :class:`NoMatch` for a glob matching none."""
    paths: list[str] = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matched:
            raise NoMatch(pattern)
        paths.extend(matched)
    return paths
