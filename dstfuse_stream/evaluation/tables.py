"""Output formats shared by the evaluations: numbers, Markdown tables, CSV, JSON, best-counts."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from dstfuse_stream.metrics import METRICS

__all__ = [
    "BEST_OF",
    "BEST_DIGITS",
    "fmt",
    "mean_finite",
    "geometric_mean",
    "markdown_table",
    "write_csv",
    "write_json",
    "best_counts",
    "fusion_table",
    "best_count_table",
]

#: the eight metrics of issue 14's "best on >= 5 of" criterion, in its order
BEST_OF: tuple[str, ...] = ("VIF", "Qabf", "MI", "SF", "AG", "CC", "EN", "SSIM")
#: best values are compared after rounding to this many decimals (the tables' precision): ties all win
BEST_DIGITS = 3


def fmt(value: object, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` decimals, ``nan``/``inf`` spelled out, others as ``str``."""
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}f}"
    return str(value)


def mean_finite(values: Iterable[float]) -> float:
    """Mean of the non-nan values (``inf`` kept), ``nan`` when there are none."""
    vals = [float(v) for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def geometric_mean(values: Iterable[float]) -> float:
    """Geometric mean of the finite positive values (the average of ratios), ``nan`` when none."""
    vals = [float(v) for v in values if math.isfinite(v) and v > 0]
    return float(np.exp(np.mean(np.log(vals)))) if vals else float("nan")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table (cells already formatted or passed through :func:`fmt`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict], fields: Sequence[str]) -> None:
    """CSV with a header; floats written with ``repr`` (round-trips exactly), missing fields empty."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (repr(float(v)) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()})


def _jsonable(x: object) -> object:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: Path, obj: object) -> None:
    """Strict JSON (``nan``/``inf`` become ``null``), indented, keys in insertion order."""
    path.write_text(json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def _best_value(values: Sequence[float], higher_is_better: bool) -> float | None:
    vals = [round(v, BEST_DIGITS) for v in values if not math.isnan(v)]
    if not vals:
        return None
    return max(vals) if higher_is_better else min(vals)


def best_counts(
    table: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = BEST_OF, *, eligible: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """For each method, the metrics (of ``metrics``) on which it is best among ``eligible``.

    ``table`` is ``{method: {metric: mean}}``. Values are compared after rounding to
    :data:`BEST_DIGITS` decimals, so every method tied at the best rounded value wins that metric.
    Methods not in ``eligible`` (default: all) win nothing. Direction from :data:`METRICS`.
    """
    eligible = list(table) if eligible is None else [m for m in eligible if m in table]
    won: dict[str, list[str]] = {m: [] for m in table}
    for metric in metrics:
        best = _best_value([table[m][metric] for m in eligible], METRICS[metric].higher_is_better)
        if best is None:
            continue
        for m in eligible:
            if not math.isnan(table[m][metric]) and round(table[m][metric], BEST_DIGITS) == best:
                won[m].append(metric)
    return won


def _metric_header(metric: str) -> str:
    return f"{metric} {'↑' if METRICS[metric].higher_is_better else '↓'}"


def _bold_if(text: str, flag: bool) -> str:
    return f"**{text}**" if flag else text


def fusion_table(table: Mapping[str, Mapping[str, float]], metrics: Sequence[str], *, eligible: Sequence[str]) -> str:
    """``method | n | metric...`` with the best value per metric (among ``eligible``) in bold."""
    won = best_counts(table, metrics, eligible=eligible)
    header = ["method", "n"] + [_metric_header(m) for m in metrics]
    rows = []
    for name, row in table.items():
        cells = [_bold_if(fmt(row[m], 4 if m == "MSE" else 3), m in won[name] and len(table) > 1) for m in metrics]
        rows.append([name, row["n"], *cells])
    return markdown_table(header, rows)


def best_count_table(
    table: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = BEST_OF, *, eligible: Sequence[str]
) -> str:
    """The ``metrics`` table plus ``best of N`` and the artefact columns (flat HF ratio, halo)."""
    won = best_counts(table, metrics, eligible=eligible)
    header = ["method", "n"] + [_metric_header(m) for m in metrics]
    header += [f"best of {len(metrics)}", "flat HF ratio ↓", "halo ↓"]
    rows = []
    for name, row in table.items():
        cells = [_bold_if(fmt(row[m]), m in won[name]) for m in metrics]
        count = str(len(won[name])) if name in eligible else "n/a (partial)"
        rows.append([name, row["n"], *cells, count, fmt(row["flat_hf_ratio"], 2), fmt(row["halo"], 2)])
    return markdown_table(header, rows)
