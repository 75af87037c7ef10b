"""French appointment notifications (confirmation, reminders, cancellation, waitlist) written
to the outbox in the caller's transaction; the worker sends them once it commits (OutboxWritten).

Never the free-text description: a message goes to whatever address was typed, and may sit in a
shared mailbox or on a shared phone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from server import booking, links
from server.contact import ContactKind, proven_link
from server.i18n import _, use_language
from server.ics import appointment_ics
from server.notify import outbox
from server.notify.deliver import Delivery, SmsBudget, SmsGate, deliver
from server.notify.outbox import Attachment, Channel, appointment_key
from server.settings import Settings
from server.store.models import Appointment, Association, Motif, WaitlistEntry
from server.timezones import When
from server.tokens import grouped_code

ICS_FILENAME = "rendez-vous.ics"


def manage_url(settings: Settings, manage_token: str) -> str:
    """The absolute manage link (cancel, move, calendar file)."""
    return links.BOOKING_MANAGE.url(settings, token=manage_token)


def ics_for(
    settings: Settings,
    appointment: Appointment,
    motif_name: str,
    join_url: str,
    *,
    cancelled: bool = False,
) -> str:
    """The appointment as an .ics file (no personal data beyond the times and the motif)."""
    return appointment_ics(
        uid=appointment.id,
        starts_at=appointment.starts_at,
        ends_at=appointment.ends_at,
        summary=_("Rendez-vous en visio : %(motif)s") % {"motif": motif_name},
        description=_("Ouvrez ce lien (utilisable 15 minutes avant) : %(url)s") % {"url": join_url},
        url=join_url,
        sequence=1 if cancelled else 0,
        cancelled=cancelled,
    )


async def _names(db: AsyncSession, appointment: Appointment) -> tuple[str, str]:
    motif = await db.get_one(Motif, appointment.motif_id)
    association = await db.get_one(Association, appointment.association_id)
    return motif.name, association.name


def _keys(appointment_id: str, kind: str, *parts: str) -> Callable[[Channel], str]:
    """The idempotency keys of one appointment notice, by channel (see outbox.appointment_key)."""
    return lambda channel: appointment_key(appointment_id, kind, channel, *parts)


def _join_url(settings: Settings, booked: booking.Booked, kind: ContactKind) -> str:
    """The join link as sent to the person's phone (SMS) or address (e-mail): marked, so that
    coming through it proves they read that contact (earlier sheets, server/handoff.py)."""
    appointment = booked.appointment
    return proven_link(
        booked.join_url,
        settings.secret_key.get_secret_value(),
        booked.session.id,
        kind,
        appointment.phone if kind == "phone" else appointment.email,
    )


def _details(
    settings: Settings, booked: booking.Booked, motif_name: str, association_name: str
) -> tuple[When, str]:
    appointment = booked.appointment
    when = When.of(appointment.starts_at, appointment.display_timezone)
    text = _(
        "Motif : %(motif)s\n"
        "Date : %(day)s à %(time)s (%(zone)s)\n\n"
        "Le jour venu, ouvrez ce lien (utilisable 15 minutes avant) :\n%(join)s\n\n"
        "Ou allez sur %(code_url)s et tapez le code : %(code)s\n\n"
        "Pour annuler ou changer l'heure :\n%(manage)s\n\n"
        "%(association)s"
    ) % {
        "motif": motif_name,
        "day": when.day,
        "time": when.time,
        "zone": when.zone,
        "join": _join_url(settings, booked, "email"),
        "code_url": links.CODE.url(settings),
        "code": grouped_code(booked.code),
        "manage": manage_url(settings, booked.manage_token),
        "association": association_name,
    }
    return when, text


async def appointment_booked(
    db: AsyncSession,
    settings: Settings,
    booked: booking.Booked,
    now: datetime,
    replaces: Appointment | None = None,
    *,
    sms_budget: SmsBudget | None,
) -> Delivery:
    """The confirmation (with the .ics) and the reminders still ahead, in the booking's
    transaction. After a move (`replaces`), a second .ics removes the old time from the
    person's calendar. What became of the confirmation (its SMS may be withheld). Written in
    the language the booking was made in."""
    with use_language(booked.appointment.language):
        return await _appointment_booked(db, settings, booked, now, replaces, sms_budget=sms_budget)


async def _appointment_booked(
    db: AsyncSession,
    settings: Settings,
    booked: booking.Booked,
    now: datetime,
    replaces: Appointment | None,
    *,
    sms_budget: SmsBudget | None,
) -> Delivery:
    appointment = booked.appointment
    gate = SmsGate.of(settings, sms_budget)
    motif_name, association_name = booked.motif_name, booked.association_name
    when, details = _details(settings, booked, motif_name, association_name)
    hello = _("Bonjour %(name)s,") % {"name": appointment.first_name}
    # Outside the f-strings below: Babel does not see a call inside an f-string.
    confirmed = _("Votre rendez-vous en visio est confirmé.")
    reminding = _("Nous vous rappelons votre rendez-vous en visio.")
    email_join, sms_join = (
        _join_url(settings, booked, "email"),
        _join_url(settings, booked, "phone"),
    )
    calendars = [
        Attachment(
            ICS_FILENAME,
            "text/calendar; method=PUBLISH",
            ics_for(settings, appointment, motif_name, email_join),
        )
    ]
    if replaces is not None:
        calendars.append(
            Attachment(
                "ancien-rendez-vous.ics",
                "text/calendar; method=CANCEL",
                ics_for(settings, replaces, motif_name, email_join, cancelled=True),
            )
        )
    confirmation = await deliver(
        db,
        gate=gate,
        appointment_id=appointment.id,
        key=_keys(appointment.id, "confirmation"),
        email=appointment.email,
        phone=appointment.phone,
        subject=_("Rendez-vous confirmé le %(day)s à %(time)s")
        % {"day": when.day, "time": when.time},
        body=f"{hello}\n\n{confirmed}\n\n{details}\n",
        sms=_(
            "Rendez-vous visio confirmé le %(day)s à %(time)s. "
            "Lien (15 min avant) : %(join)s Code : %(code)s. Annuler ou changer : %(manage)s"
        )
        % {
            "day": when.day,
            "time": when.time,
            "join": sms_join,
            "code": grouped_code(booked.code),
            "manage": manage_url(settings, booked.manage_token),
        },
        send_after=now,
        attachments=tuple(calendars),
    )
    stamp = appointment.starts_at.strftime("%Y%m%dT%H%MZ")
    for minutes in sorted(set(settings.reminder_minutes), reverse=True):
        send_after = appointment.starts_at - timedelta(minutes=minutes)
        if send_after <= now:
            continue  # the confirmation, just sent, says it all
        await deliver(
            db,
            gate=gate,
            appointment_id=appointment.id,
            key=_keys(appointment.id, "reminder", str(minutes), stamp),
            email=appointment.email,
            phone=appointment.phone,
            subject=_("Rappel : rendez-vous le %(day)s à %(time)s")
            % {"day": when.day, "time": when.time},
            body=f"{hello}\n\n{reminding}\n\n{details}\n",
            sms=_(
                "Rappel : rendez-vous visio le %(day)s à %(time)s. "
                "Lien (15 min avant) : %(join)s Code : %(code)s"
            )
            % {
                "day": when.day,
                "time": when.time,
                "join": sms_join,
                "code": grouped_code(booked.code),
            },
            send_after=send_after,
        )
    return confirmation


async def appointment_cancelled(
    db: AsyncSession,
    settings: Settings,
    appointment: Appointment,
    now: datetime,
    *,
    notify_person: bool = True,
    sms_budget: SmsBudget | None,
) -> None:
    """Drop pending reminders, tell the person (unless moved, in their booking's language) and
    the waitlist, in the cancel's transaction."""
    gate = SmsGate.of(settings, sms_budget)
    await outbox.cancel_for_appointment(db, appointment.id, "confirmation", "reminder")
    motif_name, association_name = await _names(db, appointment)
    if notify_person:
        with use_language(appointment.language):
            await _tell_cancelled(
                db, gate, settings, appointment, now, motif_name, association_name
            )
    await slot_freed(db, gate, settings, appointment, motif_name, now)


async def _tell_cancelled(
    db: AsyncSession,
    gate: SmsGate,
    settings: Settings,
    appointment: Appointment,
    now: datetime,
    motif_name: str,
    association_name: str,
) -> None:
    when = When.of(appointment.starts_at, appointment.display_timezone)
    book_url = links.BOOKING.url(settings, {"a": appointment.association_id})
    calendar = Attachment(
        ICS_FILENAME,
        "text/calendar; method=CANCEL",
        ics_for(settings, appointment, motif_name, book_url, cancelled=True),
    )
    hello = _("Bonjour %(name)s,") % {"name": appointment.first_name}
    text = _(
        "Votre rendez-vous du %(day)s à %(time)s (%(zone)s) est annulé.\n\n"
        "Pour prendre un autre rendez-vous :\n%(url)s\n\n%(association)s"
    ) % {
        "day": when.day,
        "time": when.time,
        "zone": when.zone,
        "url": book_url,
        "association": association_name,
    }
    await deliver(
        db,
        gate=gate,
        appointment_id=appointment.id,
        key=_keys(appointment.id, "cancellation"),
        email=appointment.email,
        phone=appointment.phone,
        subject=_("Rendez-vous annulé : %(day)s à %(time)s") % {"day": when.day, "time": when.time},
        body=f"{hello}\n\n{text}\n",
        sms=_(
            "Votre rendez-vous visio du %(day)s à %(time)s est annulé. Autre rendez-vous : %(url)s"
        )
        % {"day": when.day, "time": when.time, "url": book_url},
        send_after=now,
        attachments=(calendar,),
    )


async def slot_freed(
    db: AsyncSession,
    gate: SmsGate,
    settings: Settings,
    appointment: Appointment,
    motif_name: str,
    now: datetime,
) -> list[int]:
    """Tell the first people on the waitlist that this appointment's time is free again, each
    in the language they joined it in."""
    entries = await booking.waitlist_candidates_for_freed_slot(db, appointment, now=now)
    marked = set(await booking.mark_waitlist_notified(db, [e.id for e in entries], now))
    url = links.BOOKING_SLOTS.url(
        settings, {"a": appointment.association_id}, motif_id=str(appointment.motif_id)
    )
    for entry in entries:
        if entry.id not in marked:
            continue  # a concurrent cancellation told this person already
        with use_language(entry.language):
            await _tell_freed(db, gate, appointment, entry, motif_name, url, now)
    return sorted(marked)


async def _tell_freed(
    db: AsyncSession,
    gate: SmsGate,
    appointment: Appointment,
    entry: WaitlistEntry,
    motif_name: str,
    url: str,
    now: datetime,
) -> None:
    when = When.of(appointment.starts_at, entry.timezone)  # in the reader's own zone
    text = _(
        "Une place s'est libérée (%(motif)s) le %(day)s à %(time)s (%(zone)s).\n"
        "Elle est à la première personne qui la prend :\n%(url)s"
    ) % {"motif": motif_name, "day": when.day, "time": when.time, "zone": when.zone, "url": url}
    await deliver(
        db,
        gate=gate,
        appointment_id=appointment.id,
        key=_keys(appointment.id, "waitlist", str(entry.id)),
        email=entry.email,
        phone=entry.phone,
        subject=_("Une place s'est libérée le %(day)s") % {"day": when.day},
        body=_("Bonjour %(name)s,") % {"name": entry.first_name} + f"\n\n{text}\n",
        sms=_(
            "Une place de rendez-vous visio s'est libérée le %(day)s à %(time)s "
            "(%(zone)s) : %(url)s"
        )
        % {"day": when.day, "time": when.time, "zone": when.zone, "url": url},
        send_after=now,
    )


async def appointment_moved(
    db: AsyncSession,
    settings: Settings,
    old: Appointment,
    booked: booking.Booked,
    now: datetime,
    *,
    sms_budget: SmsBudget | None,
) -> Delivery:
    """After a reschedule: the old reminders go, a new confirmation and reminders come."""
    await appointment_cancelled(db, settings, old, now, notify_person=False, sms_budget=sms_budget)
    return await appointment_booked(db, settings, booked, now, replaces=old, sms_budget=sms_budget)
