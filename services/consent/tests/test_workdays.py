"""Working days for the notice rule: weekends and Swedish public (and de facto) holidays."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consentry.consent.policies import workdays
from consentry.consent.policies.workdays import (
    UnsupportedCountryError,
    add_working_days,
    earliest_effective_on,
    is_working_day,
    working_days_between,
)

# Swedish days off on weekdays, from the law (SFS 1989:253) and the Annual Leave Act
# (Midsummer Eve, Christmas Eve and New Year's Eve count as Sundays): written out by hand, not
# taken from the library under test.
SWEDISH_WEEKDAY_HOLIDAYS = {
    date(2025, 1, 1): "New Year's Day",
    date(2025, 1, 6): "Epiphany",
    date(2025, 4, 18): "Good Friday",
    date(2025, 4, 21): "Easter Monday",
    date(2025, 5, 1): "May Day",
    date(2025, 5, 29): "Ascension Day",
    date(2025, 6, 6): "National Day",
    date(2025, 6, 20): "Midsummer Eve",
    date(2025, 12, 24): "Christmas Eve",
    date(2025, 12, 25): "Christmas Day",
    date(2025, 12, 26): "Boxing Day",
    date(2025, 12, 31): "New Year's Eve",
    date(2026, 1, 1): "New Year's Day",
    date(2026, 1, 6): "Epiphany",
}
dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 31))


@pytest.mark.parametrize(("day", "name"), sorted(SWEDISH_WEEKDAY_HOLIDAYS.items()))
def test_swedish_holidays_on_weekdays_are_not_working_days(day: date, name: str) -> None:
    assert day.weekday() < 5, name
    assert not is_working_day(day, "SE"), name


@pytest.mark.parametrize(
    "day",
    [
        date(2025, 6, 9),  # Whit Monday: no longer a public holiday in Sweden (since 2005)
        date(2025, 6, 19),  # the day before Midsummer Eve
        date(2025, 12, 23),
        date(2025, 12, 30),
        date(2025, 11, 24),
    ],
)
def test_ordinary_weekdays_are_working_days(day: date) -> None:
    assert is_working_day(day, "SE")


def test_every_day_of_2025_by_hand() -> None:
    """Across a whole year the library agrees with the hand-written list plus weekends."""
    day = date(2025, 1, 1)
    while day.year == 2025:
        expected = day.weekday() < 5 and day not in SWEDISH_WEEKDAY_HOLIDAYS
        assert is_working_day(day, "SE") is expected, day
        day += timedelta(days=1)


def test_thirty_working_days_over_christmas_counted_by_hand() -> None:
    # Announced Monday 24 November 2025. Working days after it: 25-28 Nov (4), 1-5 Dec (9),
    # 8-12 Dec (14), 15-19 Dec (19), 22-23 Dec (21; 24-26 Dec off), 29-30 Dec (23; 31 Dec and
    # 1 Jan off), 2 Jan (24), 5 Jan (25; 6 Jan off), 7-9 Jan (28), 12 Jan (29), 13 Jan (30).
    announced = date(2025, 11, 24)
    assert add_working_days(announced, 30, "SE") == date(2026, 1, 13)
    assert earliest_effective_on(announced, "SE") == date(2026, 1, 14)
    assert working_days_between(announced, date(2026, 1, 14), "SE") == 30
    assert working_days_between(announced, date(2026, 1, 13), "SE") == 29
    # Without the holidays, six weeks would have been enough.
    assert announced + timedelta(weeks=6) == date(2026, 1, 5)


def test_thirty_working_days_over_ascension_national_day_and_midsummer() -> None:
    # Announced Monday 12 May 2025: 29 May, 6 June and 20 June are off.
    assert earliest_effective_on(date(2025, 5, 12), "SE") == date(2025, 6, 27)


def test_the_announce_day_does_not_count_even_when_it_is_a_working_day() -> None:
    announced = date(2025, 11, 24)  # a Monday
    assert is_working_day(announced, "SE")
    assert add_working_days(announced, 1, "SE") == date(2025, 11, 25)
    assert working_days_between(announced, date(2025, 11, 25), "SE") == 0


def test_other_countries_use_their_own_holidays() -> None:
    # 4 July is a US holiday and an ordinary Swedish Friday.
    assert not is_working_day(date(2025, 7, 4), "US")
    assert is_working_day(date(2025, 7, 4), "SE")
    assert workdays.is_supported_country("DE")
    assert not workdays.is_supported_country("XX")
    with pytest.raises(UnsupportedCountryError):
        is_working_day(date(2025, 7, 4), "XX")


def test_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        add_working_days(date(2025, 1, 1), 0)


@given(dates, st.integers(min_value=1, max_value=80))
def test_adding_working_days_lands_on_a_working_day(day: date, count: int) -> None:
    result = add_working_days(day, count, "SE")
    assert result > day
    assert result.weekday() < 5
    assert result not in SWEDISH_WEEKDAY_HOLIDAYS
    assert is_working_day(result, "SE")
    assert working_days_between(day, result, "SE") == count - 1  # the count-th one is result


@given(dates)
def test_earliest_effective_day_leaves_exactly_thirty_working_days(day: date) -> None:
    earliest = earliest_effective_on(day, "SE")
    assert working_days_between(day, earliest, "SE") == 30
    # One day earlier leaves 29: the earliest is the least date that satisfies the rule.
    assert working_days_between(day, earliest - timedelta(days=1), "SE") == 29
    # Thirty working days are at least six Monday-to-Friday weeks: from a Sunday, the 30th
    # is the Friday 40 days later, so the earliest effective day is at least 41 days after.
    assert earliest >= day + timedelta(days=41)


@given(dates, dates)
def test_earliest_effective_day_never_moves_backwards(first: date, second: date) -> None:
    first, second = sorted((first, second))
    assert earliest_effective_on(first, "SE") <= earliest_effective_on(second, "SE")


@given(dates, st.integers(min_value=0, max_value=120))
def test_working_days_between_counts_weekdays_that_are_not_holidays(day: date, span: int) -> None:
    end = day + timedelta(days=span)
    expected = sum(1 for n in range(1, span) if is_working_day(day + timedelta(days=n), "SE"))
    assert working_days_between(day, end, "SE") == expected
    assert all(
        is_working_day(day + timedelta(days=n), "SE") is False
        for n in range(1, span)
        if (day + timedelta(days=n)).weekday() >= 5
    )
