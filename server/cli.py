"""The `permanence` command: migrate, create-user, serve, demo, worker, purge, stats rebuild.
It loads settings and runs."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import sys
import time as clock
from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web
from alembic import command
from alembic.config import Config
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import accounts, availability, links, motifs, retention, synthetic
from server.db import make_sessionmaker
from server.settings import DEFAULT_TIMEZONE, Settings, SettingsError, load_settings
from server.stats import rebuild
from server.store.engine import make_engine
from server.store.models import Role, User, utcnow
from server.web.accesslog import RedactingAccessLogger
from server.web.app import create_app, warm_up

log = logging.getLogger("server.cli")

MIGRATIONS_DIR = Path(__file__).parent / "store" / "migrations"
DEMO_ASSOCIATION = "Association démo — Permanence numérique"
DEMO_ACCOUNTS = (
    ("benevole@demo.invalid", "Camille (bénévole démo)", Role.VOLUNTEER, "demo-benevole-2026"),
    ("observateur@demo.invalid", "Sami (bénévole démo)", Role.VOLUNTEER, "demo-observateur-2026"),
    (
        "coordination@demo.invalid",
        "Nadia (coordinatrice démo)",
        Role.COORDINATOR,
        "demo-coord-2026",
    ),
    ("referent@demo.invalid", "Julie (référente démo)", Role.REFERRER, "demo-referent-2026"),
)
DEMO_PARTNER = "CCAS démo"
MORNING, AFTERNOON = (time(9, 30), time(12)), (time(14), time(17, 30))
# Weekly permanences of the demo volunteers: (weekday, start, end, zone), Monday = 0.
DEMO_PERMANENCES: dict[str, tuple[tuple[int, time, time, str], ...]] = {
    "benevole@demo.invalid": tuple(
        (day, *hours, DEFAULT_TIMEZONE) for day in range(5) for hours in (MORNING, AFTERNOON)
    ),
    "observateur@demo.invalid": (
        *((day, *AFTERNOON, DEFAULT_TIMEZONE) for day in range(5)),
        # Saturday morning in La Réunion (05:00–08:00 in Paris in winter): shows overseas hours.
        (5, time(9), time(12), "Indian/Reunion"),
    ),
}

# Languages the demo volunteers speak besides French (their profile): Sami takes the people who
# ask for Arabic or English first in the queue, and gets their bookings.
DEMO_LANGUAGES: dict[str, tuple[str, ...]] = {"observateur@demo.invalid": ("ar", "en")}


def alembic_config(settings: Settings) -> Config:
    """Alembic configuration pointing at our migrations and the configured database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    return config


def migrate(settings: Settings) -> None:
    """Bring the database schema up to date."""
    command.upgrade(alembic_config(settings), "head")
    print("Base de données à jour.")


async def _create_user(
    settings: Settings, email: str, name: str, role: Role, password: str, association: str
) -> None:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine, settings).begin() as db:
            assoc = await accounts.get_or_create_association(db, association)
            await accounts.create_user(
                db, association=assoc, email=email, name=name, role=role, password=password
            )
    finally:
        await engine.dispose()


async def _demo(
    settings: Settings, sessions: int = 0, *, force_history: bool = False
) -> list[tuple[str, str, Role, str]]:
    engine = make_engine(settings.database_url)
    created = []
    try:
        async with make_sessionmaker(engine, settings).begin() as db:
            assoc = await accounts.get_or_create_association(db, DEMO_ASSOCIATION)
            for email, name, role, password in DEMO_ACCOUNTS:
                try:
                    async with db.begin_nested():
                        await accounts.create_user(
                            db,
                            association=assoc,
                            email=email,
                            name=name,
                            role=role,
                            password=password,
                        )
                except accounts.AccountError:
                    pass  # already there from an earlier `permanence demo`
                created.append((email, name, role, password))
            await _demo_booking_setup(db, assoc.id)
        if sessions:
            async with make_sessionmaker(engine, settings).begin() as db:
                await _demo_history(db, settings, assoc.id, sessions, force_history)
    finally:
        await engine.dispose()
    return created


async def _demo_history(
    db: AsyncSession, settings: Settings, association_id: int, sessions: int, force: bool
) -> None:
    """A year of synthetic statistics, once: a second `demo` does not add another year."""
    if await synthetic.has_history(db, association_id):
        if not force:
            print(
                "Historique synthétique déjà présent : rien n'est ajouté "
                "(--force-history pour le remplacer)."
            )
            return
        await synthetic.delete_history(db, association_id)
    started = clock.perf_counter()
    events = await synthetic.generate(db, settings, association_id, sessions)
    elapsed = clock.perf_counter() - started
    print(
        f"Historique synthétique : {_number(sessions)} assistances sur un an, "
        f"{_number(events)} événements statistiques ({elapsed:.1f} s)."
    )


async def _stats_rebuild(settings: Settings, association_id: int | None) -> int:
    engine = make_engine(settings.database_url)
    started = clock.perf_counter()

    def report(step: rebuild.Progress) -> None:
        print(
            f"{step.done}/{step.total} mois ({step.month:%Y-%m}) : {_number(step.rows)} lignes"
            f" journalières, {step.elapsed_s:.1f} s",
            flush=True,
        )

    try:
        written = await rebuild.rebuild_in_chunks(
            make_sessionmaker(engine, settings),
            ZoneInfo(settings.timezone),
            association_id,
            progress=report,
        )
    finally:
        await engine.dispose()
    print(
        f"Statistiques recalculées : {_number(written)} lignes journalières en"
        f" {clock.perf_counter() - started:.1f} s."
    )
    return written


def _number(value: int) -> str:
    """12 345, French style (narrow no-break space between thousands)."""
    return f"{value:,}".replace(",", "\u202f")


async def _purge(settings: Settings, dry_run: bool) -> retention.PurgeReport:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine, settings)() as db:
            return await retention.purge(db, settings, utcnow(), dry_run=dry_run)
    finally:
        await engine.dispose()


async def _demo_booking_setup(db: AsyncSession, association_id: int) -> None:
    """Motifs, the volunteers' permanences and languages, the referrer's partner; nothing
    twice (what was edited since is kept)."""
    await motifs.ensure_default_motifs(db, association_id)
    partner = await accounts.get_or_create_partner(db, association_id, DEMO_PARTNER)
    everyone = await db.scalars(select(User).where(User.association_id == association_id))
    for user in everyone:
        if user.role == Role.REFERRER and user.partner_id is None:
            user.partner_id = partner.id
        if user.email in DEMO_PERMANENCES:
            await _demo_permanences(db, user)
        if user.email in DEMO_LANGUAGES and not await accounts.languages_of(db, user.id):
            await accounts.set_languages(db, user, DEMO_LANGUAGES[user.email])


async def _demo_permanences(db: AsyncSession, volunteer: User) -> None:
    """The demo week of a volunteer, unless they already have permanences (kept as edited)."""
    if await availability.list_availabilities(db, volunteer.id):
        return
    for weekday, start, end, zone in DEMO_PERMANENCES[volunteer.email]:
        await availability.add_availability(
            db, volunteer, weekday=weekday, start_time=start, end_time=end, timezone=zone
        )


async def freeze_startup_heap(app: web.Application) -> None:
    """Once the server has started (and built what pages would build lazily), move everything
    alive into the garbage collector's permanent generation: modules, templates, the
    application. A full collection then scans only what was made since, instead of the whole
    heap — on a 2-core machine each one stopped every socket for 80–170 ms (BENCHMARKS.md,
    "Relay latency and the garbage collector")."""
    warm_up(app)
    gc.collect()
    gc.freeze()


def warn_about_settings(settings: Settings) -> None:
    """Say loudly, in the server's log, what a public site is missing: a recipe install that
    only writes its notifications to files would leave people without their reminders."""
    for problem in settings.notification_backend_problems():
        log.warning("Notifications will not reach anyone: %s", problem)


def print_demo(settings: Settings, logins: list[tuple[str, str, Role, str]]) -> None:
    """The URLs and demo logins, for `make run`."""
    print()
    print(f"  Site :                {links.HOME.url(settings)}")
    print(f"  Connexion bénévole :  {links.LOGIN.url(settings)}")
    print(f"  Code bénéficiaire :   {links.CODE.url(settings)}")
    print(f"  Prendre rendez-vous : {links.BOOKING.url(settings)}")
    print(f"  Aide sans rendez-vous : {links.DROP_IN.url(settings)}  (file ouverte pendant les")
    print(
        "      permanences démo : lun.–ven. 9 h 30–12 h et 14 h–17 h 30 ; sinon « Être rappelé »)"
    )
    queue, callbacks = links.QUEUE.url(settings), links.CALLBACKS.url(settings)
    print(f"  File (bénévoles) :    {queue}   Rappels : {callbacks}")
    print("  Sami (observateur@demo.invalid) parle arabe et anglais : il prend d'abord les")
    print("      personnes qui demandent un bénévole parlant leur langue (/langue/ar, puis /aide)")
    print(f"  Statistiques (coordination) : {links.STATS.url(settings)}")
    vault, trustee = links.VAULT.url(settings), links.TRUSTEE.url(settings)
    print(f"  Coffre-fort (bénéficiaire) : {vault}   Personne de confiance : {trustee}")
    mail = settings.data_dir / "mail"
    print(f"  E-mails envoyés :     {mail} (EMAIL_BACKEND={settings.email_backend})")
    for email, name, role, password in logins:
        print(f"  {name:<28} {email:<28} mot de passe : {password}  ({role.value})")
    print()


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Mot de passe : ")
    if getpass.getpass("Mot de passe (encore) : ") != first:
        raise SystemExit("Les deux mots de passe ne sont pas identiques.")
    return first


def build_parser() -> argparse.ArgumentParser:
    """Sub-commands and their options."""
    parser = argparse.ArgumentParser(prog="permanence", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply the database migrations")
    create = sub.add_parser("create-user", help="create a volunteer or coordinator account")
    create.add_argument("--email", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--association", default="Mon association")
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input instead of prompting",
    )
    serve = sub.add_parser("serve", help="run the web server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    demo = sub.add_parser("demo", help="create the demo association and accounts, print the logins")
    demo.add_argument(
        "--sessions",
        type=int,
        default=0,
        metavar="N",
        help="also generate a year of synthetic statistics history with N sessions (once)",
    )
    demo.add_argument(
        "--force-history",
        action="store_true",
        help="replace the synthetic history if there is one already",
    )
    sub.add_parser(
        "worker",
        help="run the notification worker alone (`serve` already runs one inside the server)",
    )
    purge = sub.add_parser(
        "purge",
        help="purge personal data past PERMANENCE_RETENTION_MONTHS (the worker does it daily)",
    )
    purge.add_argument("--dry-run", action="store_true", help="count only, change nothing")
    stats = sub.add_parser("stats", help="statistics upkeep")
    stats_sub = stats.add_subparsers(dest="stats_command", required=True)
    rebuild_parser = stats_sub.add_parser(
        "rebuild",
        help="recompute the statistics rollups from the events, one month per transaction"
        " (safe while the server runs, idempotent), with progress",
    )
    rebuild_parser.add_argument(
        "--association", type=int, metavar="ID", help="only this association (default: all)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `permanence` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"Configuration error: {exc}") from exc
    if args.command == "migrate":
        migrate(settings)
    elif args.command == "create-user":
        password = _read_password(args)
        try:
            asyncio.run(
                _create_user(
                    settings, args.email, args.name, Role(args.role), password, args.association
                )
            )
        except accounts.AccountError as exc:
            raise SystemExit(str(exc)) from exc
        print(f"Compte créé : {args.email} ({args.role}).")
    elif args.command == "demo":
        if args.sessions < 0:
            raise SystemExit("--sessions doit être un nombre positif.")
        logins = asyncio.run(_demo(settings, args.sessions, force_history=args.force_history))
        print_demo(settings, logins)
    elif args.command == "purge":
        report = asyncio.run(_purge(settings, args.dry_run))
        print("\n".join(retention.describe(report)))
    elif args.command == "stats":  # one sub-command: rebuild
        asyncio.run(_stats_rebuild(settings, args.association))
    elif args.command == "worker":
        from server import worker

        worker.main([])
    elif args.command == "serve":
        app = create_app(settings)  # configures logging
        warn_about_settings(settings)
        app.on_startup.append(freeze_startup_heap)
        print(f"visio-permanence sur http://{args.host}:{args.port} (public : {settings.base_url})")
        web.run_app(
            app,
            host=args.host,
            port=args.port,
            print=None,
            access_log_class=RedactingAccessLogger,
        )


if __name__ == "__main__":
    main()
