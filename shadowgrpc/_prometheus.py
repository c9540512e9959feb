"""Prometheus text exposition (format 0.0.4, and the sample lines of OpenMetrics): parse and fetch.

Used by cost.py to read Triton's metrics endpoint. The parser is tolerant: comments (``# HELP``,
``# TYPE``, ``# EOF``) and blank lines are skipped, a line it cannot read is skipped and counted
(never an exception), so one odd line costs one series, not the report. Per line::

    name{label="value",...} value [timestamp | # exemplar]

Label values may hold ``\\\\``, ``\\"`` and ``\\n`` escapes (others are kept as written, like
Prometheus does), commas, braces and ``#``; a trailing comma and blanks around tokens are
accepted. Values are floats, ``NaN``, ``+Inf`` and ``-Inf`` included. When the same series
appears twice the last value wins.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request

from . import __version__

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
Samples = dict[str, dict[Labels, float]]  # metric name -> labels -> value

_NAME = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*')
_ESCAPE = re.compile(r'\\([\\"n])')

MAX_BYTES = 32 << 20  # a Triton with thousands of model versions stays far below


def _unescape(v: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), v) if "\\" in v else v


def _line(line: str) -> tuple[str, Labels, float] | None:
    m = _NAME.match(line)
    if m is None:
        return None
    name, pos = m.group(1), m.end()
    labels: list[tuple[str, str]] = []
    braced = pos < len(line) and line[pos] == "{"
    if braced:
        pos += 1
        while True:
            while pos < len(line) and line[pos] in " \t":
                pos += 1
            if pos < len(line) and line[pos] == "}":
                pos += 1
                break
            lm = _LABEL.match(line, pos)
            if lm is None:
                return None
            labels.append((lm.group(1), _unescape(lm.group(2))))
            pos = lm.end()
            if pos < len(line) and line[pos] == ",":
                pos += 1
            elif pos >= len(line) or line[pos] != "}":
                return None
    rest = line[pos:].split()
    if not rest or (not braced and line[pos] not in " \t"):  # "name{...}1" is fine, "name-1" is not
        return None
    try:
        value = float(rest[0])
        if len(rest) > 1 and not rest[1].startswith("#"):
            float(rest[1])  # a timestamp
            if len(rest) > 2 and not rest[2].startswith("#"):
                return None
    except ValueError:
        return None
    return name, tuple(sorted(labels)), value


def parse(text: str) -> tuple[Samples, int]:
    """(samples, number of lines skipped as unreadable)."""
    out: Samples = {}
    bad = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        s = _line(line)
        if s is None:
            bad += 1
            continue
        out.setdefault(s[0], {})[s[1]] = s[2]
    return out, bad


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # an internal endpoint: never via a proxy


def fetch(url: str, timeout: float) -> str:
    """GET ``url``'s body as text within ``timeout`` seconds overall (blocking: run it in a
    thread). Raises OSError (URLError, HTTPError, TimeoutError) or ValueError (too large)."""
    deadline = time.monotonic() + timeout
    req = urllib.request.Request(url, headers={"Accept": "text/plain; version=0.0.4", "User-Agent": f"shadowgrpc/{__version__}"})
    try:
        resp = _OPENER.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()  # its body is not read: release the connection now
        raise
    with resp:
        chunks: list[bytes] = []
        n = 0
        while chunk := resp.read(1 << 16):
            n += len(chunk)
            if n > MAX_BYTES:
                raise ValueError(f"answer larger than {MAX_BYTES >> 20} MiB")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete answer within {timeout:g} s")
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def describe(e: BaseException, timeout: float) -> str:
    """A short reason for a failed fetch."""
    if isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
