"""Contact details people type: phones in E.164 (overseas regions guessed), strict e-mail
addresses, first names, free text and needs, each refusal naming its field in French."""

from __future__ import annotations

import pytest

from server.contact import (
    ContactError,
    ContactInfo,
    ContactKind,
    Needs,
    can_receive_sms,
    normalize_email,
    normalize_phone,
    phone_region,
    proven_contact,
    proven_link,
)
from server.settings import DEFAULT_PHONE_REGIONS

PHONES = [
    # (typed, zone, E.164 or None when refused)
    ("06 12 34 56 78", None, "+33612345678"),
    ("06.12.34.56.78", None, "+33612345678"),
    ("+33 6 12 34 56 78", None, "+33612345678"),
    ("0033 6 12 34 56 78", None, "+33612345678"),
    ("+33 (0)6 12 34 56 78", None, "+33612345678"),
    ("(+33) 6 12 34 56 78", None, "+33612345678"),
    ("06\u00a012\u00a034\u00a056\u00a078", None, "+33612345678"),  # copied, no-break spaces
    ("01 23 45 67 89", None, "+33123456789"),
    ("0690 00 12 34", None, "+590690001234"),  # Guadeloupe mobile, national form
    ("0590 20 12 34", None, "+590590201234"),  # Guadeloupe landline
    ("0696 20 12 34", None, "+596696201234"),  # Martinique
    ("0694 20 12 34", None, "+594694201234"),  # Guyane
    ("0692 12 34 56", None, "+262692123456"),  # La Réunion
    ("0262 16 12 34", None, "+262262161234"),
    ("0639 01 23 45", None, "+262639012345"),  # Mayotte (country code +262)
    ("0269 60 12 34", None, "+262269601234"),
    ("+590 690 00 12 34", None, "+590690001234"),
    ("+596 696 20 12 34", None, "+596696201234"),
    ("+594 694 20 12 34", None, "+594694201234"),
    ("+262 692 12 34 56", None, "+262692123456"),
    ("+269 321 23 45", None, "+2693212345"),  # Comores, common in Mayotte
    ("+33 690 00 12 34", None, "+590690001234"),  # overseas number written with +33
    ("+33 2 62 16 12 34", None, "+262262161234"),
    ("75 12 34", "Pacific/Noumea", "+687751234"),
    ("87 12 34 56", "Pacific/Tahiti", "+68987123456"),
    ("06 12 34", None, None),  # too short
    ("06 12 34 56 78 90 12", None, None),  # too long
    ("06 12 34 AB CD", None, None),  # letters (phonenumbers would read a keypad)
    ("zéro six", None, None),
    ("++33612345678", None, None),
    ("06 12 34 56 7+8", None, None),
    ("0899 12 34 56", None, None),  # premium rate
    ("0800 12 34 56", None, None),  # free number, not a person
    ("", None, None),
]


@pytest.mark.parametrize(("typed", "zone_name", "expected"), PHONES)
def test_phone_numbers_are_checked_and_written_in_e164(
    typed: str, zone_name: str | None, expected: str | None
) -> None:
    if expected is None:
        with pytest.raises(ContactError, match="numéro de téléphone") as caught:
            normalize_phone(typed, zone_name)
        assert caught.value.code == "invalid_phone" and caught.value.field == "phone"
    else:
        assert normalize_phone(typed, zone_name) == expected
        assert normalize_phone(expected) == expected  # normalising twice changes nothing


def test_only_mobiles_can_receive_sms() -> None:
    assert can_receive_sms("+33612345678") and can_receive_sms("+590690001234")
    assert not can_receive_sms("+33123456789") and not can_receive_sms("not a number")


EMAILS = [
    ("awa@example.org", "awa@example.org"),
    (" Awa.Diallo+rdv@Example.ORG ", "Awa.Diallo+rdv@example.org"),
    ("jose@exämple.fr", "jose@xn--exmple-cua.fr"),
    ("awa", None),
    ("awa@", None),
    ("@example.org", None),
    ("awa@example", None),
    ("awa@@example.org", None),
    ("awa@exa mple.org", None),
    ("a b@example.org", None),
    ("awa.@example.org", None),
    ("awa@example..org", None),
    ("awa@-example.org", None),
    ("awa@example.c", None),
    ("awa@127.0.0.1", None),
    ("x" * 65 + "@example.org", None),
    ("awa@example.org\nBcc: everyone@example.org", None),
    ("<awa@example.org>", None),
]


@pytest.mark.parametrize(("typed", "expected"), EMAILS)
def test_email_addresses_are_checked(typed: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ContactError, match="adresse e-mail") as caught:
            normalize_email(typed)
        assert caught.value.code == "invalid_email"
    else:
        assert normalize_email(typed) == expected


def test_contact_details_are_checked_with_a_french_message_per_field() -> None:
    cases: list[tuple[ContactInfo, str]] = [
        (ContactInfo(""), "invalid_first_name"),
        (ContactInfo("A" * 41, "0612345678"), "invalid_first_name"),
        (ContactInfo("Awa 2", "0612345678"), "invalid_first_name"),
        (ContactInfo("https://spam.example", "0612345678"), "invalid_first_name"),
        (ContactInfo("Awa\x00", "0612345678"), "invalid_first_name"),
        (ContactInfo("Awa"), "missing_contact"),
        (ContactInfo("Awa", " ", " "), "missing_contact"),
        (ContactInfo("Awa", "0612345678", postal_code="7501"), "invalid_postal_code"),
        (ContactInfo("Awa", "0612345678", postal_code="75O11"), "invalid_postal_code"),
        (ContactInfo("Awa", "0612345678", description="x" * 1001), "description_too_long"),
        (ContactInfo("Awa", "0612345678", description="a\x1bb"), "invalid_description"),
        (ContactInfo("Awa", "0612345678", needs=Needs("x" * 41)), "invalid_needs"),
        (ContactInfo("Awa", "0612345678", timezone="Mars/Olympus"), "invalid_timezone"),
    ]
    for contact, code in cases:
        with pytest.raises(ContactError) as caught:
            contact.validated()
        assert caught.value.code == code, contact
        assert caught.value.message and caught.value.field

    fine = ContactInfo(
        "N’Diaye-Marie J.",
        email="a@b.fr",
        postal_code=" 97600 ",
        description="x" * 1000,
        needs=Needs(first_time_computer=True),
    ).validated()
    assert fine.first_name == "N’Diaye-Marie J." and fine.phone is None
    assert fine.postal_code == "97600" and fine.timezone == "Europe/Paris"
    assert fine.needs.as_json()["first_time_computer"] is True
    assert fine.validated() == fine


@pytest.mark.parametrize(
    ("typed", "region"),
    [
        ("06 12 34 56 78", "FR"),
        ("0690 00 12 34", "GP"),
        ("0696 20 12 34", "MQ"),
        ("0694 20 12 34", "GF"),
        ("0692 12 34 56", "RE"),
        ("0639 01 23 45", "YT"),
        ("+508 55 12 34", "PM"),
        ("+590 690 10 12 34", "GP"),
        ("+681 72 12 34", "WF"),
        ("87 12 34 56", "PF"),
        ("75 12 34", "NC"),
    ],
)
def test_numbers_of_france_and_every_overseas_region_are_accepted(typed: str, region: str) -> None:
    zone = {"PF": "Pacific/Tahiti", "NC": "Pacific/Noumea", "WF": "Pacific/Wallis"}.get(region)
    contact = ContactInfo("Awa", typed, "a@b.fr", timezone=zone).validated()
    assert contact.phone is not None and phone_region(contact.phone) in DEFAULT_PHONE_REGIONS


@pytest.mark.parametrize(
    "typed", ["+44 7911 123456", "+1 202 555 0143", "+269 321 23 45", "+216 20 123 456"]
)
def test_numbers_outside_the_allowed_regions_are_refused_in_plain_french(typed: str) -> None:
    for contact in (ContactInfo("Awa", typed), ContactInfo("Awa", typed, "a@b.fr")):
        with pytest.raises(ContactError, match="pas un numéro de France") as caught:
            contact.validated()
        assert caught.value.code == "phone_outside_france" and caught.value.field == "phone"
    # A deployment that allows a region (PHONE_REGIONS) takes its numbers.
    e164 = normalize_phone(typed)
    region = phone_region(e164)
    assert region is not None and region not in DEFAULT_PHONE_REGIONS
    allowed = ContactInfo("Awa", typed).validated(regions=(*DEFAULT_PHONE_REGIONS, region))
    assert allowed.phone == e164


def test_only_the_mark_sent_to_a_contact_proves_it() -> None:
    secret, session = "s" * 40, "session-1"
    sms = proven_link("https://x.fr/j/T", secret, session, "phone", "+33612345678")
    mark = sms.split("?v=")[1]
    contacts: list[tuple[ContactKind, str | None]] = [
        ("phone", "+33612345678"),
        ("email", "awa@example.org"),
    ]
    assert proven_contact(secret, session, mark, contacts) == ("phone", "+33612345678")
    email = proven_link("https://x.fr/j/T", secret, session, "email", "awa@example.org")
    assert proven_contact(secret, session, email.split("?v=")[1], contacts)[0] == "email"  # type: ignore[index]
    assert proven_contact(secret, "session-2", mark, contacts) is None  # another session
    assert proven_contact("t" * 40, session, mark, contacts) is None  # another secret
    assert proven_contact(secret, session, mark, [("phone", "+33698765432")]) is None
    assert proven_contact(secret, session, "", contacts) is None
    assert proven_link("https://x.fr/j/T", secret, session, "phone", None) == "https://x.fr/j/T"
