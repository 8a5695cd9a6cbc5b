"""The GDPR Art. 12(3) deadline engine: month arithmetic, time zones, rolls, pauses, extension.

Pure logic: no database or broker. Expected dates in the examples are worked out by hand
(weekdays and Swedish holidays checked against a calendar), not taken from the code under test.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from consentry.consent.policies.workdays import is_working_day
from consentry.consent.rights.deadlines import (
    AlreadyExtendedError,
    AlreadyPausedError,
    ClosedError,
    Deadline,
    DeadlineError,
    DeadlineStatus,
    EventOrderError,
    ExtendedWhilePausedError,
    Extension,
    ExtensionLengthError,
    ExtensionReasonMissingError,
    ExtensionTooLateError,
    InvalidCalendarError,
    NaiveDatetimeError,
    NotPausedError,
    Pause,
    PauseAfterDueError,
    PauseError,
    add_months,
    start_of_day,
)

STOCKHOLM = "Europe/Stockholm"
SE = ZoneInfo(STOCKHOLM)
TINY = timedelta(microseconds=1)

# The holiday calendar builds each year lazily (slow on a busy machine): no hypothesis deadline.
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 1), timezones=st.just(UTC)
)
dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 1))
zones = st.sampled_from(sorted(available_timezones()))


def local(text: str, zone: ZoneInfo = SE) -> datetime:
    """An aware instant from a local wall-clock time, e.g. '2025-04-30 12:00'."""
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def noon(day: date, zone: str = STOCKHOLM) -> datetime:
    return datetime.combine(day, datetime.min.time()).replace(hour=12, tzinfo=ZoneInfo(zone))


def unrolled(received: datetime, zone: str = STOCKHOLM) -> Deadline:
    return Deadline.start(received, zone, roll_forward=False)


# Month arithmetic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received_on", "due_on"),
    [
        (date(2028, 2, 29), date(2028, 3, 29)),  # leap day: same day next month
        (date(2028, 1, 31), date(2028, 2, 29)),  # clamped to the leap February's end
        (date(2027, 1, 31), date(2027, 2, 28)),  # clamped to a common February's end
        (date(2025, 4, 30), date(2025, 5, 30)),  # not the month's end: 30 May, not 31
        (date(2025, 3, 31), date(2025, 4, 30)),
        (date(2025, 8, 31), date(2025, 9, 30)),
        (date(2025, 12, 31), date(2026, 1, 31)),  # over the year's end
        (date(2025, 1, 15), date(2025, 2, 15)),
    ],
)
def test_one_calendar_month_by_month_arithmetic(received_on: date, due_on: date) -> None:
    deadline = unrolled(noon(received_on))
    assert deadline.received_on == received_on
    assert deadline.due_on == due_on
    assert deadline.due_at == start_of_day(due_on + timedelta(days=1), SE)


def _oracle_add_one_month(day: date) -> date:
    """The latest day of the next month whose day-of-month is not after `day`'s."""
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    days = [date(year, month, n) for n in range(1, calendar.monthrange(year, month)[1] + 1)]
    return max(d for d in days if d.day <= day.day)


@settings(deadline=None)
@given(dates)
def test_add_months_agrees_with_an_independent_formulation(day: date) -> None:
    assert add_months(day, 1) == _oracle_add_one_month(day)


@settings(deadline=None)
@given(instants)
def test_due_date_is_28_to_31_days_after_receipt_and_never_before(received: datetime) -> None:
    deadline = unrolled(received)
    assert 28 <= (deadline.due_on - deadline.received_on).days <= 31
    assert deadline.due_at > received
    assert deadline.due_at - received > timedelta(days=28)
    # Same day of the month unless the next month is too short, then its last day.
    if deadline.due_on.day != deadline.received_on.day:
        assert deadline.received_on.day > 28
        last = calendar.monthrange(deadline.due_on.year, deadline.due_on.month)[1]
        assert deadline.due_on.day == last < deadline.received_on.day


@settings(deadline=None)
@given(instants, instants, st.booleans())
def test_the_deadline_is_monotonic_in_the_receipt(a: datetime, b: datetime, roll: bool) -> None:
    first, second = sorted((a, b))
    early = Deadline.start(first, STOCKHOLM, roll_forward=roll)
    late = Deadline.start(second, STOCKHOLM, roll_forward=roll)
    assert early.due_on <= late.due_on
    assert early.due_at <= late.due_at


# Time zones -----------------------------------------------------------------------------------


def test_the_receipt_day_is_the_tenants_local_day() -> None:
    received = datetime(2027, 1, 31, 23, 30, tzinfo=UTC)  # 00:30 on 1 February in Stockholm
    assert unrolled(received).received_on == date(2027, 2, 1)
    assert unrolled(received).due_on == date(2027, 3, 1)
    assert unrolled(received, "UTC").due_on == date(2027, 2, 28)
    # 22:00 on 28 February in New York is 03:00 on 1 March in UTC.
    new_york = unrolled(datetime(2025, 3, 1, 3, 0, tzinfo=UTC), "America/New_York")
    assert new_york.received_on == date(2025, 2, 28)
    assert new_york.due_on == date(2025, 3, 28)


def test_the_deadline_is_the_end_of_the_local_due_day() -> None:
    deadline = Deadline.start(local("2025-04-30 09:00"), STOCKHOLM)
    assert deadline.due_on == date(2025, 5, 30)  # a Friday
    assert deadline.due_at == datetime(2025, 5, 30, 22, 0, tzinfo=UTC)  # midnight CEST
    assert deadline.status(deadline.due_at - TINY) is DeadlineStatus.DUE_SOON
    assert deadline.status(deadline.due_at) is DeadlineStatus.OVERDUE


def test_a_day_that_starts_at_one_oclock_in_a_dst_gap() -> None:
    # Chile skipped 00:00-01:00 on 8 September 2024: that day began at 01:00 -03 (04:00 UTC).
    santiago = ZoneInfo("America/Santiago")
    assert start_of_day(date(2024, 9, 8), santiago) == datetime(2024, 9, 8, 4, 0, tzinfo=UTC)
    deadline = unrolled(local("2024-08-07 10:00", santiago), "America/Santiago")
    assert deadline.due_on == date(2024, 9, 7)
    assert deadline.due_at == datetime(2024, 9, 8, 4, 0, tzinfo=UTC)


@settings(deadline=None)
@given(instants, zones)
def test_due_at_is_the_first_instant_after_the_due_day_in_any_zone(
    received: datetime, zone: str
) -> None:
    deadline = Deadline.start(received, zone, roll_forward=False)
    tz = ZoneInfo(zone)
    assert deadline.received_on == received.astimezone(tz).date()
    assert deadline.due_at.tzinfo is UTC
    assert (deadline.due_at - TINY).astimezone(tz).date() == deadline.due_on
    assert deadline.due_at.astimezone(tz).date() == deadline.due_on + timedelta(days=1)


# Weekends and holidays (Regulation 1182/71) ---------------------------------------------------


@pytest.mark.parametrize(
    ("received_on", "nominal", "due_on"),
    [
        (date(2027, 1, 31), date(2027, 2, 28), date(2027, 3, 1)),  # Sunday -> Monday
        (date(2025, 5, 1), date(2025, 6, 1), date(2025, 6, 2)),  # Sunday -> Monday
        # Christmas Eve (Wed), Christmas, Boxing Day, then the weekend: Monday 29 December.
        (date(2025, 11, 24), date(2025, 12, 24), date(2025, 12, 29)),
        # Midsummer Eve (Fri), Midsummer Day (Sat), Sunday: Monday 23 June.
        (date(2025, 5, 20), date(2025, 6, 20), date(2025, 6, 23)),
        (date(2028, 2, 29), date(2028, 3, 29), date(2028, 3, 29)),  # a Wednesday: no roll
    ],
)
def test_a_deadline_on_a_day_off_ends_with_the_next_working_day(
    received_on: date, nominal: date, due_on: date
) -> None:
    deadline = Deadline.start(noon(received_on), STOCKHOLM)
    assert deadline.nominal_due_on == deadline.unrolled_due_on == nominal
    assert deadline.due_on == due_on
    assert Deadline.start(noon(received_on), STOCKHOLM, roll_forward=False).due_on == nominal


def test_the_holiday_calendar_is_the_tenants_country() -> None:
    # 4 July 2025 is a Friday: a US holiday, an ordinary Swedish working day.
    received = noon(date(2025, 6, 4), "America/New_York")
    assert Deadline.start(received, "America/New_York", "US").due_on == date(2025, 7, 7)
    assert Deadline.start(received, "America/New_York", "SE").due_on == date(2025, 7, 4)


@settings(deadline=None)
@given(instants)
def test_the_roll_lands_on_the_first_working_day_not_before_the_due_date(
    received: datetime,
) -> None:
    deadline = Deadline.start(received, STOCKHOLM)
    start, end = deadline.unrolled_due_on, deadline.due_on
    assert start <= end < start + timedelta(days=7)
    assert is_working_day(end, "SE")
    assert end.weekday() < 5
    assert not any(
        is_working_day(start + timedelta(days=n), "SE") for n in range((end - start).days)
    )


# Pauses ---------------------------------------------------------------------------------------


def test_a_pause_moves_the_deadline_by_the_local_days_it_spans() -> None:
    deadline = Deadline.start(local("2025-04-30 09:00"), STOCKHOLM)
    paused = deadline.pause(local("2025-05-02 16:00"))
    assert paused.is_paused
    assert paused.status(local("2025-05-03 10:00")) is DeadlineStatus.PAUSED
    resumed = paused.resume(local("2025-05-12 08:00"))  # 2 May -> 12 May: 10 days
    assert not resumed.is_paused
    assert resumed.paused_days == 10
    assert resumed.due_on == date(2025, 6, 9)  # 30 May + 10 days, a Monday (Whit Monday works)


def test_a_pause_within_one_day_costs_the_subject_nothing() -> None:
    deadline = Deadline.start(local("2025-04-30 09:00"), STOCKHOLM)
    same_day = deadline.pause(local("2025-05-02 00:05")).resume(local("2025-05-02 23:55"))
    assert same_day.paused_days == 0
    assert same_day.due_on == deadline.due_on


def test_pauses_accumulate() -> None:
    deadline = (
        unrolled(local("2025-04-30 09:00"))
        .pause(local("2025-05-02 16:00"))
        .resume(local("2025-05-05 09:00"))  # 3 days
        .pause(local("2025-05-05 17:00"))
        .resume(local("2025-05-06 08:00"))  # 1 day
        .pause(local("2025-05-07 10:00"))
        .resume(local("2025-05-07 11:00"))  # 0 days
    )
    assert deadline.paused_days == 4
    assert deadline.due_on == date(2025, 6, 3)


@settings(deadline=None)
@given(instants, st.integers(min_value=0, max_value=25), st.integers(min_value=0, max_value=400))
def test_pausing_for_n_days_moves_the_unrolled_due_date_by_n(
    received: datetime, days: int, gap_hours: int
) -> None:
    deadline = Deadline.start(received, "UTC")
    paused_at = received + timedelta(hours=gap_hours)
    assume(paused_at < deadline.due_at)
    resumed = deadline.pause(paused_at).resume(paused_at + timedelta(days=days))
    assert resumed.paused_days == days
    assert resumed.unrolled_due_on == deadline.nominal_due_on + timedelta(days=days)
    assert resumed.due_on >= deadline.due_on


@settings(deadline=None)
@given(instants, zones, st.integers(min_value=0, max_value=600), st.integers(0, 900))
def test_a_pause_adds_its_local_date_span_in_any_zone(
    received: datetime, zone: str, gap_hours: int, length_hours: int
) -> None:
    deadline = Deadline.start(received, zone, roll_forward=False)
    paused_at = received + timedelta(hours=gap_hours)
    assume(paused_at < deadline.due_at)
    resumed_at = paused_at + timedelta(hours=length_hours)
    tz = ZoneInfo(zone)
    span = (resumed_at.astimezone(tz).date() - paused_at.astimezone(tz).date()).days
    resumed = deadline.pause(paused_at).resume(resumed_at)
    assert resumed.due_on == deadline.due_on + timedelta(days=span)


def test_pause_and_resume_errors() -> None:
    deadline = Deadline.start(local("2025-04-30 09:00"), STOCKHOLM)
    paused = deadline.pause(local("2025-05-02 16:00"))
    with pytest.raises(AlreadyPausedError):
        paused.pause(local("2025-05-03 10:00"))
    with pytest.raises(NotPausedError):
        deadline.resume(local("2025-05-03 10:00"))
    with pytest.raises(EventOrderError):
        paused.resume(local("2025-05-02 15:59"))  # before the pause
    with pytest.raises(EventOrderError):
        deadline.pause(local("2025-04-30 08:59"))  # before the receipt
    with pytest.raises(PauseAfterDueError):
        deadline.pause(deadline.due_at)
    assert deadline.pause(deadline.due_at - TINY).is_paused  # the last instant still counts
    assert issubclass(PauseAfterDueError, PauseError)
    assert issubclass(PauseError, DeadlineError)


# Extension ------------------------------------------------------------------------------------


def test_an_extension_counts_months_from_the_original_due_date() -> None:
    deadline = unrolled(local("2026-01-31 10:00"))
    assert deadline.due_on == date(2026, 2, 28)
    notice = local("2026-02-20 10:00")
    one = deadline.extend(1, "a complex request", notice, notice)
    two = deadline.extend(2, "many requests at once", notice, notice)
    assert one.due_on == date(2026, 3, 28)  # not 31 March (three months from receipt)
    assert two.due_on == date(2026, 4, 28)
    assert one.original_due_on == two.original_due_on == date(2026, 2, 28)
    assert one.extension == Extension(1, "a complex request", notice, notice)


def test_the_extended_deadline_rolls_too() -> None:
    deadline = Deadline.start(local("2025-10-24 10:00"), STOCKHOLM)  # due Monday 24 Nov
    extended = deadline.extend(1, "complex", local("2025-11-03 09:00"), local("2025-11-03 09:00"))
    assert extended.unrolled_due_on == date(2025, 12, 24)
    assert extended.due_on == date(2025, 12, 29)


@settings(deadline=None)
@given(instants, st.sampled_from([1, 2]), st.integers(min_value=0, max_value=27))
def test_an_extension_adds_exactly_its_months_to_the_original_due_date(
    received: datetime, months: int, after_days: int
) -> None:
    deadline = Deadline.start(received, STOCKHOLM)
    decided = received + timedelta(days=after_days)
    assume(decided < deadline.original_due_at)
    extended = deadline.extend(months, "complex", decided, decided)
    assert extended.unrolled_due_on == add_months(deadline.nominal_due_on, months)
    assert extended.due_on > deadline.due_on
    assert extended.original_due_on == deadline.due_on
    assert is_working_day(extended.due_on, "SE")


def test_the_notice_must_come_before_the_original_due_instant() -> None:
    deadline = Deadline.start(local("2025-04-30 09:00"), STOCKHOLM)
    end = deadline.original_due_at
    assert end == deadline.due_at
    deadline.extend(2, "complex", end - TINY, end - TINY)  # the last instant is in time
    with pytest.raises(ExtensionTooLateError):
        deadline.extend(2, "complex", end, end)
    with pytest.raises(ExtensionTooLateError):  # a timely notice does not excuse a late decision
        deadline.extend(2, "complex", end - timedelta(days=1), end)
    with pytest.raises(ExtensionTooLateError):  # a notice after the first month
        deadline.extend(2, "complex", end + timedelta(days=1), end - TINY)


def test_the_notice_limit_includes_the_paused_days() -> None:
    deadline = (
        Deadline.start(local("2025-04-30 09:00"), STOCKHOLM)
        .pause(local("2025-05-02 16:00"))
        .resume(local("2025-05-12 08:00"))
    )
    assert deadline.original_due_on == date(2025, 6, 9)
    late_for_the_nominal_month = local("2025-06-05 10:00")
    extended = deadline.extend(1, "complex", late_for_the_nominal_month, late_for_the_nominal_month)
    assert extended.unrolled_due_on == date(2025, 6, 30) + timedelta(days=10)
    assert extended.due_on == date(2025, 7, 10)  # a Thursday


def test_extension_errors() -> None:
    deadline = Deadline.start(local("2025-04-30 09:00"), STOCKHOLM)
    at = local("2025-05-10 10:00")
    extended = deadline.extend(1, "complex", at, at)
    with pytest.raises(AlreadyExtendedError):
        extended.extend(1, "still complex", at, at + timedelta(hours=1))
    for months in (0, 3, -1):
        with pytest.raises(ExtensionLengthError):
            deadline.extend(months, "complex", at, at)
    for reason in ("", "   \n"):
        with pytest.raises(ExtensionReasonMissingError):
            deadline.extend(1, reason, at, at)
    with pytest.raises(ExtendedWhilePausedError):
        deadline.pause(at).extend(1, "complex", at, at)
    with pytest.raises(EventOrderError):  # a notice dated after the decision
        deadline.extend(1, "complex", at + timedelta(hours=1), at)
    with pytest.raises(EventOrderError):  # a notice before the request came in
        deadline.extend(1, "complex", local("2025-04-29 10:00"), at)
    with pytest.raises(NaiveDatetimeError):
        deadline.extend(1, "complex", datetime(2025, 5, 10, 9, 0), at)


# Status -----------------------------------------------------------------------------------------


def test_status_at_an_instant() -> None:
    deadline = Deadline.start(local("2025-04-30 09:00"), STOCKHOLM)  # due Friday 30 May
    assert deadline.status(local("2025-05-24 23:59")) is DeadlineStatus.ON_TRACK  # 6 days left
    assert deadline.days_left(local("2025-05-25 00:00")) == 5
    assert deadline.status(local("2025-05-25 00:00")) is DeadlineStatus.DUE_SOON
    assert deadline.status(local("2025-05-30 23:00")) is DeadlineStatus.DUE_SOON
    assert deadline.status(local("2025-05-31 00:00")) is DeadlineStatus.OVERDUE
    assert deadline.days_left(local("2025-06-02 10:00")) == -3
    assert deadline.status(local("2025-05-24 12:00"), soon_days=7) is DeadlineStatus.DUE_SOON
    assert deadline.status(local("2025-05-29 12:00"), soon_days=0) is DeadlineStatus.ON_TRACK
    assert deadline.status(local("2025-05-30 12:00"), soon_days=0) is DeadlineStatus.DUE_SOON
    with pytest.raises(ValueError, match="soon_days"):
        deadline.status(local("2025-05-24 12:00"), soon_days=-1)


def test_a_closed_request_is_not_deadline_relevant() -> None:
    deadline = Deadline.start(local("2025-04-30 09:00"), STOCKHOLM)
    closed = deadline.close(local("2025-05-03 10:00"))
    assert closed.status(local("2025-07-01 10:00")) is DeadlineStatus.CLOSED
    # A request rejected while waiting for the subject's identity is closed too.
    rejected = deadline.pause(local("2025-05-02 10:00")).close(local("2025-06-20 10:00"))
    assert rejected.status(local("2025-06-21 10:00")) is DeadlineStatus.CLOSED
    later = local("2025-05-04 10:00")
    changes: list[Callable[[], Deadline]] = [
        lambda: closed.pause(later),
        lambda: closed.close(later),
        lambda: closed.extend(1, "complex", later, later),
        lambda: rejected.resume(later + timedelta(days=60)),
    ]
    for change in changes:
        with pytest.raises(ClosedError):
            change()
    with pytest.raises(EventOrderError):
        deadline.close(local("2025-04-30 08:00"))


@settings(deadline=None)
@given(instants, instants)
def test_status_of_a_running_request_follows_due_at(received: datetime, now: datetime) -> None:
    deadline = Deadline.start(received, STOCKHOLM)
    status = deadline.status(now)
    assert (status is DeadlineStatus.OVERDUE) == (now >= deadline.due_at)
    if status is not DeadlineStatus.OVERDUE:
        assert (status is DeadlineStatus.DUE_SOON) == (deadline.days_left(now) <= 5)


# Calendar and input errors --------------------------------------------------------------------


def test_calendar_and_naive_errors() -> None:
    received = local("2025-04-30 09:00")
    for zone in ("Mars/Olympus_Mons", "", "../etc/passwd"):
        with pytest.raises(InvalidCalendarError):
            Deadline.start(received, zone)
    with pytest.raises(InvalidCalendarError):
        Deadline.start(received, STOCKHOLM, "XX")
    assert Deadline.start(received, STOCKHOLM, "XX", roll_forward=False).due_on == date(2025, 5, 30)
    naive = datetime(2025, 4, 30, 9, 0)
    with pytest.raises(NaiveDatetimeError):
        Deadline.start(naive, STOCKHOLM)
    deadline = Deadline.start(received, STOCKHOLM)
    for change in (deadline.pause, deadline.close, deadline.status, deadline.days_left):
        with pytest.raises(NaiveDatetimeError):
            change(naive)
    assert issubclass(DeadlineError, ValueError)


# Persistence: rebuilding from stored facts -----------------------------------------------------


def test_restore_from_stored_facts() -> None:
    notice = local("2025-05-14 10:00")
    original = (
        Deadline.start(local("2025-04-30 09:00"), STOCKHOLM)
        .pause(local("2025-05-02 16:00"))
        .resume(local("2025-05-12 08:00"))
        .extend(2, "complex", notice, notice)
        .pause(local("2025-05-20 10:00"))
        .resume(local("2025-05-22 10:00"))
        .close(local("2025-07-01 10:00"))
    )
    restored = Deadline.restore(
        original.received_at,
        original.timezone,
        original.holiday_country,
        roll_forward=original.roll_forward,
        pauses=original.pauses,
        extension=original.extension,
        closed_at=original.closed_at,
    )
    assert restored == original
    assert restored.due_on == date(2025, 8, 11)  # 30 Jul + 12 days = Mon 11 Aug


def test_restore_rejects_facts_the_rules_forbid() -> None:
    received = local("2025-04-30 09:00")
    at = local("2025-05-05 10:00")
    extension = Extension(1, "complex", at, at)
    during_a_pause = (Pause(local("2025-05-02 10:00"), local("2025-05-08 10:00")),)
    with pytest.raises(EventOrderError):
        Deadline.restore(received, STOCKHOLM, pauses=during_a_pause, extension=extension)
    overlapping = (Pause(at, local("2025-05-08 10:00")), Pause(local("2025-05-07 10:00")))
    with pytest.raises(EventOrderError):
        Deadline.restore(received, STOCKHOLM, pauses=overlapping)
    with pytest.raises(ExtensionTooLateError):
        late = local("2025-06-01 10:00")
        Deadline.restore(received, STOCKHOLM, extension=Extension(1, "complex", late, late))


@settings(deadline=None)
@given(st.data(), instants, st.sampled_from([STOCKHOLM, "UTC", "America/New_York"]))
def test_any_reachable_history_restores_to_the_same_deadline(
    data: st.DataObject, received: datetime, zone: str
) -> None:
    deadline = Deadline.start(received, zone)
    clock = received
    for _ in range(data.draw(st.integers(min_value=0, max_value=8))):
        clock += timedelta(hours=data.draw(st.integers(min_value=0, max_value=24 * 20)))
        action = data.draw(st.sampled_from(["pause", "resume", "extend", "close"]))
        try:
            if action == "pause":
                deadline = deadline.pause(clock)
            elif action == "resume":
                deadline = deadline.resume(clock)
            elif action == "extend":
                months = data.draw(st.integers(min_value=1, max_value=2))
                deadline = deadline.extend(months, "complex", clock, clock)
            else:
                deadline = deadline.close(clock)
        except DeadlineError:
            continue  # a refused change leaves the value as it was
    restored = Deadline.restore(
        deadline.received_at,
        deadline.timezone,
        deadline.holiday_country,
        roll_forward=deadline.roll_forward,
        pauses=deadline.pauses,
        extension=deadline.extension,
        closed_at=deadline.closed_at,
    )
    assert restored == deadline
    assert restored.due_on >= Deadline.start(received, zone).due_on
