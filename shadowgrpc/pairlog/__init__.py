"""The paired-prediction log: every routed request's live and shadow answers as Parquet tables.

- ``schema``: the tables (Arrow schemas), the row records the front hands the writer, the layout;
- ``writer.PairLog``: the bounded queue and the background writer thread;
- ``batch``: rows to Arrow tables; ``decode``: the answers' output tensors to Arrow (off the loop);
- ``files``: partition paths, temp-then-rename writes, Parquet options, the disk budget.

Importing the package imports nothing heavy; ``PairLog`` and ``LogStats`` load the writer (and
pyarrow) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ("LogStats", "PairLog")

if TYPE_CHECKING:
    from .writer import LogStats, PairLog


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import writer

        return getattr(writer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
