"""Targets, aggregation over runs, the printed table and the JSON results file."""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Runs = dict[str, list[dict[str, float]]]
"""Scenario name -> one figures dict per run."""


@dataclass(frozen=True)
class Target:
    """``metric`` of ``scenario`` must be ``op`` ``limit`` (``<``, ``>=`` or ``==``)."""

    scenario: str
    metric: str
    op: str
    limit: float
    unit: str = ""

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the target (NaN never does)."""
        if math.isnan(value):
            return False
        if self.op == "<":
            return value < self.limit
        if self.op == ">=":
            return value >= self.limit
        return value == self.limit

    def ratio(self, value: float) -> float | None:
        """``value / limit`` (below 1 is good for ``<``, above 1 for ``>=``); None for ``==``."""
        if self.op == "==" or self.limit == 0:
            return None
        return value / self.limit


TARGETS: tuple[Target, ...] = (
    Target("S1", "cpu_pct", "<", 1.0, "% core"),
    Target("S1", "rss_mb", "<", 45.0, "MiB"),
    Target("S1", "latency_p50_ms", "<", 20.0, "ms"),
    Target("S1", "latency_p99_ms", "<", 100.0, "ms"),
    Target("S1", "lost", "==", 0.0),
    Target("S2", "cpu_pct", "<", 6.0, "% core"),
    Target("S2", "lost", "==", 0.0),
    Target("S3", "values_per_s", ">=", 200_000.0, "values/s"),
    Target("S3", "lost", "==", 0.0),
    Target("S3", "cpu_pct", "<", 100.0, "% core"),
    Target("S3", "latency_p99_ms", "<", 250.0, "ms"),
    Target("S4", "drain_values_per_s", ">=", 500_000.0, "values/s"),
    Target("S4", "lost", "==", 0.0),
    Target("S5", "startup_s", "<", 1.0, "s"),
    Target("S6", "status_ms", "<", 150.0, "ms"),
    Target("S6", "status_offline_ms", "<", 150.0, "ms"),
    Target("S7", "poll_vs_wire", "<", 1.2, "x"),
    Target("S7", "worst_poll_vs_cycle", "<", 1.2, "x"),
    Target("S7", "overruns", "==", 0.0),
    Target("S7d", "healthy_period_vs_target", "<", 1.1, "x"),
    Target("S8", "cpu_vs_single", "<", 2.0, "x S1"),
    Target("S12", "cpu_vs_plain", "<", 1.3, "x S1"),
    Target("S12", "lost", "==", 0.0),
    Target("S13", "cpu_vs_plain", "<", 1.3, "x S2"),
    Target("S8", "json_latency_p99_ms", "<", 100.0, "ms"),
    Target("S8", "sp_latency_p99_ms", "<", 100.0, "ms"),
    Target("S8", "json_lost", "==", 0.0),
    Target("S8", "sp_lost", "==", 0.0),
    Target("S9", "json_alone_drain_values_per_s", ">=", 500_000.0, "values/s"),
    Target("S9", "sp_alone_drain_values_per_s", ">=", 500_000.0, "values/s"),
    Target("S9", "both_json_drain_values_per_s", ">=", 500_000.0, "values/s"),
    Target("S9", "both_sp_drain_values_per_s", ">=", 500_000.0, "values/s"),
    Target("S9", "sp_alone_lost", "==", 0.0),
    Target("S9", "both_sp_lost", "==", 0.0),
    Target("S9", "both_json_lost", "==", 0.0),
    Target("S10", "json_during_p99_ms", "<", 100.0, "ms"),
    Target("S10", "json_lost", "==", 0.0),
    Target("S10", "sp_lost", "==", 0.0),
    Target("S14", "10x100_startup_s", "<", 0.5, "s"),
    Target("S14", "10x1200_startup_s", "<", 1.0, "s"),
    Target("S14", "20x12000_startup_s", "<", 10.0, "s"),
    Target("S14", "10x1200_rss_mb", "<", 50.0, "MiB"),
    Target("S14", "20x12000_rss_mb", "<", 150.0, "MiB"),
    Target("S15", "first_data_after_s", "<", 3.0, "s"),
)

# Figures shown in the table without a target (context for reading the ones with one).
INFO: dict[str, tuple[str, ...]] = {
    "S1": ("hwm_mb", "latency_p95_ms", "values_per_s", "broker_cpu_pct", "responder_cpu_pct"),
    "S2": ("rss_mb", "latency_p50_ms", "latency_p99_ms", "values_per_s"),
    "S3": (
        "offered_values_per_s",
        "latency_p50_ms",
        "overruns",
        "rss_mb",
        "broker_cpu_pct",
        "responder_cpu_pct",
        "subscriber_cpu_pct",
    ),
    "S4": (
        "backlog_values",
        "drain_from_start_s",
        "live_values_per_s",
        "live_latency_p50_ms",
        "cpu_pct",
        "hwm_mb",
        "duplicates",
    ),
    "S7": (
        "bus_utilisation_pct",
        "responder_busy_pct",
        "wire_ms_per_poll",
        "polls_per_s",
        "cpu_pct",
    ),
    "S7d": ("dead_unit_timeouts", "bus_utilisation_pct", "polls_per_s", "overruns", "cpu_pct"),
    "S12": ("cpu_pct", "plain_cpu_pct", "rss_mb", "latency_p99_ms", "values_per_s"),
    "S13": ("cpu_pct", "plain_cpu_pct", "rss_mb", "values_per_s"),
    "S15": ("outage_s", "reconnects"),
    "S8": (
        "cpu_pct",
        "single_cpu_pct",
        "rss_mb",
        "json_latency_p50_ms",
        "sp_latency_p50_ms",
        "json_values_per_s",
        "sp_values_per_s",
        "broker_cpu_pct",
        "broker_sp_cpu_pct",
        "subscriber_sp_cpu_pct",
    ),
    "S9": (
        "json_alone_drain_from_start_s",
        "sp_alone_drain_from_start_s",
        "both_json_drain_from_start_s",
        "both_sp_drain_from_start_s",
        "json_alone_cpu_pct",
        "sp_alone_cpu_pct",
        "both_cpu_pct",
        "sp_alone_duplicates",
    ),
    "S10": (
        "outage_s",
        "json_before_p50_ms",
        "json_before_p99_ms",
        "json_during_p50_ms",
        "json_during_vs_before_p99",
        "json_during_values_per_s",
        "cpu_pct",
        "outage_cpu_pct",
        "outage_sp_pending_batches",
        "outage_json_pending_batches",
        "sp_missed_values",
        "sp_first_after_s",
        "catch_up_s",
        "sp_catch_up_values_per_s",
        "sp_duplicates",
    ),
    "S14": (
        "empty_rss_mb",
        "10x100_rss_mb",
        "10x100_bytes_per_tag",
        "10x1200_bytes_per_tag",
        "20x12000_bytes_per_tag",
        "10x100_validate_s",
        "10x1200_validate_s",
        "20x12000_validate_s",
        "20x12000_hwm_mb",
    ),
    "S11": (
        "decode_us_per_value",
        "encode_us_per_value",
        "path_us_per_value",
        "ddata_us_per_message",
        "ddata_bytes_per_value",
        "ceiling_values_per_s",
    ),
}


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    scenario: str
    metric: str
    median: float
    low: float
    high: float
    target: Target | None

    def as_dict(self) -> dict[str, Any]:
        """For the JSON file."""
        t = self.target
        return {
            "scenario": self.scenario,
            "metric": self.metric,
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "target": None if t is None else f"{t.op} {t.limit:g}",
            "ratio": None if t is None else t.ratio(self.median),
            "met": None if t is None else t.met(self.median),
        }


def rows(runs: Runs) -> list[Row]:
    """Median and spread of every targeted and informative figure that was measured."""
    out = []
    wanted: list[tuple[str, str, Target | None]] = [(t.scenario, t.metric, t) for t in TARGETS]
    wanted += [(s, m, None) for s, metrics in INFO.items() for m in metrics]
    names = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S7d", "S8", "S9", "S10", "S11", "S12",
             "S13", "S14", "S15"]  # fmt: skip
    order = {name: i for i, name in enumerate(names)}
    wanted.sort(key=lambda w: order.get(w[0], 99))
    for scenario, metric, target in wanted:
        values = [r[metric] for r in runs.get(scenario, []) if metric in r]
        values = [v for v in values if not math.isnan(v)] or values
        if not values:
            continue
        out.append(Row(scenario, metric, statistics.median(values), min(values), max(values),
                       target))  # fmt: skip
    return out


def _num(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(table_rows: Sequence[Row], n_runs: int) -> str:
    """The table printed last: median, spread (min-max over runs), target, ratio, verdict."""
    head = ("scen", "metric", "median", f"spread ({n_runs} runs)", "target", "ratio", "")
    lines = [head]
    for r in table_rows:
        t = r.target
        ratio = None if t is None else t.ratio(r.median)
        lines.append((
            r.scenario,
            r.metric,
            _num(r.median),
            f"{_num(r.low)} - {_num(r.high)}",
            "" if t is None else f"{t.op} {t.limit:g} {t.unit}".strip(),
            "" if ratio is None else f"{ratio:.2f}x",
            "" if t is None else ("ok" if t.met(r.median) else "MISSED"),
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = []
    for i, line in enumerate(lines):
        cells = zip(line, widths, strict=True)
        text.append(
            "  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(cells))
        )
        if i == 0:
            text.append("-" * len(text[0]))
    return "\n".join(text)


def write_json(folder: Path, runs: Runs, table_rows: Sequence[Row], meta: dict[str, Any]) -> Path:
    """``folder/<timestamp>.json`` with every run's raw figures and the summary."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = folder / f"{stamp}.json"
    doc = {
        "when": stamp,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        **meta,
        "summary": [r.as_dict() for r in table_rows],
        "runs": runs,
    }
    path.write_text(json.dumps(doc, indent=1, allow_nan=True))
    return path
