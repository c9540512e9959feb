"""The paired-prediction log: every routed request's live and shadow answers as Parquet tables.

- ``schema``: the tables (Arrow schemas), the row records the front hands the writer, the layout;
- ``writer.PairLog``: the bounded queue and the background writer thread;
- ``batch``: rows to Arrow tables; ``decode``: the answers' output tensors to Arrow (off the loop);
- ``files``: partition paths, temp-then-rename writes, Parquet options, the disk budget.

Import the modules themselves (``from shadowgrpc.pairlog.writer import PairLog``); the package
re-exports nothing, so importing it loads nothing heavy.
"""

