"""Clearance and composite-window selection, on the real Slovenia SCL time series and by property."""

import datetime as dt
import itertools
import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from srcube.pipeline.assemble.clearance import parse_window, plan_windows, select_frames
from srcube.pipeline.sensors import SENTINEL2
from tests.support.helpers import shared_path


@pytest.fixture(scope="module")
def slovenia():
    folder = shared_path("sentinel2_eolearn_slovenia_timeseries")
    scl = np.load(folder / "SCL.npy")[..., 0].astype(np.uint8)  # (24, 101, 100); stored as float32
    times = pd.to_datetime(json.loads((folder / "timestamps.json").read_text())).values
    return xr.DataArray(scl, dims=("time", "y", "x"), coords={"time": times})


def test_clear_fractions_per_date_on_the_real_scl_series(slovenia):
    clear = SENTINEL2.clear_mask(slovenia, SENTINEL2.default_clear, ["B04"])
    fractions = clear.mean(("y", "x")).values
    by_hand = np.array([np.isin(f, (4, 5, 6)).sum() / f.size for f in slovenia.values])
    np.testing.assert_allclose(fractions, by_hand)
    cloudy = np.isin(slovenia.values, (8, 9, 10)).mean(axis=(1, 2))
    # the series has clear dates, partly cloudy dates and fully cloudy dates
    assert (cloudy == 0).any() and (cloudy == 1).any() and ((cloudy > 0.03) & (cloudy < 0.8)).any()
    assert fractions[cloudy == 1].max() == 0.0
    decisions = select_frames(slovenia.time.values, fractions, 0.5)
    assert [d.kept for d in decisions] == list(fractions >= 0.5)


def test_best_frames_per_window_on_the_real_series(slovenia):
    clear = SENTINEL2.clear_mask(slovenia, SENTINEL2.default_clear, ["B04"]).mean(("y", "x")).values
    score = SENTINEL2.clearance_weight(slovenia, SENTINEL2.default_clear).mean(("y", "x")).values
    times = slovenia.time.values
    plans, decisions = plan_windows(times, clear, score, start=dt.date(2016, 12, 1), end=dt.date(2017, 9, 30),
                                    window="60D", n_views=3, min_views=2, min_clear=0.3, short_windows="pad")
    assert len(plans) == 6  # 304 days in 60-day windows: five full ones and a 4-day tail
    for plan in plans:
        lo, hi = pd.Timestamp(plan.start), pd.Timestamp(plan.end)
        members = [i for i, t in enumerate(pd.to_datetime(times)) if lo <= t < hi]
        usable = [i for i in members if clear[i] >= 0.3]
        expected = sorted(usable, key=lambda i: (-score[i], times[i]))[:3]
        assert list(plan.views) == expected  # the clearest usable frames, best first
        if len(usable) >= 2:
            assert plan.status == "ok"
        elif usable:
            assert plan.status == "padded" and "padded" in plan.reason
        else:
            assert plan.status == "dropped"
    kept = {i for p in plans for i in p.views}
    assert {i for i, d in enumerate(decisions) if d.kept} == kept
    assert all("too cloudy" in d.reason for d in decisions if not d.kept and d.clear_fraction < 0.3)
    dropped, _ = plan_windows(times, clear, score, start=dt.date(2016, 12, 1), end=dt.date(2017, 9, 30),
                              window="60D", n_views=3, min_views=3, min_clear=0.3, short_windows="drop")
    assert all(len(p.views) == 3 or p.status == "dropped" for p in dropped)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), days=st.integers(1, 120), window=st.sampled_from(["all", "1D", "7D", "30D"]),
       n_views=st.integers(1, 8), seed=st.integers(0, 10_000), min_clear=st.floats(0, 1))
def test_window_plan_properties(n, days, window, n_views, seed, min_clear):
    rng = np.random.default_rng(seed)
    start = dt.date(2024, 1, 1)
    times = np.sort(np.datetime64("2024-01-01") + rng.integers(0, days * 24, n).astype("timedelta64[h]"))
    fr, sc = rng.random(n), rng.random(n)
    plans, decisions = plan_windows(times, fr, sc, start=start, end=start + dt.timedelta(days=days - 1),
                                    window=window, n_views=n_views, min_views=1, min_clear=min_clear)
    seen: list[int] = []
    for p in plans:
        assert len(p.views) <= n_views and all(fr[i] >= min_clear for i in p.views)
        assert list(p.views) == sorted(p.views, key=lambda i: (-sc[i], times[i]))
        seen += list(p.views)
    assert len(seen) == len(set(seen))  # a frame feeds at most one window
    assert len(decisions) == n and all(d.window is not None for d in decisions)
    starts = [pd.Timestamp(p.start) for p in plans]
    assert starts == sorted(starts)
    assert all(pd.Timestamp(a.end) == pd.Timestamp(b.start) for a, b in itertools.pairwise(plans))


def test_window_and_option_errors():
    assert parse_window(None) is None and parse_window("all") is None
    assert parse_window("30D") == pd.Timedelta(days=30)
    for bad in ("monthly", "-5D", "0D"):
        with pytest.raises(ValueError, match="window"):
            parse_window(bad)
    with pytest.raises(ValueError, match="min_views <= n_views"):
        plan_windows([], [], [], start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 2), window=None, n_views=2,
                     min_views=3, min_clear=0.5)
