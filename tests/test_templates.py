"""The templates link by route name: no internal path typed by hand (`url("name", ...)` and
`static_url(...)` build them), and every name they use is a route of the app. Plus the
accessibility check of the browser tests (tests/browser.py): proved on a broken page, then run
on the pages and form errors the other browser tests do not open."""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import func, select

from server.settings import load_settings
from server.store.models import Appointment, Role
from server.web.app import create_app
from tests.browser import assert_accessible, chromium, chromium_with_devices
from tests.conftest import Account, Running, make_account
from tests.test_booking_pages import make_place

TEMPLATES = Path(__file__).resolve().parents[1] / "web" / "templates"

# The page config handed to the scripts (`{% set vp = ... %}`) is JSON data, not a link.
_VP_CONFIG = re.compile(r"\{%-?\s*set vp\b.*?%\}", re.DOTALL)
# A quoted string starting with one "/" then a path character: an href/action/src typed by
# hand, or a path in a Jinja expression (`back_url == "/tableau"`, `"/j/" ~ token`).
_QUOTED_PATH = re.compile(r"""["']/[\w.~%-]""")
# A path glued after an expression in an attribute: href="{{ base }}/deplacer".
_GLUED_PATH = re.compile(r"""\b(?:href|action|src|formaction|poster)="[^"]*\}\}/""")
# The route names given to url(): every string literal before its first "," or ")", so that
# url("a" if x else "b", ...) yields both.
_URL_CALL = re.compile(r"""\burl\(([^,)]*)""")
_STRING = re.compile(r"""["']([^"']+)["']""")


def literal_paths(text: str) -> list[str]:
    """Lines of a template that type an internal path by hand, as "line: text"."""
    text = _VP_CONFIG.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return [
        f"{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), start=1)
        if _QUOTED_PATH.search(line) or _GLUED_PATH.search(line)
    ]


def route_names(text: str) -> set[str]:
    """The route names a template passes to url()."""
    return {name for call in _URL_CALL.findall(text) for name in _STRING.findall(call)}


def templates() -> list[Path]:
    """Every template, partials included."""
    found = sorted(TEMPLATES.rglob("*.html"))
    assert len(found) > 40, "templates not found"
    return found


@pytest.mark.parametrize(
    "line",
    [
        '<a href="/tableau">',
        '<form method="post" action="/assistance/{{ id }}/end">',
        '<a href="{{ base }}/deplacer">',
        '<script src="/static/js/x.js"></script>',
        "{{ 'a' if back_url == '/tableau' else 'b' }}",
        '<a href="/stats.csv{{ query(table=code) }}">',
    ],
)
def test_the_scan_catches_a_path_typed_by_hand(line: str) -> None:
    assert literal_paths(line) == [f"1: {line}"]


@pytest.mark.parametrize(
    "line",
    [
        "<a href=\"{{ url('dashboard') }}\">",
        "<a href=\"{{ url('booking-slots', motif_id=m.id, query_={'a': 1}) }}\">",
        "<link href=\"{{ static_url('css/base.css') }}\">",
        '<a href="#main">',
        '<a href="tel:{{ tel }}">',
        '<rect width="10" height="10"/>',
        '<a href="{{ join_url }}">',
        '{% set vp = dict(urls={"x": "/aide/entrer"}) %}',
    ],
)
def test_the_scan_lets_route_built_links_pass(line: str) -> None:
    assert literal_paths(line) == []


def test_no_template_types_an_internal_path_by_hand() -> None:
    """href/action/src and paths in expressions come from url("name") or static_url()."""
    found = {
        str(path.relative_to(TEMPLATES)): hits
        for path in templates()
        if (hits := literal_paths(path.read_text(encoding="utf-8")))
    }
    assert found == {}


def test_every_route_name_a_template_uses_is_a_route(tmp_path: Path) -> None:
    """A misspelt name would only fail when its page renders: check them all at once."""
    settings = load_settings(
        {
            "PERMANENCE_DATA_DIR": str(tmp_path),
            "PERMANENCE_SECRET_KEY": "test-secret-key-" + "x" * 32,
        }
    )
    routes = set(create_app(settings).router.named_resources())
    used = {
        name: str(path.relative_to(TEMPLATES))
        for path in templates()
        for name in route_names(path.read_text(encoding="utf-8"))
    }
    assert len(used) > 40, used
    assert {name: where for name, where in used.items() if name not in routes} == {}


@pytest.mark.browser
async def test_the_accessibility_check_fails_on_a_broken_page_with_rule_and_target() -> None:
    """assert_accessible reports every violation with its rule, impact and element."""
    async with chromium() as browser:
        page = await browser.new_page()
        await page.set_content(
            '<html lang="fr"><title>t</title><main><img id="photo" src="data:,">'
            "<table><tr><th></th></tr><tr><td>1</td></tr></table></main></html>"
        )
        with pytest.raises(AssertionError) as failure:
            await assert_accessible(page, "broken")
        message = str(failure.value)
        assert "image-alt (critical)" in message and "#photo" in message
        assert "empty-table-header (minor)" in message
        await page.set_content(
            '<html lang="fr"><title>t</title><main><h1>Bonjour</h1></main></html>'
        )
        await assert_accessible(page, "fixed")


async def _log_in(page: Page, running: Running, account: Account) -> None:
    await page.goto(running.url("/login"))
    await page.get_by_label("Adresse e-mail").fill(account.email)
    await page.get_by_label("Mot de passe").fill(account.password)
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_url(lambda url: not url.endswith("/login"))


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_pages_and_form_errors_no_other_browser_test_opens_pass_the_check(
    running: Running,
) -> None:
    """Forms showing their errors (each tied to its field), the agenda with an appointment,
    permanences and absences, call-backs, a referrer's pages, the move page."""
    place = await make_place(running, volunteers=1)
    coordinator = await make_account(running, "nadia@example.org", Role.COORDINATOR)
    referrer = await make_account(running, "ref@example.org", Role.REFERRER)
    async with chromium_with_devices() as chrome:
        person = await chrome.page("Pixel 7")
        await person.goto(running.url("/code"))
        await person.get_by_label("Code à 8 chiffres").fill("00000000")
        await person.get_by_role("button", name="Continuer").click()
        await expect(person.locator("#code-error")).to_be_visible()
        await assert_accessible(person, "code page, wrong code")

        await person.goto(running.url(f"/rendez-vous/motif/{place.motif_id}"))
        await person.locator(".slot").first.click()
        await person.get_by_label("Votre prénom").fill("Awa")
        await person.get_by_role("button", name="Confirmer le rendez-vous").click()
        await expect(person.locator("#form-error")).to_be_visible()
        await assert_accessible(person, "booking form, no phone nor e-mail")
        await person.get_by_label("Téléphone portable").fill("06 12 34 56 78")
        await person.get_by_role("button", name="Confirmer le rendez-vous").click()
        await person.get_by_role("link", name="Choisir une autre heure").click()
        await expect(person.locator(".slot").first).to_be_visible()
        await assert_accessible(person, "move page")

        await person.goto(running.url("/rendez-vous/retrouver"))
        await person.get_by_label("Code à 8 chiffres").fill("00000000")
        await person.get_by_label("Votre numéro de téléphone").fill("06 00 00 00 00")
        await person.get_by_role("button", name="Retrouver").click()
        await expect(person.locator("#recover-error")).to_be_visible()
        await assert_accessible(person, "recover page, not found")

        await person.goto(running.url("/rappel"))
        await person.get_by_role("button", name="Être rappelé").click()
        await expect(person.locator("#phone-error")).to_be_visible()
        await assert_accessible(person, "call-back form, errors")
        await person.get_by_label("Votre numéro de téléphone").fill("06 12 34 56 78")
        await person.get_by_label("N'importe quand").check()
        await person.get_by_role("button", name="Être rappelé").click()
        await expect(person.locator("#confirmed")).to_be_visible()

        staff = await chrome.page(viewport={"width": 1280, "height": 900})
        await _log_in(staff, running, coordinator)
        # The week of the appointment just booked: on a Sunday the first free slot is in the
        # next week, which the default week view does not show.
        async with running.sessionmaker() as db:
            starts_at = await db.scalar(select(func.min(Appointment.starts_at)))
        assert starts_at is not None
        day = starts_at.astimezone(ZoneInfo(running.settings.timezone)).date().isoformat()
        volunteer_id = place.volunteers[0].id
        await staff.goto(running.url(f"/agenda?vue=semaine&jour={day}&benevole={volunteer_id}"))
        await expect(staff.locator(".appointment").first).to_be_visible()
        await assert_accessible(staff, "a team member's agenda, week")
        await staff.goto(running.url("/disponibilites"))
        await staff.get_by_role("button", name="Ajouter la permanence").click()
        await staff.get_by_label("Premier jour").fill("2030-01-02")
        await staff.get_by_label("Dernier jour").fill("2030-01-01")
        await staff.get_by_role("button", name="Ajouter l'absence").click()
        await expect(staff.locator("#permanences")).to_be_visible()
        await expect(staff.get_by_role("alert")).to_be_visible()
        await assert_accessible(staff, "permanences, absence refused")
        await staff.get_by_role("link", name="Rappels").click()
        await staff.get_by_role("link", name="Voir").first.click()
        await staff.get_by_role("button", name="Prendre", exact=True).click()
        await expect(staff.get_by_role("heading", name="Après l'appel")).to_be_visible()
        await assert_accessible(staff, "call-back taken")
        await staff.get_by_role("link", name="Mes assistances").click()
        await staff.get_by_role("button", name="Nouvelle assistance").click()
        await staff.get_by_label("Inviter un bénévole observateur").fill("personne@example.org")
        await staff.get_by_role("button", name="Inviter", exact=True).click()
        await expect(staff.locator("#observer-email-error")).to_be_visible()
        await assert_accessible(staff, "volunteer room, observer refused")

        partner = await chrome.page()
        await _log_in(partner, running, referrer)
        await assert_accessible(partner, "referrer's bookings")
        await partner.goto(running.url("/mes-jetons"))
        await partner.get_by_label("Nom (par exemple : logiciel du CCAS)").fill("Logiciel")
        await partner.get_by_role("button", name="Créer le jeton").click()
        await expect(partner.locator("#new-token")).to_be_visible()
        await assert_accessible(partner, "API tokens, one created")
