"""The checks every part of the configuration shares: types, ranges, known keys and "did you mean"."""

from __future__ import annotations

import difflib
import typing as t

from ..errors import ConfigError
from ..util.syntax import shown
from .appsettings import Section


def _flag(raw: t.Any, path: str) -> bool:
    """A Metadata switch: "true" or "false" in any case (Metadata values are strings), or a JSON boolean."""
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise ConfigError(path, f'must be "true" or "false", got {_json_type(raw)} {shown(raw)}')


def _boolean(value: t.Any, path: str) -> bool:
    """A JSON boolean, or the strings "true" and "false" (.NET's configuration stores values as strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(path, f"must be true or false, got {_json_type(value)} {shown(value)}")


def _percent(value: t.Any, path: str) -> float:
    """A share from 0 to 100; strings are accepted too, as the seed proxy's Metadata values are strings."""
    if isinstance(value, str):
        try:
            value = float(value.strip().rstrip("%"))
        except ValueError:
            raise ConfigError(path, f"must be a number from 0 to 100, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"must be a number from 0 to 100, got {_json_type(value)} {shown(value)}")
    if not 0 <= value <= 100:
        raise ConfigError(path, f"must be a number from 0 to 100, got {value}")
    return float(value)


def _unknown_keys(body: t.Mapping[str, t.Any], known: t.Sequence[str]) -> list[str]:
    """The keys of a section that are none of ``known``, in any case, sorted."""
    lowered = {k.lower() for k in known}
    return sorted(key for key in body if key.lower() not in lowered)


def _check_keys(body: t.Mapping[str, t.Any], path: str, read: t.Sequence[str], own: t.Sequence[str] = ()) -> None:
    """Refuse the first key that is neither read by wsgimirror nor one of the proxy's ``own`` keys."""
    for key in _unknown_keys(body, (*read, *own)):
        raise ConfigError(f"{path}.{key}", f"unknown key; {_did_you_mean(key, read)}")


def _did_you_mean(key: str, known: t.Sequence[str]) -> str:
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"did you mean {by_lower[close[0]]}?"
    return f"the keys read here are {', '.join(known)}"


# -- small typed readers: each names the path and the JSON type it got ------------------------


def _json_type(value: t.Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, t.Mapping):
        return "object"
    return type(value).__name__


def _object(value: t.Any, path: str, what: str = "") -> Section:
    """A JSON object with case-insensitive keys, as .NET's configuration binder reads one."""
    if not isinstance(value, t.Mapping):
        raise ConfigError(path or what, f"must be an object, got {_json_type(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(path or what, f"keys must be strings, got {_json_type(key)} {shown(key)}")
    return value if isinstance(value, Section) else Section(value, path or what)


def _optional_str(value: t.Any, path: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(path, f"must be a string, got {_json_type(value)}")


def _str_list(match: t.Mapping[str, t.Any], key: str, route_path: str) -> list[str]:
    path = f"{route_path}.Match.{key}"
    value = match.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(path, f"must be an array of strings, got {_json_type(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"{path}[{i}]", f"must be a string, got {_json_type(item)}")
    return value


def _integer(value: t.Any, path: str, minimum: int | None = None, maximum: int = 1 << 62) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"must be an integer, got {_json_type(value)} {shown(value)}")
    if minimum is not None and value < minimum:
        raise ConfigError(path, f"must be at least {minimum}, got {value}")
    if value > maximum:
        raise ConfigError(path, f"must be at most {maximum}, got {shown(value)}")
    return value


def _seconds(value: t.Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"must be a number of seconds, got {_json_type(value)} {shown(value)}")
    if not 0 < value <= 3600:
        raise ConfigError(path, f"must be more than 0 and at most 3600 seconds, got {value}")
    return float(value)
