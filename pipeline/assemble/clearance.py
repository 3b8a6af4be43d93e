"""Which frames are clear enough to use, and which views feed each multi-frame composite window.

Per frame: ``clear_fraction`` (share of the region's pixels that are clear) and
``clearance_score`` (mean per-pixel clearance, with partial credit for doubtful classes) come from
:func:`pipeline.assemble.stack.with_clearance`. Here they become decisions:

* single-image models: every frame with ``clear_fraction >= min_clear`` is super-resolved;
* multi-frame models: frames are grouped into composite windows (``window="30D"`` etc., or one
  window for the whole date range); in each window the ``n_views`` clearest frames (by score)
  that pass ``min_clear`` are the views, as HighRes-net's recipe feeds the k clearest views. A
  window with fewer than ``min_views`` such frames is dropped, or kept with fewer (padded) views,
  as ``short_windows`` says; either way the output states it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd


def _stamp(t: Any) -> str:
    return str(np.datetime64(t, "s")) if t is not None else "?"


@dataclass(frozen=True)
class FrameDecision:
    """Whether a frame is used, with its clearance and the reason (and its window, if any)."""

    time: str
    clear_fraction: float
    clearance_score: float
    kept: bool
    reason: str
    window: str | None = None


def select_frames(times: Sequence[Any], fractions: Sequence[float] | np.ndarray, min_clear: float,
                  scores: Sequence[float] | np.ndarray | None = None) -> list[FrameDecision]:
    """Single-image selection: keep frames whose clear fraction is at least ``min_clear``."""
    if not 0.0 <= min_clear <= 1.0:
        raise ValueError(f"min_clear must be in [0, 1], got {min_clear}")
    scores = fractions if scores is None else scores
    out = []
    for t, f, s in zip(times, fractions, scores, strict=True):
        f, s = float(f), float(s)
        if f >= min_clear:
            out.append(FrameDecision(_stamp(t), f, s, True, f"clear {f:.1%} >= min_clear {min_clear:.0%}"))
        else:
            out.append(FrameDecision(_stamp(t), f, s, False, f"too cloudy: clear {f:.1%} < min_clear {min_clear:.0%}"))
    return out


def parse_window(window: str | None) -> pd.Timedelta | None:
    """``None``/``"all"``: one window over the whole range; else a fixed length such as ``"30D"``."""
    if window is None or str(window).lower() == "all":
        return None
    try:
        length = pd.Timedelta(str(window))
    except ValueError:
        raise ValueError(f"window must be a length such as '10D', '30D', '12h' or 'all', got {window!r}") from None
    if length <= pd.Timedelta(0):
        raise ValueError(f"window must be positive, got {window!r}")
    return length


@dataclass(frozen=True)
class WindowPlan:
    """One composite window: its bounds, the chosen views (frame indices, best first) and status."""

    start: str
    end: str  # exclusive
    views: tuple[int, ...]
    status: str  # "ok", "padded", "dropped"
    reason: str
    candidates: int = 0
    view_times: tuple[str, ...] = field(default=())

    @property
    def kept(self) -> bool:
        return self.status != "dropped"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> WindowPlan:
        return cls(**{**doc, "views": tuple(doc["views"]), "view_times": tuple(doc.get("view_times", ()))})


def plan_windows(times: Sequence[Any], fractions: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray,
                 *, start: dt.date, end: dt.date, window: str | None, n_views: int, min_views: int,
                 min_clear: float, short_windows: str = "pad") -> tuple[list[WindowPlan], list[FrameDecision]]:
    """Group frames into windows and pick the views of each (see the module docstring)."""
    if n_views < 1 or min_views < 1 or min_views > n_views:
        raise ValueError(f"need 1 <= min_views <= n_views, got min_views={min_views}, n_views={n_views}")
    if short_windows not in ("pad", "drop"):
        raise ValueError(f"short_windows must be 'pad' or 'drop', got {short_windows!r}")
    if not 0.0 <= min_clear <= 1.0:
        raise ValueError(f"min_clear must be in [0, 1], got {min_clear}")
    length = parse_window(window)
    t0 = pd.Timestamp(start)
    t_end = pd.Timestamp(end) + pd.Timedelta(days=1)
    stamps = [pd.Timestamp(np.datetime64(t, "ns")) for t in times]
    bounds: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    if length is None:
        bounds = [(t0, t_end)]
    else:
        b = t0
        while b < t_end:
            bounds.append((b, min(b + length, t_end)))
            b = b + length
    frame_window: dict[int, str] = {}
    short: dict[str, str] = {}
    plans: list[WindowPlan] = []
    chosen: set[int] = set()
    for lo, hi in bounds:
        label = f"{lo.isoformat()}/{hi.isoformat()}"  # half-open [lo, hi)
        short[label] = f"{lo:%Y-%m-%d %H:%M}".removesuffix(" 00:00")
        members = [i for i, s in enumerate(stamps) if lo <= s < hi]
        for i in members:
            frame_window[i] = label
        usable = [i for i in members if float(fractions[i]) >= min_clear]
        usable.sort(key=lambda i: (-float(scores[i]), stamps[i]))
        views = tuple(usable[:n_views])
        status, reason = "ok", f"{len(views)} clearest of {len(members)} frames"
        if len(views) < min_views:
            if short_windows == "drop" or not views:
                status = "dropped"
                reason = f"{len(usable)} usable frames (clear >= {min_clear:.0%}) < min_views {min_views}"
                views = ()
            else:
                status = "padded"
                reason = (f"{len(views)} usable frames < min_views {min_views}: "
                          f"padded to {n_views} views with masked empty views")
        chosen.update(views)
        plans.append(WindowPlan(str(lo), str(hi), views, status, reason, len(members),
                                tuple(_stamp(times[i]) for i in views)))
    decisions = []
    for i, t in enumerate(times):
        f, s = float(fractions[i]), float(scores[i])
        win = frame_window.get(i)
        name = short.get(win or "", win)
        if i in chosen:
            why = f"view of the window from {name}: score {s:.2f}, clear {f:.1%}"
        elif f < min_clear:
            why = f"too cloudy: clear {f:.1%} < min_clear {min_clear:.0%}"
        elif win is None:
            why = "outside every window"
        else:
            why = f"not among the {n_views} clearest of the window from {name}"
        decisions.append(FrameDecision(_stamp(t), f, s, i in chosen, why, win))
    return plans, decisions
