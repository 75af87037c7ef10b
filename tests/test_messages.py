"""Wire messages of PROTOCOL.md: what decode accepts, what it refuses and with which code."""

from __future__ import annotations

import base64
import json
import math
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from signaling.messages import (
    CLIENT_EVENTS,
    DATACHANNEL_TYPES,
    MAX_CANDIDATE_CHARS,
    MAX_CHAT_CHARS,
    MAX_CHUNK_BYTES,
    MAX_DATACHANNEL_CHARS,
    MAX_DOCUMENT_NAME_CHARS,
    MAX_PAYLOAD_SIZE,
    MAX_PHOTO_BYTES,
    MAX_SDP_CHARS,
    MEBIBYTE,
    Answer,
    Bye,
    Candidate,
    Chat,
    ClientMessage,
    DocChunk,
    DocEnd,
    DocStart,
    End,
    Highlight,
    MessageError,
    Offer,
    PhotoChunk,
    PhotoEnd,
    PhotoStart,
    Pointer,
    StateUpdate,
    Usage,
    VaultShown,
    VaultSuggest,
    decode,
    decode_datachannel,
    encode_datachannel,
    encode_relay,
)

PEER = "Xy_9-aBcD"
SDP = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0"

VALID: dict[str, dict[str, Any]] = {
    "offer": {"to": PEER, "sdp": SDP},
    "answer": {"to": PEER, "sdp": SDP},
    "candidate": {"to": PEER, "candidate": CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0},
    "state": {"state": "sharing", "media": "screen"},
    "bye": {"reason": "left"},
    "end": {},
    "usage": {"bytes": 14_200_000},
    "vault-shown": {"copy": True},
}


def refused(event: object, payload: object) -> MessageError:
    """The MessageError decode raises for this input (fails the test if it accepts it)."""
    with pytest.raises(MessageError) as caught:
        decode(event, payload)  # type: ignore[arg-type]
    return caught.value


def with_(event: str, **changes: object) -> dict[str, object]:
    """The valid payload of `event` with some fields replaced or added."""
    return {**VALID[event], **changes}


# --- Accepted -------------------------------------------------------------------------------


def test_client_events_are_exactly_those_of_the_protocol() -> None:
    expected = {"offer", "answer", "candidate", "state", "bye", "end", "usage", "vault-shown"}
    assert frozenset(expected) == CLIENT_EVENTS


@pytest.mark.parametrize(
    ("event", "model"),
    [
        ("offer", Offer),
        ("answer", Answer),
        ("candidate", Candidate),
        ("state", StateUpdate),
        ("bye", Bye),
        ("end", End),
        ("usage", Usage),
        ("vault-shown", VaultShown),
    ],
)
def test_every_event_decodes_its_valid_payload(event: str, model: type[ClientMessage]) -> None:
    message = decode(event, VALID[event])

    assert type(message) is model
    assert message.model_dump(exclude_unset=True, by_alias=True) == VALID[event]


def test_offer_keeps_sdp_and_restart() -> None:
    message = decode("offer", with_("offer", restart=True))

    assert message == Offer(to=PEER, sdp=SDP, restart=True)


def test_offer_restart_defaults_to_false() -> None:
    message = decode("offer", VALID["offer"])

    assert isinstance(message, Offer)
    assert message.restart is False


def test_end_of_candidates_has_empty_candidate_and_nulls() -> None:
    message = decode("candidate", with_("candidate", candidate="", sdpMid=None, sdpMLineIndex=None))

    assert message == Candidate(to=PEER, candidate="", sdpMid=None, sdpMLineIndex=None)


@pytest.mark.parametrize("state", ["waiting", "sharing", "paused", "stopped"])
@pytest.mark.parametrize("media", ["screen", "camera", "photo", None])
def test_state_accepts_every_state_and_media(state: str, media: str | None) -> None:
    assert decode("state", {"state": state, "media": media}) == StateUpdate(
        state=state,  # type: ignore[arg-type]
        media=media,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sdp", "x" * MAX_SDP_CHARS),
        ("to", "a" * 64),
        ("to", "A"),
    ],
)
def test_offer_accepts_values_at_the_limits(field: str, value: str) -> None:
    assert isinstance(decode("offer", with_("offer", **{field: value})), Offer)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("candidate", "c" * MAX_CANDIDATE_CHARS),
        ("sdpMid", "m" * 64),
        ("sdpMLineIndex", 64),
        ("sdpMLineIndex", 0),
    ],
)
def test_candidate_accepts_values_at_the_limits(field: str, value: object) -> None:
    assert isinstance(decode("candidate", with_("candidate", **{field: value})), Candidate)


def test_messages_are_frozen() -> None:
    message = Offer(to=PEER, sdp=SDP)

    with pytest.raises(ValidationError):
        message.sdp = "v=1"


# --- Refused: unknown events and non-objects -------------------------------------------------


@pytest.mark.parametrize(
    "event", ["", "Offer", "ended", "welcome", "connect", "x" * 10_000, None, 3]
)
def test_unknown_event_is_refused(event: object) -> None:
    error = refused(event, {})

    assert error.code == "unknown_event"
    assert len(error.message) < 300


@pytest.mark.parametrize("payload", [None, [], ["to", PEER], "offer", 3, 2.5, True, b"{}"])
@pytest.mark.parametrize("event", sorted(VALID))
def test_payload_that_is_not_an_object_is_malformed(event: str, payload: object) -> None:
    assert refused(event, payload).code == "malformed"


@pytest.mark.parametrize("event", sorted(VALID))
def test_extra_key_is_malformed(event: str) -> None:
    assert refused(event, with_(event, extra=1)).code == "malformed"


@pytest.mark.parametrize("event", ["offer", "answer", "candidate", "state", "bye"])
def test_missing_key_is_malformed(event: str) -> None:
    payload = dict(VALID[event])
    payload.popitem()
    assert refused(event, payload).code == "malformed"


def test_candidate_needs_sdp_mid_and_index_even_when_null() -> None:
    assert refused("candidate", {"to": PEER, "candidate": ""}).code == "malformed"


def test_snake_case_field_names_are_not_accepted_on_the_wire() -> None:
    payload = {"to": PEER, "candidate": "", "sdp_mid": None, "sdp_m_line_index": None}

    assert refused("candidate", payload).code == "malformed"


@pytest.mark.parametrize(
    ("event", "field", "value"),
    [
        ("offer", "to", 12),
        ("offer", "to", None),
        ("offer", "to", ""),
        ("offer", "to", "a b"),
        ("offer", "to", "peer/1"),
        ("offer", "to", "peer\n"),
        ("offer", "to", "pëer"),
        ("offer", "sdp", None),
        ("offer", "sdp", ""),
        ("offer", "sdp", ["v=0"]),
        ("offer", "sdp", b"v=0"),
        ("offer", "restart", "true"),
        ("offer", "restart", 1),
        ("offer", "restart", None),
        ("answer", "sdp", {"sdp": SDP}),
        ("candidate", "candidate", None),
        ("candidate", "sdpMid", 0),
        ("candidate", "sdpMLineIndex", "0"),
        ("candidate", "sdpMLineIndex", 0.0),
        ("candidate", "sdpMLineIndex", -1),
        ("candidate", "sdpMLineIndex", 65),
        ("candidate", "sdpMLineIndex", 10**30),
        ("candidate", "sdpMLineIndex", math.nan),
        ("state", "state", "SHARING"),
        ("state", "state", None),
        ("state", "media", "microphone"),
        ("state", "media", ""),
        ("bye", "reason", "disconnected"),
        ("bye", "reason", None),
    ],
)
def test_wrong_type_or_value_is_malformed(event: str, field: str, value: object) -> None:
    error = refused(event, with_(event, **{field: value}))

    assert error.code == "malformed"
    assert field in error.message


@pytest.mark.parametrize("flag", [True, False])
def test_bool_is_not_an_sdp_mline_index(flag: bool) -> None:
    assert refused("candidate", with_("candidate", sdpMLineIndex=flag)).code == "malformed"


def test_non_string_keys_are_malformed() -> None:
    assert refused("end", {1: 2}).code == "malformed"
    with_none_key: dict[object, object] = {None: "x"}
    with_none_key.update(VALID["offer"])
    assert refused("offer", with_none_key).code == "malformed"


def test_non_json_values_are_malformed() -> None:
    assert refused("offer", with_("offer", sdp=(1, 2))).code == "malformed"
    assert refused("end", {"x": {"y": object()}}).code == "malformed"


def test_str_subclass_is_malformed() -> None:
    class Sneaky(str):
        def __len__(self) -> int:
            return 0

    assert refused("offer", with_("offer", sdp=Sneaky("v=0"))).code == "malformed"


# --- Refused: size limits --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "field", "length"),
    [
        ("offer", "sdp", MAX_SDP_CHARS + 1),
        ("answer", "sdp", MAX_SDP_CHARS + 1),
        ("offer", "to", 65),
        ("answer", "to", 65),
        ("candidate", "to", 65),
        ("candidate", "candidate", MAX_CANDIDATE_CHARS + 1),
        ("candidate", "sdpMid", 65),
    ],
)
def test_string_over_its_limit_is_too_large(event: str, field: str, length: int) -> None:
    error = refused(event, with_(event, **{field: "a" * length}))

    assert error.code == "too_large"
    assert field in error.message


@pytest.mark.parametrize("event", sorted(VALID))
def test_ten_megabyte_string_is_too_large(event: str) -> None:
    assert refused(event, with_(event, junk="x" * 10_000_000)).code == "too_large"


def test_payload_over_the_total_budget_is_too_large_whatever_its_shape() -> None:
    many_keys = {f"k{i}": 0 for i in range(MAX_PAYLOAD_SIZE // 4)}
    long_list = with_("end", junk=[0] * MAX_PAYLOAD_SIZE)
    huge_int = with_("candidate", sdpMLineIndex=10**100_000)

    assert refused("end", many_keys).code == "too_large"
    assert refused("end", long_list).code == "too_large"
    assert refused("candidate", huge_int).code == "too_large"


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    deep: object = []
    for _ in range(20_000):
        deep = [deep]
    deeper: object = {}
    for _ in range(100_000):
        deeper = {"a": deeper}

    assert refused("offer", with_("offer", sdp=deep)).code == "malformed"
    assert refused("end", {"x": deep}).code == "malformed"
    assert refused("end", {"x": deeper}).code == "too_large"


def test_cyclic_payload_is_refused() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    loop: dict[str, object] = {}
    loop["self"] = loop

    assert refused("end", {"x": cycle}).code == "too_large"
    assert refused("end", loop).code == "too_large"


def test_error_message_does_not_echo_huge_client_text() -> None:
    error = refused("end", {"k" * 50_000: 1})

    assert error.code == "malformed"
    assert len(error.message) < 300


def test_message_error_carries_code_and_message() -> None:
    error = MessageError("too_large", "offer.sdp: too long")

    assert (error.code, error.message) == ("too_large", "offer.sdp: too long")
    assert str(error) == "too_large: offer.sdp: too long"
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (copy.code, copy.message) == (error.code, error.message)


# --- Any input: a model or a MessageError, nothing else ------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)


def json_like(scalars: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=6)
            | st.dictionaries(st.text(max_size=12), children, max_size=6)
        ),
        max_leaves=40,
    )


# Python-side payloads may also carry integers too long for str() (over 4300 digits).
JSON_LIKE = json_like(SCALARS | st.integers(min_value=-(10**5000), max_value=10**5000))
JSON_TEXT_LIKE = json_like(SCALARS)
FIELD_NAMES = st.sampled_from(
    [
        "to",
        "sdp",
        "restart",
        "candidate",
        "sdpMid",
        "sdpMLineIndex",
        "state",
        "media",
        "reason",
        "bytes",
    ]
)
NEAR_VALID = st.sampled_from(sorted(VALID)).flatmap(
    lambda event: st.tuples(
        st.just(event),
        st.dictionaries(FIELD_NAMES, JSON_LIKE, max_size=5).map(
            lambda junk: {**VALID[event], **junk}
        ),
    )
)


def assert_model_or_message_error(event: object, payload: object) -> None:
    try:
        message = decode(event, payload)  # type: ignore[arg-type]
    except MessageError as error:
        assert error.code in {"malformed", "too_large", "unknown_event"}
        assert error.message
    else:
        assert isinstance(
            message, Offer | Answer | Candidate | StateUpdate | Bye | End | Usage | VaultShown
        )
        relayed = encode_relay(message, PEER)
        assert relayed["from"] == PEER
        json.dumps(relayed, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(event=st.sampled_from(sorted(CLIENT_EVENTS)) | st.text(max_size=10), payload=JSON_LIKE)
def test_decode_of_arbitrary_json_returns_a_model_or_raises_message_error(
    event: str, payload: object
) -> None:
    assert_model_or_message_error(event, payload)


@settings(max_examples=300, deadline=None)
@given(case=NEAR_VALID)
def test_decode_of_almost_valid_payloads_returns_a_model_or_raises_message_error(
    case: tuple[str, dict[str, object]],
) -> None:
    assert_model_or_message_error(*case)


# --- Relay ----------------------------------------------------------------------------------


def test_relay_drops_to_and_adds_from() -> None:
    relayed = encode_relay(decode("answer", VALID["answer"]), "sender_1")

    assert relayed == {"from": "sender_1", "sdp": SDP}


def test_relay_of_offer_keeps_restart_only_when_sent() -> None:
    plain = encode_relay(decode("offer", VALID["offer"]), "s")
    restart = encode_relay(decode("offer", with_("offer", restart=True)), "s")

    assert plain == {"from": "s", "sdp": SDP}
    assert restart == {"from": "s", "sdp": SDP, "restart": True}


def test_relay_of_candidate_keeps_nulls() -> None:
    message = decode("candidate", with_("candidate", candidate="", sdpMid=None, sdpMLineIndex=None))

    assert encode_relay(message, "s") == {
        "from": "s",
        "candidate": "",
        "sdpMid": None,
        "sdpMLineIndex": None,
    }


def test_relay_of_state_leaves_the_role_to_the_server() -> None:
    relayed = encode_relay(decode("state", {"state": "paused", "media": None}), "benef")

    assert relayed == {"from": "benef", "state": "paused", "media": None}


def test_relay_round_trips_through_json_and_decode() -> None:
    for event in ("offer", "answer", "candidate"):
        relayed = json.loads(json.dumps(encode_relay(decode(event, VALID[event]), "s")))
        relayed["to"] = relayed.pop("from")

        assert decode(event, relayed) == decode(event, with_(event, to="s"))


# --- Data channel ---------------------------------------------------------------------------


def chunk_data(size: int) -> str:
    return base64.b64encode(bytes(range(256)) * (size // 256) + b"\x07" * (size % 256)).decode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"t":"pointer","x":0.25,"y":0.5,"kind":"move"}', Pointer(x=0.25, y=0.5, kind="move")),
        ('{"t":"pointer","x":0,"y":1,"kind":"click"}', Pointer(x=0.0, y=1.0, kind="click")),
        (
            '{"t":"highlight","x0":0.1,"y0":0.2,"x1":0.9,"y1":1}',
            Highlight(x0=0.1, y0=0.2, x1=0.9, y1=1.0),
        ),
        (
            '{"t":"chat","id":"m-1","text":"Bonjour ! Où cliquer ?"}',
            Chat(id="m-1", text="Bonjour ! Où cliquer ?"),
        ),
        ('{"t":"chat","id":"m-2","text":""}', Chat(id="m-2", text="")),
        (
            '{"t":"photo-start","id":"p1","mime":"image/jpeg","size":40000,"chunks":3}',
            PhotoStart(id="p1", mime="image/jpeg", size=40_000, chunks=3),
        ),
        (
            '{"t":"photo-chunk","id":"p1","seq":0,"data":"aGVsbG8="}',
            PhotoChunk(id="p1", seq=0, data="aGVsbG8="),
        ),
        ('{"t":"photo-end","id":"p1"}', PhotoEnd(id="p1")),
        (
            '{"t":"doc-start","id":"d1","size":40000,"chunks":3,"mime":"application/pdf",'
            '"name":"Avis d\'imposition 2026.pdf","copy":false}',
            DocStart(
                id="d1",
                mime="application/pdf",
                size=40_000,
                chunks=3,
                name="Avis d'imposition 2026.pdf",
                copy=False,
            ),
        ),
        (
            '{"t":"doc-chunk","id":"d1","seq":2,"data":"aGVsbG8="}',
            DocChunk(id="d1", seq=2, data="aGVsbG8="),
        ),
        ('{"t":"doc-end","id":"d1"}', DocEnd(id="d1")),
        ('{"t":"vault-suggest","photo":"p1"}', VaultSuggest(photo="p1")),
    ],
)
def test_datachannel_decodes_every_message_type(text: str, expected: object) -> None:
    message = decode_datachannel(text)

    assert message == expected
    assert decode_datachannel(encode_datachannel(message)) == message


def test_datachannel_types_are_those_of_the_protocol() -> None:
    assert DATACHANNEL_TYPES == (
        "pointer",
        "highlight",
        "chat",
        "photo-start",
        "photo-chunk",
        "photo-end",
        "doc-start",
        "doc-chunk",
        "doc-end",
        "vault-suggest",
        "rights-form",
        "rights-result",
        "rights-close",
    )


def test_datachannel_encoding_puts_the_type_first() -> None:
    text = encode_datachannel(Pointer(x=0.5, y=0.5, kind="click"))

    assert json.loads(text) == {"t": "pointer", "x": 0.5, "y": 0.5, "kind": "click"}
    assert text.startswith('{"t":"pointer"')


def test_photo_chunk_gives_back_its_bytes() -> None:
    data = chunk_data(MAX_CHUNK_BYTES)
    message = decode_datachannel(
        json.dumps({"t": "photo-chunk", "id": "p", "seq": 3, "data": data})
    )

    assert isinstance(message, PhotoChunk)
    assert message.decoded() == base64.b64decode(data)
    assert len(message.decoded()) == MAX_CHUNK_BYTES


def test_photo_of_exactly_five_mebibytes_is_accepted() -> None:
    chunks = MAX_PHOTO_BYTES // MAX_CHUNK_BYTES
    text = json.dumps(
        {
            "t": "photo-start",
            "id": "p",
            "mime": "image/webp",
            "size": MAX_PHOTO_BYTES,
            "chunks": chunks,
        }
    )

    assert decode_datachannel(text) == PhotoStart(
        id="p", mime="image/webp", size=MAX_PHOTO_BYTES, chunks=chunks
    )


def doc_start(**changes: object) -> dict[str, object]:
    """A valid doc-start with some fields replaced."""
    return {
        "t": "doc-start",
        "id": "d",
        "mime": "application/pdf",
        "size": 40_000,
        "chunks": 3,
        "name": "impots.pdf",
        "copy": False,
        **changes,
    }


def test_a_document_may_reach_the_deployments_limit_and_no_more() -> None:
    ten = 10 * MEBIBYTE
    at_limit = json.dumps(doc_start(size=ten, chunks=ten // MAX_CHUNK_BYTES, copy=True))
    message = decode_datachannel(at_limit)
    assert message == DocStart(
        id="d", mime="application/pdf", size=ten, chunks=640, name="impots.pdf", copy=True
    )
    assert json.loads(encode_datachannel(message))["copy"] is True
    over = json.dumps(doc_start(size=ten + 1, chunks=641))
    with pytest.raises(MessageError) as caught:
        decode_datachannel(over)
    assert caught.value.code == "too_large"
    # A deployment with VAULT_MAX_DOCUMENT_MB = 20 takes it; one with 5 refuses even 6 MiB.
    assert isinstance(decode_datachannel(over, max_document_bytes=20 * MEBIBYTE), DocStart)
    six = json.dumps(doc_start(size=6 * MEBIBYTE, chunks=384))
    with pytest.raises(MessageError) as caught:
        decode_datachannel(six, max_document_bytes=5 * MEBIBYTE)
    assert caught.value.code == "too_large"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (doc_start(name="n" * (MAX_DOCUMENT_NAME_CHARS + 1)), "too_large"),
        (doc_start(name=""), "malformed"),
        (doc_start(mime="text/html"), "malformed"),
        (doc_start(mime="image/svg+xml"), "malformed"),
        (doc_start(copy="yes"), "malformed"),
        (doc_start(copy=None), "malformed"),
        ({k: v for k, v in doc_start().items() if k != "copy"}, "malformed"),
        (doc_start(give_copy=True), "malformed"),
        (doc_start(chunks=2), "malformed"),
        (doc_start(size=0), "malformed"),
        (doc_start(id="a b"), "malformed"),
        (
            {"t": "doc-chunk", "id": "d", "seq": 0, "data": chunk_data(MAX_CHUNK_BYTES + 1)},
            "too_large",
        ),
        ({"t": "doc-chunk", "id": "d", "seq": -1, "data": "aGVsbG8="}, "malformed"),
        ({"t": "doc-end"}, "malformed"),
        ({"t": "vault-suggest"}, "malformed"),
        ({"t": "vault-suggest", "photo": "p 1"}, "malformed"),
        ({"t": "vault-suggest", "photo": "p" * 65}, "too_large"),
        ({"t": "vault-suggest", "photo": "p1", "category": "impots"}, "malformed"),
    ],
)
def test_datachannel_refuses_invalid_documents_and_suggestions(
    message: dict[str, object], code: str
) -> None:
    with pytest.raises(MessageError) as caught:
        decode_datachannel(json.dumps(message))

    assert caught.value.code == code


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"t": "chat", "id": "1", "text": "a" * (MAX_CHAT_CHARS + 1)}, "too_large"),
        ({"t": "chat", "id": "i" * 65, "text": "a"}, "too_large"),
        (
            {
                "t": "photo-start",
                "id": "p",
                "mime": "image/png",
                "size": MAX_PHOTO_BYTES + 1,
                "chunks": 400,
            },
            "too_large",
        ),
        (
            {"t": "photo-chunk", "id": "p", "seq": 0, "data": chunk_data(MAX_CHUNK_BYTES + 1)},
            "too_large",
        ),
        ({"t": "pointer", "x": 1.01, "y": 0.5, "kind": "move"}, "malformed"),
        ({"t": "pointer", "x": -0.1, "y": 0.5, "kind": "move"}, "malformed"),
        ({"t": "pointer", "x": 0.5, "y": 0.5, "kind": "drag"}, "malformed"),
        ({"t": "pointer", "x": True, "y": 0.5, "kind": "move"}, "malformed"),
        ({"t": "pointer", "x": "0.5", "y": 0.5, "kind": "move"}, "malformed"),
        ({"t": "pointer", "x": 0.5, "y": 0.5, "kind": "move", "z": 1}, "malformed"),
        ({"t": "highlight", "x0": 0, "y0": 0, "x1": 2, "y1": 1}, "malformed"),
        ({"t": "chat", "id": 7, "text": "a"}, "malformed"),
        ({"t": "chat", "id": "a b", "text": "a"}, "malformed"),
        ({"t": "chat", "text": "a"}, "malformed"),
        (
            {"t": "photo-start", "id": "p", "mime": "image/gif", "size": 10, "chunks": 1},
            "malformed",
        ),
        ({"t": "photo-start", "id": "p", "mime": "image/png", "size": 0, "chunks": 1}, "malformed"),
        (
            {"t": "photo-start", "id": "p", "mime": "image/png", "size": 40_000, "chunks": 2},
            "malformed",
        ),
        (
            {"t": "photo-start", "id": "p", "mime": "image/png", "size": 10, "chunks": 11},
            "malformed",
        ),
        ({"t": "photo-chunk", "id": "p", "seq": -1, "data": "aGVsbG8="}, "malformed"),
        ({"t": "photo-chunk", "id": "p", "seq": False, "data": "aGVsbG8="}, "malformed"),
        ({"t": "photo-chunk", "id": "p", "seq": 0, "data": "not base64!"}, "malformed"),
        ({"t": "photo-chunk", "id": "p", "seq": 0, "data": "aGVsbG8"}, "malformed"),
        ({"t": "photo-end"}, "malformed"),
        ({"x": 0.5}, "malformed"),
        ({"t": None}, "unknown_event"),
        ({"t": 5}, "unknown_event"),
        ({"t": "cursor", "x": 0.5}, "unknown_event"),
    ],
)
def test_datachannel_refuses_invalid_messages(message: dict[str, object], code: str) -> None:
    with pytest.raises(MessageError) as caught:
        decode_datachannel(json.dumps(message))

    assert caught.value.code == code


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '"pointer"',
        "null",
        '{"t":"pointer","x":NaN,"y":0.5,"kind":"move"}',
        '{"t":"pointer","x":Infinity,"y":0.5,"kind":"move"}',
        "[" * 10_000 + "]" * 10_000,
        '{"t":"chat","id":"1","text":' + "[" * 5_000 + "]" * 5_000 + "}",
    ],
)
def test_datachannel_refuses_text_that_is_not_a_message_object(text: str) -> None:
    with pytest.raises(MessageError) as caught:
        decode_datachannel(text)

    assert caught.value.code == "malformed"


def test_datachannel_refuses_oversized_text_before_parsing() -> None:
    with pytest.raises(MessageError) as caught:
        decode_datachannel('{"t":"chat","id":"1","text":"' + "a" * MAX_DATACHANNEL_CHARS + '"}')

    assert caught.value.code == "too_large"


def test_datachannel_refuses_binary_messages() -> None:
    with pytest.raises(MessageError) as caught:
        decode_datachannel(b'{"t":"photo-end","id":"p"}')  # type: ignore[arg-type]

    assert caught.value.code == "malformed"


@settings(max_examples=300, deadline=None)
@given(value=JSON_TEXT_LIKE, t=st.sampled_from([*DATACHANNEL_TYPES, "other"]))
def test_datachannel_decode_of_arbitrary_json_returns_a_message_or_raises_message_error(
    value: object, t: str
) -> None:
    candidates = [json.dumps(value)]
    if isinstance(value, dict):
        candidates.append(json.dumps({**value, "t": t}))
    for text in candidates:
        try:
            decode_datachannel(text)
        except MessageError as error:
            assert error.code in {"malformed", "too_large", "unknown_event"}
