"""The ``[log]`` table: the paired-prediction log (shadowgrpc/pairlog). Off unless ``path`` is set.

    [log]
    path = "/var/lib/shadowgrpc/pairs"  # a folder: pairs/ and outcomes/ Parquet tables under it
    sample_rate = 1.0       # share of requests logged, by the same request-id hash as mirroring
    max_queue_rows = 100000 # rows waiting for the writer; past it rows are shed (counted)
    flush_rows = 20000      # a file is finished every flush_rows rows ...
    flush_s = 5.0           # ... or every flush_s seconds: at most this much is lost on a crash
    max_disk_mb = 10240     # both tables together; past it the oldest files are deleted (counted)
    keep_inputs = false     # also log the request bytes (needed by `shadowgrpc replay`)
    [log.redact]            # tensors by name, in live_outputs/shadow_outputs and (keep_inputs) the request bytes
    drop = ["ssn"]          # removed
    hash = ["user_id"]      # each value -> HMAC-SHA256(key, value bytes), datatype "HMAC-SHA256"
    redact = ["email"]      # the values -> one b"[REDACTED]", datatype "REDACTED"
    hash_key_file = "/etc/shadowgrpc/log.key"  # the HMAC key (or hash_key_env = "VAR"); needed with hash
An input named in any list is removed from the kept request bytes (a hash or marker cannot stand
in a typed tensor): replay then lacks it.
"""

from __future__ import annotations

from collections.abc import Mapping
import os
from dataclasses import dataclass, field
from typing import Any

from . import _checks as check
from ._checks import ConfigError


@dataclass(frozen=True, slots=True)
class Redaction:
    drop: frozenset[str] = frozenset()
    hash: frozenset[str] = frozenset()
    redact: frozenset[str] = frozenset()
    key: bytes = field(default=b"", repr=False)  # the HMAC key of hash

    @property
    def names(self) -> frozenset[str]:
        return self.drop | self.hash | self.redact


@dataclass(frozen=True, slots=True)
class LogSettings:
    path: str = ""  # "" = no log
    sample_rate: float = 1.0
    max_queue_rows: int = 100_000
    flush_rows: int = 20_000
    flush_s: float = 5.0
    max_disk_mb: int = 10_240
    keep_inputs: bool = False
    redact: Redaction | None = None  # [log.redact]; None = every tensor as it was

    @property
    def enabled(self) -> bool:
        return bool(self.path)


def parse_log(data: Mapping[str, Any]) -> LogSettings:
    t = check.table(data, "log", "log")
    check.only(t, "log.", {"path", "sample_rate", "max_queue_rows", "flush_rows", "flush_s", "max_disk_mb", "keep_inputs", "redact"})
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
        redact=_redaction(t),
    )


def _redaction(t: Mapping[str, Any]) -> Redaction | None:
    if "redact" not in t:
        return None
    r = check.table(t, "redact", "log.redact")
    check.only(r, "log.redact.", {"drop", "hash", "redact", "hash_key_file", "hash_key_env"})
    lists = {k: frozenset(check.strings(r, k, "log.redact.")) for k in ("drop", "hash", "redact")}
    seen: dict[str, str] = {}
    for k, names in lists.items():
        for n in sorted(names):
            if n in seen:
                raise ConfigError(f"log.redact.{k}: {n!r} is also in log.redact.{seen[n]} (one action per tensor)")
            seen[n] = k
    key = b""
    if "hash_key_file" in r and "hash_key_env" in r:
        raise ConfigError("log.redact.hash_key_file: set hash_key_file or hash_key_env, not both")
    if "hash_key_file" in r:
        path = check.string(r, "hash_key_file", "log.redact.", required=True)
        try:
            with open(path, "rb") as f:
                key = f.read().strip()
        except OSError as e:
            raise ConfigError(f"log.redact.hash_key_file: cannot read {path}: {e.strerror or e}") from None
    elif "hash_key_env" in r:
        name = check.string(r, "hash_key_env", "log.redact.", required=True)
        key = os.environ.get(name, "").strip().encode()
        if not key:
            raise ConfigError(f"log.redact.hash_key_env: the environment variable {name} is not set or empty")
    if lists["hash"] and len(key) < 16:
        raise ConfigError("log.redact.hash: needs a secret key of at least 16 bytes in log.redact.hash_key_file or hash_key_env "
                          "(an unkeyed hash of a low-entropy value is reversed by trying every value)")  # fmt: skip
    return Redaction(drop=lists["drop"], hash=lists["hash"], redact=lists["redact"], key=key)
