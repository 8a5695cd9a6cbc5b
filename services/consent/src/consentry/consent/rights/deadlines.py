"""The deadline of a rights request, GDPR Art. 12(3) (pure: no I/O, no clock).

Rules (docs/rights-requests.md explains them with examples):

- **Due date.** The receipt instant is read as a date in the tenant's time zone; the request is
  due one calendar month later, on the same day of the month, or the month's last day when it
  has no such day (31 January -> 28 or 29 February). The deadline is the *end* of the due day:
  `due_at` is the first instant of the next local day (exclusive).
- **Weekends and holidays** (Regulation 1182/71, Art. 3(4); Sweden's lag 1930:173 says the
  same): a deadline that falls on a day that is not a working day of the tenant's holiday
  country ends with the next working day. On by default; `roll_forward=False` turns it off.
- **Pauses.** While identity verification awaits the subject the clock stops. A pause moves the
  deadline by the calendar days it spans, counted as local dates (resume day minus pause day):
  a pause and resume on the same day cost the subject nothing. Pauses add up. A request cannot
  be paused once it is overdue, nor extended while paused (the first month's end is unknown).
- **Extension.** Once, by one or two months counted by month arithmetic from the original due
  date (before the weekend roll), with a non-blank reason, and only if both the notice to the
  requester and the decision come before the end of the first month (pauses included).

The rolled date is computed once, at the end: unrolled = original + extension months + paused
days, so the result does not depend on the order in which pauses and the extension happened.

A `Deadline` holds only the facts a database stores (receipt, calendar, pauses, extension,
closing); everything else is derived. `Deadline.restore(...)` rebuilds one from those facts
and checks them again.
"""

from __future__ import annotations

import calendar
import dataclasses
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from consentry.consent.policies import workdays

MAX_EXTENSION_MONTHS = 2
DUE_SOON_DAYS = 5


class DeadlineError(ValueError):
    """Base of every error of the deadline engine."""


class InvalidCalendarError(DeadlineError):
    """The time zone is not a known IANA name, or the holiday country has no calendar."""


class NaiveDatetimeError(DeadlineError):
    """A timestamp has no time zone: instants must be aware."""


class EventOrderError(DeadlineError):
    """A fact is dated before a fact recorded earlier (or a notice after its decision)."""


class ClosedError(DeadlineError):
    """The request is completed or rejected: its deadline no longer changes."""


class PauseError(DeadlineError):
    """Base of the pause and resume errors."""


class AlreadyPausedError(PauseError):
    """A pause was requested while the clock is already paused."""


class NotPausedError(PauseError):
    """A resume was requested while the clock runs."""


class PauseAfterDueError(PauseError):
    """The request is overdue: stopping the clock cannot undo that."""


class ExtensionError(DeadlineError):
    """Base of the extension errors."""


class AlreadyExtendedError(ExtensionError):
    """Art. 12(3) allows one extension only."""


class ExtensionLengthError(ExtensionError):
    """An extension must be of 1 or 2 months."""


class ExtensionReasonMissingError(ExtensionError):
    """An extension needs a recorded (non-blank) reason."""


class ExtensionTooLateError(ExtensionError):
    """The notice or the decision comes at or after the end of the first month."""


class ExtendedWhilePausedError(ExtensionError):
    """The clock is paused: the first month's end is not known yet."""


class DeadlineStatus(StrEnum):
    """Where a request stands against its deadline at an instant."""

    OVERDUE = "overdue"
    DUE_SOON = "due_soon"
    ON_TRACK = "on_track"
    PAUSED = "paused"
    CLOSED = "closed"


def add_months(day: date, months: int) -> date:
    """`day` plus `months` calendar months, clamped to the target month's last day."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def start_of_day(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of local `day` in `zone`, in UTC.

    Where midnight does not exist (a DST gap at 00:00) `fold=0` takes the offset from before
    the gap, which is exactly the instant the day starts; where it is repeated, the first one.
    """
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(f"{name} must be timezone-aware")


@dataclass(frozen=True, slots=True)
class Pause:
    """One stop of the clock; `resumed_at` is None while it lasts."""

    paused_at: datetime
    resumed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Extension:
    """The one extension: its length, reason, when the requester was told, when decided."""

    months: int
    reason: str
    notice_sent_at: datetime
    extended_at: datetime


@dataclass(frozen=True, slots=True)
class Deadline:
    """The deadline of one rights request, as stored facts plus what follows from them.

    Build one with `start` (a new request) or `restore` (stored facts); change it with `pause`,
    `resume`, `extend` and `close`, which return a new value and never change this one.
    """

    received_at: datetime
    timezone: str
    holiday_country: str = workdays.DEFAULT_COUNTRY
    roll_forward: bool = True
    pauses: tuple[Pause, ...] = ()
    extension: Extension | None = None
    closed_at: datetime | None = None

    def __post_init__(self) -> None:
        _require_aware("received_at", self.received_at)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidCalendarError(f"unknown time zone {self.timezone!r}") from exc
        if self.roll_forward and not workdays.is_supported_country(self.holiday_country):
            raise InvalidCalendarError(f"no holiday calendar for {self.holiday_country!r}")

    @classmethod
    def start(
        cls,
        received_at: datetime,
        timezone: str,
        holiday_country: str = workdays.DEFAULT_COUNTRY,
        *,
        roll_forward: bool = True,
    ) -> Deadline:
        """The deadline of a request received at `received_at` by a tenant in `timezone`."""
        return cls(received_at, timezone, holiday_country, roll_forward)

    @classmethod
    def restore(
        cls,
        received_at: datetime,
        timezone: str,
        holiday_country: str = workdays.DEFAULT_COUNTRY,
        *,
        roll_forward: bool = True,
        pauses: tuple[Pause, ...] = (),
        extension: Extension | None = None,
        closed_at: datetime | None = None,
    ) -> Deadline:
        """Rebuild a deadline from stored facts, replaying (and so re-checking) each one.

        The extension is replayed after every pause that started before it: it was decided
        while the clock ran, so those pauses had ended by then.
        """
        deadline = cls.start(received_at, timezone, holiday_country, roll_forward=roll_forward)
        pending = extension
        for pause in pauses:
            if pending is not None and pause.paused_at >= pending.extended_at:
                deadline = deadline._apply_extension(pending)
                pending = None
            deadline = deadline.pause(pause.paused_at)
            if pause.resumed_at is not None:
                deadline = deadline.resume(pause.resumed_at)
        if pending is not None:
            deadline = deadline._apply_extension(pending)
        if closed_at is not None:
            deadline = deadline.close(closed_at)
        return deadline

    # Derived values ---------------------------------------------------------------------

    @property
    def zone(self) -> ZoneInfo:
        """The tenant's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def received_on(self) -> date:
        """The local date of receipt (the day the period runs from)."""
        return self.received_at.astimezone(self.zone).date()

    @property
    def is_paused(self) -> bool:
        """Whether the clock is stopped now (the last pause has not been resumed)."""
        return bool(self.pauses) and self.pauses[-1].resumed_at is None

    @property
    def paused_days(self) -> int:
        """Calendar days the ended pauses add (local resume date minus local pause date)."""
        zone = self.zone
        return sum(
            (p.resumed_at.astimezone(zone).date() - p.paused_at.astimezone(zone).date()).days
            for p in self.pauses
            if p.resumed_at is not None
        )

    @property
    def nominal_due_on(self) -> date:
        """One calendar month after receipt: no pauses, no extension, no weekend roll."""
        return add_months(self.received_on, 1)

    @property
    def unrolled_due_on(self) -> date:
        """The due date before the weekend/holiday roll: extension months, then paused days."""
        months = self.extension.months if self.extension is not None else 0
        return add_months(self.nominal_due_on, months) + timedelta(days=self.paused_days)

    @property
    def original_due_on(self) -> date:
        """The end of the first month (pauses so far included, rolled): the notice limit."""
        return self._roll(self.nominal_due_on + timedelta(days=self.paused_days))

    @property
    def original_due_at(self) -> datetime:
        """The instant the first month ends; an extension notice must come before it."""
        return start_of_day(self.original_due_on + timedelta(days=1), self.zone)

    @property
    def due_on(self) -> date:
        """The last local day the request may be answered on."""
        return self._roll(self.unrolled_due_on)

    @property
    def due_at(self) -> datetime:
        """The instant the deadline passes (UTC): the start of the day after `due_on`."""
        return start_of_day(self.due_on + timedelta(days=1), self.zone)

    def days_left(self, now: datetime) -> int:
        """Local calendar days from `now`'s date to `due_on` (0 on the due day, < 0 after)."""
        _require_aware("now", now)
        return (self.due_on - now.astimezone(self.zone).date()).days

    def status(self, now: datetime, soon_days: int = DUE_SOON_DAYS) -> DeadlineStatus:
        """Classify at `now`: closed, paused, overdue, due soon (<= `soon_days` left), on track.

        The recorded facts are taken as they are: `now` is expected to be at or after them.
        """
        if soon_days < 0:
            raise ValueError("soon_days must not be negative")
        _require_aware("now", now)
        if self.closed_at is not None:
            return DeadlineStatus.CLOSED
        if self.is_paused:
            return DeadlineStatus.PAUSED
        if now >= self.due_at:
            return DeadlineStatus.OVERDUE
        if self.days_left(now) <= soon_days:
            return DeadlineStatus.DUE_SOON
        return DeadlineStatus.ON_TRACK

    # Changes ----------------------------------------------------------------------------

    def pause(self, at: datetime) -> Deadline:
        """Stop the clock at `at` (identity verification awaits the subject)."""
        self._check_change("at", at)
        if self.is_paused:
            raise AlreadyPausedError("the clock is already paused")
        if at >= self.due_at:
            raise PauseAfterDueError("the request is overdue; the clock cannot be stopped")
        return dataclasses.replace(self, pauses=(*self.pauses, Pause(at)))

    def resume(self, at: datetime) -> Deadline:
        """Restart the clock at `at`; the deadline moves by the days the pause spanned."""
        self._check_change("at", at)
        if not self.is_paused:
            raise NotPausedError("the clock is not paused")
        ended = Pause(self.pauses[-1].paused_at, at)
        return dataclasses.replace(self, pauses=(*self.pauses[:-1], ended))

    def extend(self, months: int, reason: str, notice_sent_at: datetime, at: datetime) -> Deadline:
        """Extend once by `months` (1 or 2); the requester was told at `notice_sent_at`."""
        return self._apply_extension(Extension(months, reason, notice_sent_at, at))

    def close(self, at: datetime) -> Deadline:
        """Record that the request was completed or rejected at `at`."""
        self._check_change("at", at)
        return dataclasses.replace(self, closed_at=at)

    # Internals --------------------------------------------------------------------------

    def _apply_extension(self, extension: Extension) -> Deadline:
        self._check_change("extended_at", extension.extended_at)
        if self.is_paused:
            raise ExtendedWhilePausedError("the clock is paused; resume it before extending")
        if self.extension is not None:
            raise AlreadyExtendedError("the request has already been extended once")
        if not 1 <= extension.months <= MAX_EXTENSION_MONTHS:
            raise ExtensionLengthError(
                f"an extension is of 1 to {MAX_EXTENSION_MONTHS} months, not {extension.months}"
            )
        if not extension.reason.strip():
            raise ExtensionReasonMissingError("an extension needs a reason")
        _require_aware("notice_sent_at", extension.notice_sent_at)
        limit = self.original_due_at
        if extension.notice_sent_at >= limit or extension.extended_at >= limit:
            raise ExtensionTooLateError(
                f"the first month ended at {limit.isoformat()}; "
                "the extension and its notice must come before"
            )
        if not self.received_at <= extension.notice_sent_at <= extension.extended_at:
            raise EventOrderError("the notice must be sent after receipt and by the decision")
        return dataclasses.replace(self, extension=extension)

    def _check_change(self, name: str, at: datetime) -> None:
        _require_aware(name, at)
        if self.closed_at is not None:
            raise ClosedError("the request is closed")
        if at < self._last_fact_at():
            raise EventOrderError(f"{name} is before a fact already recorded")

    def _last_fact_at(self) -> datetime:
        facts = [self.received_at]
        for pause in self.pauses:
            facts.append(pause.paused_at)
            if pause.resumed_at is not None:
                facts.append(pause.resumed_at)
        if self.extension is not None:
            facts.append(self.extension.extended_at)
        return max(facts)

    def _roll(self, day: date) -> date:
        if not self.roll_forward:
            return day
        while not workdays.is_working_day(day, self.holiday_country):
            day += timedelta(days=1)
        return day
