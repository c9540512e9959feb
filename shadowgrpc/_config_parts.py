"""A route's ``outputs`` and ``slices`` tables: their types (re-exported by config.py) and parsers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _checks as check
from ._checks import ConfigError

MISSING = "missing"
OTHER = "other"
MAX_BUCKETS = 64  # per route, all slices together (config refuses more)


@dataclass(frozen=True, slots=True)
class Slice:
    name: str
    input: str
    column: int = 0
    edges: tuple[float, ...] = ()  # numeric slices
    values: tuple[str, ...] = ()  # BYTES slices
    labels: tuple[str, ...] = ()  # bucket names, "missing" excluded

    @property
    def buckets(self) -> tuple[str, ...]:
        """Bucket names in index order; the last one is ``missing``."""
        return (*self.labels, MISSING)

    @staticmethod
    def edge_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
        names = [f"< {edges[0]:g}"]
        names += [f"[{a:g}, {b:g})" for a, b in zip(edges, edges[1:])]
        names.append(f">= {edges[-1]:g}")
        return tuple(names)


OUTPUT_KINDS = ("classifier", "binary", "regression", "embedding", "text")  # text: BYTES outputs (compare.py, text.py)


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """How one output is compared; every field optional (inferred from the first answer)."""

    kind: str = ""  # "" = inferred
    edges: tuple[float, ...] = ()  # drift histogram edges; () = default rule
    bins: int = 32  # with freeze_rows > 0: bins over the first freeze_rows live rows
    freeze_rows: int = 0  # 0: numeric outputs without edges use the fixed default grid (same on every replica)
    max_classes: int = 1024  # a wider float output is not inferred to be a classifier (compared as a vector)
    classes: int = 0  # integer label outputs: a label outside [0, classes) is an invalid row (0: not checked)
    probabilities: bool | None = None  # None: inferred from the first live answer (all values in [0, 1])
    threshold: float = 0.5  # binary
    atol: float = 1e-6  # regression: |live - shadow| <= atol + rtol * |shadow|
    rtol: float = 1e-3


def parse_outputs(r: Mapping[str, Any], where: str) -> tuple[tuple[str, OutputSpec], ...]:
    t = check.table(r, "outputs", where + "outputs")
    d = OutputSpec()
    specs = []
    for name, o in t.items():
        ow = f"{where}outputs.{name}."
        if not isinstance(o, Mapping):
            raise ConfigError(f"{ow[:-1]}: must be a table")
        check.only(o, ow, {"kind", "edges", "bins", "freeze_rows", "threshold", "atol", "rtol", "max_classes", "probabilities", "classes"})
        probabilities = o.get("probabilities")
        if probabilities is not None and not isinstance(probabilities, bool):
            raise ConfigError(f"{ow}probabilities: must be true or false, got {probabilities!r}")
        kind = o.get("kind", "")
        if kind and kind not in OUTPUT_KINDS:
            raise ConfigError(f"{ow}kind: must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")
        specs.append(
            (
                name,
                OutputSpec(
                    kind=kind,
                    edges=check.floats(o, "edges", ow, 2) if "edges" in o else (),
                    bins=int(check.number(o, "bins", ow, d.bins, lo=1, hi=4096, integer=True)),
                    freeze_rows=int(check.number(o, "freeze_rows", ow, d.freeze_rows, lo=0, hi=1_000_000, integer=True)),
                    max_classes=int(check.number(o, "max_classes", ow, d.max_classes, lo=2, hi=1 << 20, integer=True)),
                    classes=int(check.number(o, "classes", ow, 0, lo=0, hi=1 << 30, integer=True)),
                    probabilities=probabilities,
                    threshold=float(check.number(o, "threshold", ow, d.threshold, lo=-1e30, hi=1e30)),
                    atol=float(check.number(o, "atol", ow, d.atol, lo=0, hi=1e30)),
                    rtol=float(check.number(o, "rtol", ow, d.rtol, lo=0, hi=1e30)),
                ),
            )
        )
    return tuple(specs)


def parse_slices(r: Mapping[str, Any], where: str) -> tuple[Slice, ...]:
    raw = r.get("slices", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{where}slices: must be an array of tables ([[routes.slices]])")
    out: list[Slice] = []
    total = 0
    for k, t in enumerate(raw):
        sw = f"{where}slices[{k}]."
        if not isinstance(t, Mapping):
            raise ConfigError(f"{sw[:-1]}: must be a table")
        check.only(t, sw, {"name", "input", "column", "edges", "values", "labels"})
        name = check.string(t, "name", sw, required=True)
        if any(s.name == name for s in out):
            raise ConfigError(f"{sw}name: duplicate slice {name!r}")
        if ("edges" in t) == ("values" in t):
            raise ConfigError(f"{sw[:-1]}: set edges (numeric input) or values (BYTES input), exactly one")
        edges = check.floats(t, "edges", sw, 1) if "edges" in t else ()
        values = check.strings(t, "values", sw) if "values" in t else ()
        if "values" in t and not values:
            raise ConfigError(f"{sw}values: needs at least one value")
        default_labels = Slice.edge_labels(edges) if edges else (*values, OTHER)
        labels = check.strings(t, "labels", sw) if "labels" in t else default_labels
        if len(labels) != len(default_labels):
            raise ConfigError(f"{sw}labels: needs {len(default_labels)} names (one per bucket), got {len(labels)}")
        if "missing" in labels:
            raise ConfigError(f"{sw}labels: 'missing' is reserved for rows the slice cannot read")
        total += len(labels) + 1
        if total > MAX_BUCKETS:
            raise ConfigError(f"{sw[:-1]}: more than {MAX_BUCKETS} slice buckets in this route (memory bound)")
        out.append(
            Slice(
                name=name,
                input=check.string(t, "input", sw, required=True),
                column=int(check.number(t, "column", sw, 0, lo=0, hi=1 << 30, integer=True)),
                edges=edges,
                values=values,
                labels=labels,
            )
        )
    return tuple(out)
