"""cron.py: schedules are checked the way the Kubernetes API server checks CronJob.spec.schedule (robfig/cron's
standard parser, plus the TZ rule), with an error that names the field; manifests use it for --schedule."""

from __future__ import annotations

import pytest

from kubectl_etcdbackup.cron import MACROS, schedule_error
from kubectl_etcdbackup.k8s.manifests import ManifestError, ManifestOptions, validate_options


@pytest.mark.parametrize("schedule", [
    "*/15 * * * *", "0 * * * *", "59 23 31 12 6", "0 0 1 1 0", "0,30 8-18 * * 1-5", "5/10 * * * *",
    "1-59/2 */3 ? JAN-MAR,oct Mon-Fri", "0 0 * dec sun", "? ? ? ? ?", "0  3\t* * *", " 0 3 * * * ", *MACROS,
])
def test_accepts_what_kubernetes_accepts(schedule: str) -> None:
    assert schedule_error(schedule) is None


@pytest.mark.parametrize("schedule,field,why", [
    ("99 * * * *", "minute", "99 is out of range (allowed: 0-59)"),
    ("* 24 * * *", "hour", "24 is out of range (allowed: 0-23)"),
    ("* * 0 * *", "day of month", "0 is out of range (allowed: 1-31)"),
    ("* * 32 * *", "day of month", "32 is out of range"),
    ("* * * 13 *", "month", "13 is out of range (allowed: 1-12 or JAN-DEC)"),
    ("* * * * 7", "day of week", "7 is out of range (allowed: 0-6 or SUN-SAT)"),  # Kubernetes: 7 is not Sunday
    ("* * * foo *", "month", "value 'foo' is not a number"),
    ("* * * * mon-sun", "day of week", "range 'mon-sun' runs backwards"),
    ("*/0 * * * *", "minute", "step of '*/0' must be positive"),
    ("*/x * * * *", "minute", "step 'x' is not a number"),
    ("1/2/3 * * * *", "minute", "too many slashes"),
    ("1-2-3 * * * *", "minute", "too many hyphens"),
    ("1,,2 * * * *", "minute", "empty value"),
    ("-1 * * * *", "minute", "empty value"),
    ("* * L * *", "day of month", "value 'L' is not a number"),
])
def test_names_the_field_that_is_wrong(schedule: str, field: str, why: str) -> None:
    err = schedule_error(schedule)
    assert err is not None and err.startswith(f"{schedule!r}: {field} field ") and why in err, err


@pytest.mark.parametrize("schedule,why", [
    ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week) or a macro like @daily, found 4"),
    ("0 0 * * * *", "found 6"),
    ("", "found 0"),
    ("every minute", "found 2"),
    ("@every 1h", "unknown macro"),
    ("@Daily", "unknown macro"),
    ("CRON_TZ=Etc/UTC 0 * * * *", "CRON_TZ/TZ in the schedule is rejected by Kubernetes"),
    ("TZ=Europe/Berlin 0 * * * *", "CRON_TZ/TZ in the schedule is rejected by Kubernetes"),
])
def test_rejects_the_whole_expression(schedule: str, why: str) -> None:
    err = schedule_error(schedule)
    assert err is not None and why in err, err


def test_manifests_check_the_schedule() -> None:
    """Before: any five words of cron characters passed (99 * * * * reached the cluster)."""
    validate_options(ManifestOptions(schedule="0 */6 * * MON-FRI"))
    with pytest.raises(ManifestError) as e:
        validate_options(ManifestOptions(schedule="99 * * * *"))
    assert str(e.value) == "schedule: '99 * * * *': minute field '99': 99 is out of range (allowed: 0-59)"
