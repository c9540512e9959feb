"""Validators for config values: each reads one key of a TOML table and raises ``ConfigError``
whose message starts with the full key (``routes[0].shadows[1].sample_rate: must be in [0, 1]``).
Import nothing from the package: config.py (the ground floor) builds on these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A config value is missing or wrong; the message starts with the key."""


def floats(t: Mapping[str, Any], key: str, where: str, min_len: int) -> tuple[float, ...]:
    v = t.get(key, [])
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v):
        raise ConfigError(f"{where}{key}: must be an array of numbers, got {v!r}")
    e = tuple(float(x) for x in v)
    if len(e) < min_len:
        raise ConfigError(f"{where}{key}: needs at least {min_len} values, got {len(e)}")
    if any(x != x or x in (float("inf"), float("-inf")) for x in e) or any(b <= a for a, b in zip(e, e[1:])):
        raise ConfigError(f"{where}{key}: must be finite and strictly increasing, got {v!r}")
    return e


def strings(t: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    v = t.get(key, [])
    if not isinstance(v, list) or any(not isinstance(x, str) for x in v):
        raise ConfigError(f"{where}{key}: must be an array of strings, got {v!r}")
    if len(set(v)) != len(v):
        raise ConfigError(f"{where}{key}: duplicate entries in {v!r}")
    return tuple(v)


def only(t: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    for k in t:
        if k not in allowed:
            raise ConfigError(f"{where}{k}: unknown key (expected one of: {', '.join(sorted(allowed))})")


def table(t: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    v = t.get(key, {})
    if not isinstance(v, Mapping):
        raise ConfigError(f"{where}: must be a table")
    return v


def string(t: Mapping[str, Any], key: str, where: str, default: str = "", required: bool = False) -> str:
    if key not in t:
        if required:
            raise ConfigError(f"{where}{key}: required")
        return default
    v = t[key]
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{where}{key}: must be a non-empty string, got {v!r}")
    return v


def version(t: Mapping[str, Any], where: str) -> str:
    v = t.get("version", "")
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or (v and not v.isdigit()):
        raise ConfigError(f"{where}version: must be a model version number such as \"2\", got {v!r}")
    return v


def number(t: Mapping[str, Any], key: str, where: str, default: float, *, lo: float, hi: float, integer: bool = False) -> float:
    v = t.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}{key}: must be {kind}, got {v!r}")
    if not lo <= v <= hi:
        raise ConfigError(f"{where}{key}: must be in [{lo:g}, {hi:g}], got {v!r}")
    return v


def deadline(t: Mapping[str, Any], where: str) -> float | None:
    if "deadline_ms" not in t:
        return None
    return float(number(t, "deadline_ms", where, 0, lo=1, hi=3_600_000)) / 1000.0


def url(t: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    v = t.get(key, default)
    if v == "":
        return v  # none (also to opt a shadow out of live's)
    try:
        u = urlsplit(v) if isinstance(v, str) and not any(c.isspace() for c in v) else None
        ok = u is not None and u.scheme in ("http", "https") and bool(u.hostname) and u.port != 0
    except ValueError:  # a port out of range
        ok = False
    if not ok:
        raise ConfigError(f"{where}{key}: must be an http(s) URL such as \"http://triton:8002/metrics\", got {v!r}")
    return v


def address(t: Mapping[str, Any], key: str, where: str, default: str, allow_wildcard: bool = False) -> str:
    v = t.get(key, default)
    if not isinstance(v, str):
        raise ConfigError(f"{where}{key}: must be a \"host:port\" string, got {v!r}")
    host, sep, port = v.rpartition(":")
    lo = 0 if allow_wildcard else 1  # port 0 on a listen address: pick a free port
    if not sep or not host or not port.isdigit() or not lo <= int(port) < 65536:
        raise ConfigError(f"{where}{key}: must be \"host:port\" with a port in {lo}..65535, got {v!r}")
    if not allow_wildcard and host in ("0.0.0.0", "[::]"):
        raise ConfigError(f"{where}{key}: {host} is a listen address, not a Triton to connect to")
    return v
