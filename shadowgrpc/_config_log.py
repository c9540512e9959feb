"""The ``[log]`` table: the paired-prediction log (shadowgrpc/pairlog). Off unless ``path`` is set.

    [log]
    path = "/var/lib/shadowgrpc/pairs"  # a folder: pairs/ and outcomes/ Parquet tables under it
    sample_rate = 1.0       # share of requests logged, by the same request-id hash as mirroring
    max_queue_rows = 100000 # rows waiting for the writer; past it rows are shed (counted)
    flush_rows = 20000      # a file is finished every flush_rows rows ...
    flush_s = 5.0           # ... or every flush_s seconds: at most this much is lost on a crash
    max_disk_mb = 10240     # both tables together; past it the oldest files are deleted (counted)
    keep_inputs = false     # also log the request bytes (needed by `shadowgrpc replay`)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _checks as check
from ._checks import ConfigError


@dataclass(frozen=True, slots=True)
class LogSettings:
    path: str = ""  # "" = no log
    sample_rate: float = 1.0
    max_queue_rows: int = 100_000
    flush_rows: int = 20_000
    flush_s: float = 5.0
    max_disk_mb: int = 10_240
    keep_inputs: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.path)


def parse_log(data: Mapping[str, Any]) -> LogSettings:
    t = check.table(data, "log", "log")
    check.only(t, "log.", {"path", "sample_rate", "max_queue_rows", "flush_rows", "flush_s", "max_disk_mb", "keep_inputs"})
    d = LogSettings()
    if not t:
        return d
    path = check.string(t, "path", "log.", required=True)
    keep = t.get("keep_inputs", False)
    if not isinstance(keep, bool):
        raise ConfigError(f"log.keep_inputs: must be true or false, got {keep!r}")
    return LogSettings(
        path=path,
        sample_rate=float(check.number(t, "sample_rate", "log.", d.sample_rate, lo=0.0, hi=1.0)),
        max_queue_rows=int(check.number(t, "max_queue_rows", "log.", d.max_queue_rows, lo=1, hi=100_000_000, integer=True)),
        flush_rows=int(check.number(t, "flush_rows", "log.", d.flush_rows, lo=1, hi=10_000_000, integer=True)),
        flush_s=float(check.number(t, "flush_s", "log.", d.flush_s, lo=0.01, hi=3600.0)),
        max_disk_mb=int(check.number(t, "max_disk_mb", "log.", d.max_disk_mb, lo=1, hi=1 << 30, integer=True)),
        keep_inputs=keep,
    )
