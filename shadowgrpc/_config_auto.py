"""A route's auto-shadow policy: ``routes[].shadow``, the shadow chosen from Triton's model
repository instead of named by hand (shadowgrpc/repository.py polls and applies it).

    [[routes]]
    model = "fraud"
    live = { version = "1" }        # pinned: the newest version that is not live is the candidate
    shadow = "newest"               # the newest READY version that is not live

    # or, as a table (every key optional but one of newest / versions):
    [routes.shadow]
    newest = 2                      # the 2 newest READY versions that are not live
    # versions = ["3", "4"]         # or exactly these versions, when READY
    model = "fraud"                 # default: live's model
    address = "127.0.0.1:8001"      # the Triton to poll and send to; default: live's address
    load = true                     # explicit model-control mode: RepositoryModelLoad when the
    repository = "/models"          #   version directories under repository/<model>/ change
    sample_rate = 1.0               # and the per-target settings of [[routes.shadows]]
    max_in_flight = 64
    deadline_ms = 250

The poll interval is ``server.poll_s`` (default 5 s). Triton serves only the versions its
``version_policy`` keeps loaded (default: the newest one), so the live model's config needs
``version_policy: { all { } }`` (or ``latest { num_versions: N }``) for live and the candidate
to be READY side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _checks as check
from ._checks import ConfigError


@dataclass(frozen=True, slots=True)
class AutoShadow:
    newest: int = 1  # the N newest READY versions that are not live (0 when ``versions`` is set)
    versions: tuple[str, ...] = ()  # exactly these versions, when READY
    model: str = ""  # "" = live's model
    address: str = ""  # "" = live's address
    load: bool = False  # may call RepositoryModelLoad (Triton in explicit model-control mode)
    repository: str = ""  # the model repository folder the front lists to see new versions (load)
    sample_rate: float = 1.0
    max_in_flight: int = 64
    deadline_s: float | None = None  # None = the live deadline

    @property
    def policy(self) -> str:
        """The policy in words: "newest", "newest 2", "versions 3,4"."""
        if self.versions:
            return "versions " + ",".join(self.versions)
        return "newest" if self.newest == 1 else f"newest {self.newest}"


_KEYS = {"newest", "versions", "model", "address", "load", "repository", "sample_rate", "max_in_flight", "deadline_ms"}


def parse_auto(r: Mapping[str, Any], where: str, live_model: str, live_address: str, live_version: str) -> AutoShadow | None:
    """``routes[i].shadow`` -> AutoShadow (None when the route has none)."""
    if "shadow" not in r:
        return None
    raw = r["shadow"]
    w = where + "shadow"
    if raw == "newest":
        raw = {"newest": 1}
    elif not isinstance(raw, Mapping):
        raise ConfigError(f'{w}: must be "newest" or a table ({{ newest = N }} or {{ versions = ["3"] }}), got {raw!r}')
    sw = w + "."
    check.only(raw, sw, _KEYS)
    if ("newest" in raw) == ("versions" in raw):
        raise ConfigError(f"{w}: set newest = N or versions = [...], exactly one")
    versions = check.strings(raw, "versions", sw) if "versions" in raw else ()
    if "versions" in raw and (not versions or not all(v.isdigit() and v != "0" for v in versions)):
        raise ConfigError(f"{sw}versions: needs one or more version numbers as strings, e.g. [\"3\"], got {raw['versions']!r}")
    newest = 0 if versions else int(check.number(raw, "newest", sw, 1, lo=1, hi=16, integer=True))
    load = raw.get("load", False)
    if not isinstance(load, bool):
        raise ConfigError(f"{sw}load: must be true or false, got {load!r}")
    repository = check.string(raw, "repository", sw)
    if load and not repository:
        raise ConfigError(f"{sw}load: needs {sw}repository, the model repository folder the front lists to see new version directories")
    model = check.string(raw, "model", sw, default=live_model)
    address = check.address(raw, "address", sw, live_address)
    if (model, address) == (live_model, live_address) and not live_version:
        raise ConfigError(f"{w}: needs {where}live.version pinned: otherwise Triton's newest version is live itself")
    if live_version in versions and (model, address) == (live_model, live_address):
        raise ConfigError(f"{sw}versions: {live_version!r} is the live version")
    return AutoShadow(
        newest=newest, versions=versions, model=model, address=address, load=load, repository=repository,
        sample_rate=float(check.number(raw, "sample_rate", sw, 1.0, lo=0.0, hi=1.0)),
        max_in_flight=int(check.number(raw, "max_in_flight", sw, 64, lo=1, hi=100_000, integer=True)),
        deadline_s=check.deadline(raw, sw),
    )  # fmt: skip
