"""iCalendar (.ics) files for appointments, so people can add them to their phone's calendar."""

from __future__ import annotations

from datetime import datetime

from icalendar import Calendar, Event

from server.store.models import utcnow

PRODID = "-//visio-permanence//Permanence numerique//FR"


def appointment_ics(
    *,
    uid: str,
    starts_at: datetime,
    ends_at: datetime,
    summary: str,
    description: str,
    url: str,
    sequence: int = 0,
    cancelled: bool = False,
) -> str:
    """One VEVENT in UTC; a cancellation is the same UID with METHOD:CANCEL."""
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", "CANCEL" if cancelled else "PUBLISH")
    event = Event()
    event.add("uid", f"{uid}@visio-permanence")
    event.add("dtstamp", utcnow())
    event.add("dtstart", starts_at)
    event.add("dtend", ends_at)
    event.add("summary", summary)
    event.add("description", description)
    event.add("url", url)
    event.add("sequence", sequence)
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    calendar.add_component(event)
    ical: bytes = calendar.to_ical()
    return ical.decode()
