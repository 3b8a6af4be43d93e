import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from srcube.pipeline.errors import InvalidBBoxError, InvalidDatesError
from srcube.pipeline.params import BBox, DateRange


def test_bbox_parses_sequences_and_strings():
    assert BBox.parse((4.4, 51.4, 4.5, 51.5)).as_tuple() == (4.4, 51.4, 4.5, 51.5)
    assert BBox.parse("4.4,51.4,4.5,51.5") == BBox(4.4, 51.4, 4.5, 51.5)
    assert BBox.parse("4.4 51.4 4.5 51.5") == BBox(4.4, 51.4, 4.5, 51.5)
    assert BBox.parse(["-11.5", "25", "-11.3", "25.2"]).center == pytest.approx((-11.4, 25.1))


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ((51.4, 4.4, 51.5, 4.5, 0), "needs 4 numbers"),
        ((4.5, 51.4, 4.4, 51.5), "antimeridian"),  # min_lon > max_lon
        ((4.4, 51.5, 4.5, 51.4), "min_lat=51.5 > max_lat=51.4"),
        ((4.4, 51.4, 4.4, 51.5), "zero width"),
        ((190.0, 51.4, 191.0, 51.5), r"outside \[-180, 180\]"),
        ((4.4, -95.0, 4.5, 51.5), r"outside \[-90, 90\]"),
        ((4.4, 84.5, 4.5, 85.0), "UTM range"),
        ((4.4, float("nan"), 4.5, 51.5), "non-finite"),
        ("a,b,c,d", "must be numbers"),
        (42, "four numbers"),
    ],
)
def test_bbox_rejects(value, match):
    with pytest.raises(InvalidBBoxError, match=match):
        BBox.parse(value)


def test_bbox_error_is_a_value_error():
    with pytest.raises(ValueError):
        BBox.parse((1, 2, 0, 3))


@given(
    lon=st.floats(-179.0, 178.0), lat=st.floats(-79.0, 82.0),
    w=st.floats(0.0001, 1.0), h=st.floats(0.0001, 1.0),
)
def test_bbox_string_round_trip(lon, lat, w, h):
    b = BBox(lon, lat, lon + w, lat + h)
    assert BBox.parse(",".join(repr(v) for v in b.as_tuple())) == b


@given(st.text(max_size=40))
def test_bbox_parser_gives_a_valid_box_or_a_typed_error(text):
    try:
        b = BBox.parse(text)
    except InvalidBBoxError as exc:
        assert repr(text)[1:-1][:20] in str(exc) or "got" in str(exc)  # the message shows what it got
        return
    # what parses is a real box: finite, ordered, on the globe, and it prints back to itself
    assert -180 <= b.min_lon < b.max_lon <= 180 and -90 <= b.min_lat < b.max_lat <= 90
    assert BBox.parse(",".join(repr(v) for v in b.as_tuple())) == b


def test_dates_parse_forms():
    d = DateRange.parse("2024-05-01/2024-06-30")
    assert (d.start, d.end) == (dt.date(2024, 5, 1), dt.date(2024, 6, 30))
    assert DateRange.parse(("2024-05-01", dt.date(2024, 5, 2))).end == dt.date(2024, 5, 2)
    assert DateRange.parse([dt.datetime(2024, 5, 1, 13), "2024-05-01"]).start == dt.date(2024, 5, 1)
    one = DateRange.parse("2020-02-19")
    assert one.start == one.end
    assert one.to_stac() == "2020-02-19T00:00:00Z/2020-02-19T23:59:59.999999Z"
    assert str(d) == "2024-05-01/2024-06-30"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("2024-06-30/2024-05-01", "reversed"),
        ("2024-13-01/2024-12-01", "not a calendar date"),
        ("2024/05/01", "must be 'YYYY-MM-DD/YYYY-MM-DD'"),
        ("01-05-2024/02-05-2024", "use YYYY-MM-DD"),
        ("2024-05-01/", "use YYYY-MM-DD"),
        (("2024-05-01",), "pair"),
        (20240501, "pair"),
        ("2999-01-01/2999-02-01", "in the future"),
    ],
)
def test_dates_reject(value, match):
    with pytest.raises(InvalidDatesError, match=match):
        DateRange.parse(value)


@given(st.text(max_size=30))
def test_dates_parser_gives_a_valid_range_or_a_typed_error(text):
    try:
        d = DateRange.parse(text)
    except InvalidDatesError as exc:
        assert str(exc)
        return
    assert d.start <= d.end <= dt.datetime.now(dt.UTC).date()  # ordered, not in the future
    assert DateRange.parse(str(d)) == d  # and it prints back to itself
