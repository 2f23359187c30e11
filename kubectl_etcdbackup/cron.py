"""Check a CronJob schedule the way the Kubernetes API server does, so a bad --schedule fails before anything
is applied.

Kubernetes validates CronJob.spec.schedule with robfig/cron's standard parser: five whitespace-separated fields
(minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, day of week 0-6 or SUN-SAT; names are
case-insensitive; `7` is NOT Sunday there), each a comma list of `*`, `?` (same as `*`, in any field), `N`, `N-M`,
any of those with `/step` (`N/step` means `N-max/step`); or one of the macros below. A schedule containing `TZ`
(`CRON_TZ=...`, `TZ=...`) is rejected on create (kubernetes#116252, 1.29+): the CronJob's timeZone is the way.
`@every <duration>`, which the parser also takes, is undocumented for CronJobs and not accepted here.
"""

from __future__ import annotations

from dataclasses import dataclass

MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i

    def allowed(self) -> str:
        names = f" or {self.names[0].upper()}-{self.names[-1].upper()}" if self.names else ""
        return f"{self.low}-{self.high}{names}"


FIELDS = (_Field("minute", 0, 59), _Field("hour", 0, 23), _Field("day of month", 1, 31),
          _Field("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
          _Field("day of week", 0, 6, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))


class _Invalid(Exception):
    """One field part is wrong; the message says why."""


def schedule_error(schedule: str) -> str | None:
    """None if Kubernetes accepts `schedule` as CronJob.spec.schedule, else one line saying why (naming the field)."""
    if "TZ" in schedule:
        return f"{schedule!r}: CRON_TZ/TZ in the schedule is rejected by Kubernetes; use the CronJob's timeZone"
    if schedule.startswith("@"):
        return None if schedule in MACROS else f"{schedule!r}: unknown macro (use one of {', '.join(MACROS)})"
    fields = schedule.split()
    if len(fields) != len(FIELDS):
        return (f"{schedule!r}: expected 5 fields (minute hour day-of-month month day-of-week) or a macro like "
                f"@daily, found {len(fields)}")
    for field, text in zip(FIELDS, fields, strict=True):
        for part in text.split(","):
            try:
                _check_part(field, part)
            except _Invalid as e:
                return f"{schedule!r}: {field.name} field {text!r}: {e} (allowed: {field.allowed()})"
    return None


def _check_part(field: _Field, part: str) -> None:
    """One list element: `*`, `?`, `N`, `N-M`, each optionally `/step`."""
    span, *steps = part.split("/")
    if len(steps) > 1:
        raise _Invalid(f"too many slashes in {part!r}")
    if steps and _number(steps[0], "step") == 0:
        raise _Invalid(f"step of {part!r} must be positive")
    if span in ("*", "?"):
        return
    ends = span.split("-")
    if len(ends) > 2:
        raise _Invalid(f"too many hyphens in {part!r}")
    start = _value(field, ends[0])
    end = _value(field, ends[1]) if len(ends) == 2 else (field.high if steps else start)
    if start > end:
        raise _Invalid(f"range {span!r} runs backwards")


def _value(field: _Field, text: str) -> int:
    """A number within the field's bounds, or (month, day of week) a name."""
    if text.lower() in field.names:
        return field.low + field.names.index(text.lower())
    n = _number(text, "value")
    if not field.low <= n <= field.high:
        raise _Invalid(f"{n} is out of range")
    return n


def _number(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise _Invalid(f"{what} {text!r} is not a number" if text else f"empty {what}")
    return int(text)
