"""The embedded Triton's errors, and the tritonserver log they quote (its tail and error lines)."""

from __future__ import annotations

import os
import pathlib
import re
import time

LOG_TAIL_LINES = 60
# Errors tritonserver logs on hosts without a GPU / NVIDIA driver; they change nothing.
_HARMLESS_ERRORS = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML")


class TritonStartError(RuntimeError):
    """tritonserver did not become ready (exited, timed out, or a model failed to load).

    The message ends with the tail of the server log; ``log_path`` and ``log_tail`` hold them too.
    """

    def __init__(
        self, message: str, *, log_path: pathlib.Path | None = None, log_tail: str = "", log_errors: str = ""
    ) -> None:
        text = message
        if log_path is not None:
            text += f"\n(log: {log_path})"
        if log_errors:
            text += f"\n--- errors in the tritonserver log ---\n{log_errors.rstrip()}"
        if log_tail:
            text += f"\n--- last lines of the tritonserver log ---\n{log_tail.rstrip()}\n---"
        super().__init__(text)
        self.log_path = log_path
        self.log_tail = log_tail
        self.log_errors = log_errors


class TritonNotInstalledError(TritonStartError):
    """nvidia-pytriton (the ``local`` extra), which ships tritonserver, is not installed."""


def start_error(message: str, log_path: pathlib.Path | None) -> TritonStartError:
    """A TritonStartError that quotes the log at ``log_path``: its error lines and its tail."""
    if log_path is None:
        return TritonStartError(message)
    time.sleep(0.1)  # let the last lines reach the log
    return TritonStartError(message, log_path=log_path, log_tail=log_tail(log_path), log_errors=log_errors(log_path))


def _read_end(path: pathlib.Path, max_bytes: int) -> str:
    """The last ``max_bytes`` of ``path``, decoded ("" when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def log_tail(path: pathlib.Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the log (read from its last 64 KiB)."""
    return "\n".join(_read_end(path, 64 * 1024).splitlines()[-lines:])


def log_errors(path: pathlib.Path, max_lines: int = 30) -> str:
    """Error lines of a tritonserver log (its last 4 MiB): ``E...`` records, ``error:`` lines, and the
    rows of the model status table that are not READY (with the first line of their reason)."""
    found: list[str] = []
    for line in _read_end(path, 4 * 1024 * 1024).splitlines():
        stripped = line.strip()
        if re.match(r"^E\d{4} ", stripped) or stripped.lower().startswith("error:"):
            if not any(harmless in stripped for harmless in _HARMLESS_ERRORS):
                found.append(stripped)
        elif stripped.startswith("|") and "UNAVAILABLE" in stripped:
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            found.append("model " + " ".join(c for c in cells if c))
    return "\n".join(found[-max_lines:])
