"""Hypothesis-generated events sent by real Socket.IO clients on the `/queue` namespace, from a
volunteer and from a waiting page: every one is answered through its acknowledgement as
PROTOCOL.md says (`{"ok": true, …}` or `{"ok": false, "code", "message"}` with a documented
code), none goes unanswered, and afterwards the queue still works for everyone. SQLite and
PostgreSQL (where a NUL character in a text is refused by the database itself).

Hypothesis only draws the events (see tests/test_signaling_fuzz.py); replay a failing run with
FUZZ_SEED=<seed>.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import aiohttp
import socketio
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from signaling.dropin import NAMESPACE
from tests.conftest import Account, Running, browser_session, make_account
from tests.peers import EVENT_TIMEOUT, SignalPeer
from tests.test_dropin import (
    join_by_http,
    join_directly,
    open_all_week,
    volunteer_peer,
    waiting_peer,
)
from tests.test_signaling_fuzz import DEEP, HUGE, JSON_LIKE, SCALARS, nested

MAX_EXAMPLES = 120
QUEUE_EVENTS = ["take_next", "take", "requeue", "transfer", "gone", "leave"]
# PROTOCOL.md's codes, and those of the queue's domain refusals (server/dropin/places.py).
CODES = {
    "malformed",
    "unknown_event",
    "forbidden",
    "rate_limited",
    "empty",
    "taken",
    "reserved",
    "not_found",
    "not_yours",
    "no_target",
    "closed",
    "ended",
    "full",
}

EVENT_NAMES = st.one_of(
    st.sampled_from([*QUEUE_EVENTS, "connect", "disconnect", "queue", "position", "turn", ""]),
    st.text(max_size=40),
)


def payloads(entry_ids: list[str], user_ids: list[int]) -> st.SearchStrategy[Any]:
    """Near-valid queue payloads around the real ids, and garbage."""
    ids = st.one_of(
        st.sampled_from(entry_ids),
        st.text(max_size=40),
        st.sampled_from(["", "\x00", "a\x00b", "²", "x" * 37, "%", "'; DROP TABLE x;--"]),
        SCALARS,
    )
    volunteer_ids = st.one_of(
        st.sampled_from(user_ids),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from(["1", "²", "٣", 1.0, 1.5, True, float("nan"), None]),
        SCALARS,
    )
    near_valid = st.fixed_dictionaries(
        {},
        optional={
            "entry_id": ids,
            "volunteer_id": volunteer_ids,
            "reason": SCALARS,
        },
    )
    return st.one_of(near_valid, JSON_LIKE, HUGE, DEEP)


def generate_barrage(
    run_seed: int, entry_ids: list[str], user_ids: list[int]
) -> list[tuple[str, str, tuple[Any, ...]]]:
    """(side, event, arguments), drawn before any is sent."""
    drawn: list[tuple[str, str, tuple[Any, ...]]] = []
    one = payloads(entry_ids, user_ids)

    @seed(run_seed)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(
        side=st.sampled_from(["volunteer", "volunteer", "waiting"]),
        event=EVENT_NAMES,
        args=st.one_of(
            one.map(lambda payload: (payload,)),
            st.just(()),
            # Several arguments: small ones (three huge ones would pass the 100 KiB packet
            # limit, where engine.io closes the transport instead of answering).
            st.lists(JSON_LIKE, min_size=2, max_size=3).map(tuple),
        ),
    )
    def collect(side: str, event: str, args: tuple[Any, ...]) -> None:
        drawn.append((side, event, args))

    collect()
    return drawn


def fixed_examples(
    entry_ids: list[str], user_ids: list[int]
) -> list[tuple[str, str, tuple[Any, ...]]]:
    """A few hand-picked events every run sends, whatever the seed."""
    entry = entry_ids[0]
    return [
        ("volunteer", "take", ({"entry_id": "\x00"},)),
        ("volunteer", "take", ({"entry_id": "a\x00" * 10},)),
        ("volunteer", "gone", ({"entry_id": entry_ids[-1]},)),  # another association's
        ("volunteer", "transfer", ({"entry_id": entry, "volunteer_id": 2**70},)),
        ("volunteer", "transfer", ({"entry_id": entry, "volunteer_id": "²"},)),
        ("volunteer", "transfer", ({"entry_id": entry, "volunteer_id": user_ids[-1]},)),
        ("volunteer", "requeue", ({"entry_id": entry},)),
        ("volunteer", "take", (nested(400, use_dict=True),)),
        ("volunteer", "disconnect", ("transport close",)),
        ("waiting", "take_next", ({},)),
        ("waiting", "leave", (None, None)),
    ]


def check_answer(event: str, args: tuple[Any, ...], answer: Any, replay: str) -> None:
    """An acknowledgement as PROTOCOL.md describes it."""
    where = f"{event!r} {str(args)[:300]} → {answer!r:.300} {replay}"
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), where
    if answer["ok"]:
        return
    if event == "leave" and answer == {"ok": False}:
        return  # `leave` of a place already closed: nothing to give up
    assert answer.get("code") in CODES, where
    assert isinstance(answer.get("message"), str) and answer["message"], where


async def test_random_queue_events_are_answered_and_never_break_the_queue(
    running: Running, volunteer: Account
) -> None:
    await open_all_week(running, volunteer)
    other = await make_account(running, "yanis@example.org")
    outsider = await make_account(running, "zoe@example.org", association="Asso B")
    await open_all_week(running, outsider)
    association_id = volunteer.user.association_id
    entry_ids = await join_directly(running, association_id, 6)
    entry_ids += await join_directly(running, outsider.user.association_id, 1)
    user_ids = [volunteer.user.id, other.user.id, outsider.user.id]
    run_seed = int(os.environ.get("FUZZ_SEED", random.randrange(2**32)))
    replay = f"(replay with FUZZ_SEED={run_seed})"

    person = await browser_session()
    closing: list[SignalPeer | aiohttp.ClientSession] = [person]
    try:
        assert (await join_by_http(running, person)).status == 303
        page = await waiting_peer(running, person)
        closing.append(page)
        vol, vol_http = await volunteer_peer(running, volunteer)
        closing += [vol, vol_http]
        peers = {"volunteer": vol, "waiting": page}
        barrage = fixed_examples(entry_ids, user_ids) + generate_barrage(
            run_seed, entry_ids, user_ids
        )
        for side, event, args in barrage:
            peer = peers[side]
            if not peer.client.connected:
                continue  # the waiting page is gone (taken, or replaced): the volunteer goes on
            try:
                answer = await peer.client.call(
                    event, args, namespace=NAMESPACE, timeout=EVENT_TIMEOUT
                )
            except socketio.exceptions.TimeoutError:
                raise AssertionError(f"no answer to {event!r} {str(args)[:300]} {replay}") from None
            check_answer(event, args, answer, replay)

        # The queue still works: a fresh volunteer connects and gets the list, a newcomer
        # joins and gets their position, and the volunteer takes someone.
        fresh, fresh_http = await volunteer_peer(running, other)
        closing += [fresh, fresh_http]
        assert "waiting" in await fresh.expect("queue")
        newcomer = await browser_session()
        closing.append(newcomer)
        assert (await join_by_http(running, newcomer)).status == 303
        newcomer_page = await waiting_peer(running, newcomer)
        closing.append(newcomer_page)
        assert "position" in await newcomer_page.expect("position")
        taken = await fresh.call("take_next", {})
        assert taken["ok"] is True, (taken, replay)
        async with newcomer.get(running.url("/healthz")) as resp:
            assert resp.status == 200
    finally:
        for item in reversed(closing):
            await item.close()
        await asyncio.sleep(0)
