"""The .ics attached to confirmations parses back with the right times and link."""

from __future__ import annotations

from datetime import UTC, datetime

from icalendar import Calendar

from server.ics import appointment_ics


def test_appointment_ics_round_trips_with_utc_times_and_the_join_link() -> None:
    start = datetime(2027, 3, 30, 12, 0, tzinfo=UTC)
    end = datetime(2027, 3, 30, 13, 0, tzinfo=UTC)
    text = appointment_ics(
        uid="abc",
        starts_at=start,
        ends_at=end,
        summary="Rendez-vous en visio : CAF",
        description="Ouvrez le lien 15 minutes avant.",
        url="https://permanence.example.org/j/token",
    )
    event = next(iter(Calendar.from_ical(text).walk("VEVENT")))
    assert event.decoded("dtstart") == start
    assert event.decoded("dtend") == end
    assert str(event["summary"]) == "Rendez-vous en visio : CAF"
    assert str(event["url"]) == "https://permanence.example.org/j/token"
    assert str(event["status"]) == "CONFIRMED"


def test_a_cancellation_keeps_the_uid_and_says_cancel() -> None:
    start = datetime(2027, 10, 31, 13, 0, tzinfo=UTC)
    text = appointment_ics(
        uid="abc",
        starts_at=start,
        ends_at=start,
        summary="x",
        description="y",
        url="https://e.org/",
        sequence=1,
        cancelled=True,
    )
    calendar = Calendar.from_ical(text)
    event = next(iter(calendar.walk("VEVENT")))
    assert str(calendar["method"]) == "CANCEL"
    assert str(event["uid"]) == "abc@visio-permanence"
    assert str(event["status"]) == "CANCELLED"
