"""Hypothesis-generated garbage sent by a real connected client never hurts the `/assist` server:
each event gets the error PROTOCOL.md promises (or is a valid message handled as such), nothing
invalid reaches the other peer, a flooder is cut off, and fresh peers still connect and relay."""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from signaling.messages import (
    CLIENT_EVENTS,
    MAX_PAYLOAD_SIZE,
    Answer,
    Bye,
    Candidate,
    End,
    MessageError,
    Offer,
    StateUpdate,
    decode,
)
from tests.conftest import Account, Running, create_assistance, login
from tests.peers import (
    NAMESPACE,
    PeerSet,
    SignalPeer,
    connect_beneficiary,
    connect_volunteer,
)

# What is fuzzed is the namespace's validation, not the database: SQLite only keeps it fast.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"])

MAX_EXAMPLES = 150
ACK_TIMEOUT = 5.0
# The server refuses engine.io packets over 100 KiB by closing the transport; stay below it so
# that the huge payloads exercise the namespace's own size limits.
HUGE_MAX = 95_000

# --- strategies ---------------------------------------------------------------------------------

EVENT_NAMES = st.one_of(
    st.sampled_from(
        [
            *sorted(CLIENT_EVENTS),
            "connect",
            "disconnect",
            "connect_error",
            "message",
            "welcome",
            "error",
            "ended",
            "peer-left",
            "",
        ]
    ),
    st.text(max_size=60),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and ±Infinity included: Python's JSON carries them
    st.text(max_size=50),
    st.binary(max_size=64),  # becomes a Socket.IO binary attachment
)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)
FIELD_NAMES = ["to", "sdp", "restart", "candidate", "sdpMid", "sdpMLineIndex", "state", "media"]
FIELD_VALUES = st.one_of(
    st.sampled_from(
        ["sharing", "paused", "waiting", "stopped", "screen", "camera", "photo", "left", "", "0"]
    ),
    st.integers(min_value=-2, max_value=70),
    SCALARS,
    JSON_LIKE,
)
NEAR_VALID = st.dictionaries(st.sampled_from([*FIELD_NAMES, "reason"]), FIELD_VALUES, max_size=5)
HUGE = st.one_of(
    st.integers(MAX_PAYLOAD_SIZE, HUGE_MAX).map(lambda n: {"to": "someone", "sdp": "v" * n}),
    st.integers(MAX_PAYLOAD_SIZE, HUGE_MAX).map(lambda n: "s" * n),
    st.integers(2_049, 20_000).map(
        lambda n: {"to": "a", "candidate": "c" * n, "sdpMid": None, "sdpMLineIndex": None}
    ),
)


def nested(depth: int, use_dict: bool) -> object:
    """A value ``depth`` containers deep."""
    value: object = "bottom"
    for _ in range(depth):
        value = {"to": value} if use_dict else [value]
    return value


DEEP = st.builds(nested, st.integers(20, 400), st.booleans())
ONE_PAYLOAD = st.one_of(JSON_LIKE, NEAR_VALID, HUGE, DEEP)
# The emitted arguments: none, one, or several (a tuple is sent as separate arguments).
ARGS = st.one_of(
    ONE_PAYLOAD.map(lambda payload: (payload,)),
    st.just(()),
    st.lists(JSON_LIKE, min_size=2, max_size=3).map(tuple),
)

# A few hand-picked cases so that every run covers them whatever the seed.
FIXED_EXAMPLES: list[tuple[str, tuple[Any, ...]]] = [
    ("disconnect", ("transport close",)),
    ("connect", ({"join_token": "x"},)),
    ("offer", (nested(400, use_dict=True),)),
    ("offer", ({"to": "x", "sdp": "v" * HUGE_MAX},)),
    ("state", (b"\x00\xff" * 32,)),
    ("state", ({"state": "paused", "media": None},)),
    ("end", ({},)),
    ("bye", ({"reason": "left"},)),
    ("candidate", ({"to": "x", "candidate": "", "sdpMid": None, "sdpMLineIndex": 2**64},)),
    ("offer", ({"to": "x", "sdp": "v=0", "restart": float("nan")},)),
]


def generate_barrage(run_seed: int) -> list[tuple[str, tuple[Any, ...]]]:
    """Draw the fuzz events with Hypothesis, before any of them is sent.

    Hypothesis drives sync functions; the sending needs the test's event loop. So an inner
    @given function only records what Hypothesis draws, and the async test sends the list on
    one connection afterwards. Only the generate phase runs (there is no failure to shrink
    inside the collector), nothing goes to the example database, and the seed is explicit so a
    failing run can be replayed with FUZZ_SEED=<seed> (``.example()`` would do neither).
    """
    drawn: list[tuple[str, tuple[Any, ...]]] = []

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
    @given(event=EVENT_NAMES, args=ARGS)
    def collect(event: str, args: tuple[Any, ...]) -> None:
        drawn.append((event, args))

    collect()
    return drawn


def expected_outcome(event: str, args: tuple[Any, ...]) -> str | type:
    """The error code a beneficiary must get for this event, or the message type it is."""
    if len(args) != 1:
        return "malformed"  # checked first, whatever the event's name
    if event in ("connect", "disconnect"):
        return "unknown_event"
    try:
        message = decode(event, args[0])
    except MessageError as exc:
        return exc.code
    if isinstance(message, Offer | Answer | Candidate):
        return "not_in_room"  # random `to`: never a peer of this session
    if isinstance(message, End):
        return "forbidden"  # the beneficiary does not end sessions
    return type(message)


# --- the flood ----------------------------------------------------------------------------------


@dataclass
class Flooder:
    """One connection of the flooding beneficiary and what happened to it."""

    peer: SignalPeer
    sent: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    said_bye: bool = False


async def send_and_settle(peer: SignalPeer, event: str, args: tuple[Any, ...]) -> None:
    """Emit with an ack request and wait for the ack, or for the server to disconnect us.

    Anything the server sends in reply (``error``, ``ended``) is emitted before the ack, so it is
    already queued when this returns.
    """
    ack = asyncio.ensure_future(peer.client.call(event, args, namespace=NAMESPACE))
    gone = asyncio.ensure_future(peer.disconnected.wait())
    done, pending = await asyncio.wait(
        {ack, gone}, timeout=ACK_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
    )
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    assert done, f"no ack for {event!r} within {ACK_TIMEOUT} s: is the server stuck?"
    if ack in done and ack.exception() is not None:
        raise AssertionError(f"emitting {event!r} failed") from ack.exception()


async def test_random_malformed_events_never_break_the_server(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    run_seed = int(os.environ.get("FUZZ_SEED", random.randrange(2**32)))
    barrage = FIXED_EXAMPLES + generate_barrage(run_seed)
    replay = f"(replay with FUZZ_SEED={run_seed})"
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)

    async with PeerSet() as peers:
        witness = peers.add(await connect_volunteer(running, http, session_id))
        flooders: list[Flooder] = []
        valid_states: list[dict[str, Any]] = []
        for event, args in barrage:
            if not flooders or not flooders[-1].peer.client.connected:
                flooders.append(Flooder(peers.add(await connect_beneficiary(running, session_id))))
            flooder = flooders[-1]
            await send_and_settle(flooder.peer, event, args)
            flooder.sent += 1
            outcome = expected_outcome(event, args)
            if isinstance(outcome, str):
                errors = flooder.peer.queues["error"]
                assert not errors.empty(), f"no error for {event!r} {str(args)[:200]!r} {replay}"
                error = errors.get_nowait()
                flooder.errors.append(error)
                assert (error["code"], error["event"]) == (outcome, event[:40]), (
                    f"{event!r} {str(args)[:200]!r} {replay}"
                )
            elif outcome is StateUpdate:
                valid_states.append(args[0])
            elif outcome is Bye:
                flooder.said_bye = True
                await flooder.peer.expect_disconnected()
            assert flooder.peer.queues["error"].empty(), f"{event!r}: unexpected errors {replay}"

        # Every flooding connection got its errors; one that left without saying bye was cut off
        # by the error limit (SOCKET_ERRORS_PER_PEER: 50 a minute, the 51st disconnects).
        for flooder in flooders:
            assert flooder.errors or flooder.said_bye, replay
            if flooder.peer.disconnected.is_set() and not flooder.said_bye:
                assert len(flooder.errors) == 51, (len(flooder.errors), replay)
        assert len(flooders) >= (len(barrage) - len(valid_states)) // 51, replay

        # The other peer saw only what a valid beneficiary may cause, never the garbage itself.
        await witness.expect_nothing("offer", "answer", "candidate", "ended", "error")
        assert set(witness.events()) <= {"welcome", "peer-joined", "peer-left", "state"}, replay
        relayed = [data for name, data in witness.received if name == "state"]
        assert [(s["state"], s["media"]) for s in relayed] == [
            (s["state"], s["media"]) for s in valid_states
        ], replay

        # The server is still fine: a fresh pair connects and relays an offer.
        async with http.get(running.url("/healthz")) as resp:
            assert resp.status == 200
        fresh_session = await create_assistance(http, running)
        fresh_volunteer = peers.add(await connect_volunteer(running, http, fresh_session))
        fresh_beneficiary = peers.add(await connect_beneficiary(running, fresh_session))
        await fresh_volunteer.expect("peer-joined")
        await fresh_beneficiary.emit("offer", {"to": fresh_volunteer.peer_id, "sdp": "v=0\r\n"})
        assert await fresh_volunteer.expect("offer") == {
            "from": fresh_beneficiary.peer_id,
            "sdp": "v=0\r\n",
        }
