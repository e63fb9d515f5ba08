"""What a person reads instead of raw values: allocation labels instead of range text such as "0", run
names instead of 32-hex ids, relative times and durations instead of microsecond ISO timestamps.

Pure functions (no Dash), shared by the pages, the figures and the report.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping, Optional

from layertracer.spec.allocations import PRESETS, is_from_trace
from layertracer.spec.ranges import RangeError, range_bounds

BASE = "base"  # the runner's name of the untrained reference row
SHORT_ID = 8  # hex characters of an id shown when a run has no name


def allocation_label(allocation: str, labels: Optional[Mapping[str, str]] = None) -> str:
    """The name of an allocation: the run's own label when it gave one; the preset's name; "freeze plan
    of a trace" for ``from-trace``; "train layers R" for bare layer ranges (the plan's "0" reads as a
    number everywhere otherwise)."""
    allocation = str(allocation)
    if labels and labels.get(allocation):
        return str(labels[allocation])
    if allocation == BASE:
        return "base model"
    if allocation in PRESETS and not is_from_trace(allocation):
        return allocation
    if is_from_trace(allocation):
        return "freeze plan of a trace"
    try:
        range_bounds(allocation)
    except RangeError:
        return allocation  # not allocation text (an old or hand-made result): shown as it is
    return f"train layers {allocation}"


def result_labels(result: Optional[Mapping[str, Any]], spec: Optional[Mapping[str, Any]] = None) -> dict[str, str]:
    """allocation -> label for one experiment: its spec's ``labels``, then each table row's ``label``
    when that differs from the bare allocation, then :func:`allocation_label`."""
    result = result or {}
    given: dict[str, str] = {}
    for source in (spec or {}, result.get("spec") or {}):
        for a, label in (source.get("labels") or {}).items():
            given.setdefault(str(a), str(label))
    for row in result.get("table") or []:
        a, label = str(row.get("allocation")), row.get("label")
        if label and str(label) != a and a != BASE:
            given.setdefault(a, str(label))
    allocations = [str(a) for a in ((spec or {}).get("allocations") or (result.get("spec") or {}).get("allocations") or [])]
    allocations += [str(r.get("allocation")) for r in result.get("table") or [] if r.get("allocation") is not None]
    allocations += [str(t.get("allocation_spec")) for t in result.get("trials") or [] if t.get("allocation_spec")]
    return {a: allocation_label(a, given) for a in dict.fromkeys(allocations + [BASE])}


def trial_label(slug: str, allocation: Optional[str], labels: Mapping[str, str]) -> str:
    """A trial's legend name: its allocation's label and seed (``0-seed2`` -> "train layers 0 · seed 2")."""
    stem, _, seed = str(slug).rpartition("-seed")
    allocation = allocation or stem or str(slug)
    name = labels.get(allocation) or allocation_label(allocation)
    return f"{name} · seed {seed}" if seed.isdigit() else name


def run_name(item: Optional[Mapping[str, Any]]) -> str:
    """A run's name, or the start of its id when it has none."""
    item = item or {}
    name = (item.get("name") or "").strip() if isinstance(item.get("name"), str) else ""
    return name or short_id(item.get("id"))


def short_id(ident: Any) -> str:
    text = str(ident or "?")
    return text[:SHORT_ID] if len(text) > SHORT_ID + 2 else text


def parse_time(value: Any) -> Optional[datetime]:
    """An API timestamp (ISO 8601; naive means UTC) as an aware datetime; None when absent or unreadable."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def duration(seconds: Optional[float]) -> str:
    """Seconds as a person says them: 45 s, 3 min 20 s, 2 h 5 min, 3 d 4 h."""
    if seconds is None:
        return "—"
    s = int(round(max(0.0, float(seconds))))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s < 600 and s % 60 else f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min" if s % 3600 >= 60 else f"{s // 3600} h"
    return f"{s // 86400} d {s % 86400 // 3600} h" if s % 86400 >= 3600 else f"{s // 86400} d"


def relative_time(value: Any, now: Optional[datetime] = None) -> str:
    """A timestamp relative to ``now`` (default: the clock): "just now", "5 min ago", "3 h ago",
    "2 d ago"; older than a month, the date."""
    moment = parse_time(value)
    if moment is None:
        return "—"
    now = now or datetime.now(timezone.utc)
    seconds = (now - moment).total_seconds()
    if seconds < -60:
        return f"in {duration(-seconds)}"
    if seconds < 45:
        return "just now"
    if seconds < 30 * 86400:
        return f"{duration(seconds).split(' ')[0]} {duration(seconds).split(' ')[1]} ago"
    return moment.strftime("%Y-%m-%d")


def absolute_time(value: Any) -> str:
    """A timestamp to the minute, in UTC: 2026-12-02 19:06 UTC (for hover text and documents)."""
    moment = parse_time(value)
    return "—" if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_duration(item: Mapping[str, Any], now: Optional[datetime] = None) -> str:
    """How long a run took (created to finished), or has been going (created to now) while live."""
    start = parse_time(item.get("created_at"))
    if start is None:
        return "—"
    end = parse_time(item.get("finished_at"))
    if end is None:
        status = item.get("status") or (item.get("job") or {}).get("status")
        if status not in ("queued", "running", "stalled"):
            return "—"
        end = now or datetime.now(timezone.utc)
    return duration((end - start).total_seconds())
