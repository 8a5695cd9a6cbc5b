"""Working-day arithmetic for policy notice periods (pure: no I/O, no clock).

A *working day* is a day that is neither a weekend day nor a public holiday of the tenant's
country (ISO 3166-1 alpha-2, Sweden by default), as the maintained `holidays` library knows
them. Where the library has a `de_facto` category it counts too: Sweden's Midsummer Eve,
Christmas Eve and New Year's Eve are not public holidays by law but are treated as Sundays
by the Annual Leave Act (SFS 1977:480, section 7), so nobody works them. Weekend days are the
country's own (Saturday and Sunday for Sweden).

The notice rule: a policy version that changes purposes must be announced at least
`NOTICE_WORKING_DAYS` (30) working days before it takes effect. The version takes effect at
the *start* of its effective day, so the days of notice are the working days strictly between
the announce day and the effective day: the announce day does not count (the announcement may
come at 23:59) and neither does the effective day (the change applies from its first minute).
The earliest effective day is therefore the day after the 30th working day after the announce
day.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

import holidays
from holidays.constants import DE_FACTO, PUBLIC

NOTICE_WORKING_DAYS = 30
DEFAULT_COUNTRY = "SE"


class UnsupportedCountryError(ValueError):
    """The holidays library has no calendar for this country code."""


def is_supported_country(country: str) -> bool:
    """Whether `country` (ISO 3166-1 alpha-2, upper case) has a holiday calendar."""
    return country in holidays.list_supported_countries()


@lru_cache(maxsize=64)
def _calendar(country: str) -> holidays.HolidayBase:
    if not is_supported_country(country):
        raise UnsupportedCountryError(f"no holiday calendar for country {country!r}")
    calendar = holidays.country_holidays(country, categories=(PUBLIC,))
    if DE_FACTO in calendar.supported_categories:
        calendar = holidays.country_holidays(country, categories=(PUBLIC, DE_FACTO))
    return calendar


def is_working_day(day: date, country: str = DEFAULT_COUNTRY) -> bool:
    """Whether `day` is a working day in `country` (no weekend day, no holiday)."""
    return _calendar(country).is_working_day(day)


def add_working_days(day: date, count: int, country: str = DEFAULT_COUNTRY) -> date:
    """The `count`-th working day after `day` (`day` itself never counts); count >= 1."""
    if count < 1:
        raise ValueError("count must be at least 1")
    return _calendar(country).get_nth_working_day(day, count)


def working_days_between(start: date, end: date, country: str = DEFAULT_COUNTRY) -> int:
    """How many working days lie strictly between `start` and `end` (0 if none)."""
    first, last = start + timedelta(days=1), end - timedelta(days=1)
    if last < first:
        return 0
    return _calendar(country).get_working_days_count(first, last)


def earliest_effective_on(
    announced_on: date, country: str = DEFAULT_COUNTRY, notice: int = NOTICE_WORKING_DAYS
) -> date:
    """The first day a version announced on `announced_on` may take effect (see the module)."""
    return add_working_days(announced_on, notice, country) + timedelta(days=1)
