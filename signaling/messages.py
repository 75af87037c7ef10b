"""Typed, size-limited wire messages of PROTOCOL.md, with one decode/encode path for each side.

Socket.IO events from clients (``offer``, ``answer``, ``candidate``, ``state``, ``bye``, ``end``,
``usage``, ``vault-shown``) go through :func:`decode`, which only ever returns a model or raises
:class:`MessageError`; the server relays :func:`encode_relay`'s dict. Data-channel messages
(peer to peer, never seen by the server) go through :func:`decode_datachannel` /
:func:`encode_datachannel`, used by Python test peers and tools.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from server.data_used import MAX_DATA_BYTES

ErrorCode: TypeAlias = Literal["malformed", "too_large", "unknown_event"]

MAX_SDP_CHARS = 65_536
MAX_CANDIDATE_CHARS = 2_048
MAX_SDP_MID_CHARS = 64
MAX_SDP_MLINE_INDEX = 64
MAX_ID_CHARS = 64
# Cheap guard run before pydantic: the largest valid payload (an offer with a full SDP) is about
# 65.7 k characters of JSON, so anything bigger is refused without looking at its fields.
MAX_PAYLOAD_SIZE = 70_000

MAX_CHAT_CHARS = 1_000
MAX_PHOTO_BYTES = 5 * 1024 * 1024
MAX_CHUNK_BYTES = 16 * 1024
MAX_CHUNK_BASE64_CHARS = 4 * -(-MAX_CHUNK_BYTES // 3)
# A vault document shown in a session: at most the deployment's VAULT_MAX_DOCUMENT_MB (the
# settings' default here; `decode_datachannel` takes the deployment's), never more than the
# setting's own ceiling.
MEBIBYTE = 1024 * 1024
DEFAULT_MAX_DOCUMENT_BYTES = 10 * MEBIBYTE
CEILING_DOCUMENT_BYTES = 100 * MEBIBYTE
MAX_DOCUMENT_NAME_CHARS = 120
# A photo-chunk with a full 16 KiB chunk is about 21.9 k characters; leave room, refuse the rest.
MAX_DATACHANNEL_CHARS = 32_768

_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
_TOO_LARGE_ERROR_TYPES = frozenset({"string_too_long", "too_long", "too_large"})
_MAX_REPORTED_ERRORS = 3
_MAX_ERROR_TEXT = 200


class MessageError(Exception):
    """A client message was refused; ``code`` goes on the wire, ``message`` is for developers."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.code: ErrorCode = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


PeerId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=_ID_PATTERN)
]
"""A Socket.IO sid naming a peer of the same session: 1..64 characters of ``[A-Za-z0-9_-]``."""

Sdp = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SDP_CHARS)]
MessageId = PeerId
Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
"""A coordinate relative to the video frame, 0 (left/top) to 1 (right/bottom)."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- Client → server Socket.IO events -------------------------------------------------------


class Offer(_Message):
    """SDP offer from the beneficiary to one volunteer peer; ``restart`` marks an ICE restart."""

    event: ClassVar[str] = "offer"

    to: PeerId
    sdp: Sdp
    restart: bool = False


class Answer(_Message):
    """SDP answer from a volunteer peer to the beneficiary."""

    event: ClassVar[str] = "answer"

    to: PeerId
    sdp: Sdp


class Candidate(_Message):
    """One trickled ICE candidate; ``candidate == ""`` means end of candidates."""

    event: ClassVar[str] = "candidate"

    to: PeerId
    candidate: Annotated[str, StringConstraints(max_length=MAX_CANDIDATE_CHARS)]
    sdpMid: Annotated[str, StringConstraints(max_length=MAX_SDP_MID_CHARS)] | None
    sdpMLineIndex: Annotated[int, Field(ge=0, le=MAX_SDP_MLINE_INDEX)] | None


class StateUpdate(_Message):
    """The beneficiary's sharing state, shown to the volunteers."""

    event: ClassVar[str] = "state"

    state: Literal["waiting", "sharing", "paused", "stopped"]
    media: Literal["screen", "camera", "photo"] | None


class Bye(_Message):
    """The peer leaves for good (page closed on purpose), as opposed to a dropped connection."""

    event: ClassVar[str] = "bye"

    reason: Literal["left"]


class End(_Message):
    """The volunteer ends the session for everyone."""

    event: ClassVar[str] = "end"


class VaultShown(_Message):
    """The beneficiary showed a document of their vault over the data channel (for the
    statistics: whether a copy was given, never what the document was)."""

    event: ClassVar[str] = "vault-shown"

    # "copy" on the wire; not the attribute's name, which BaseModel.copy() holds.
    give_copy: bool = Field(alias="copy")


class Usage(_Message):
    """The bytes the beneficiary's device has spent on the session's peer connections so far
    (every connection of this page, and of earlier pages of the same tab)."""

    event: ClassVar[str] = "usage"

    bytes: Annotated[int, Field(ge=0, le=MAX_DATA_BYTES)]


ClientMessage: TypeAlias = Offer | Answer | Candidate | StateUpdate | Bye | End | Usage | VaultShown
RelayedMessage: TypeAlias = Offer | Answer | Candidate
"""The messages addressed to one peer (they have ``.to``) and relayed to it as they came."""

_CLIENT_MODELS: Mapping[str, type[ClientMessage]] = {
    model.event: model
    for model in (Offer, Answer, Candidate, StateUpdate, Bye, End, Usage, VaultShown)
}
CLIENT_EVENTS: frozenset[str] = frozenset(_CLIENT_MODELS)


def decode(event: str, payload: object) -> ClientMessage:
    """Validate a client event and its payload; raise MessageError for anything else."""
    model = _CLIENT_MODELS.get(event) if type(event) is str else None
    if model is None:
        raise MessageError(
            "unknown_event",
            f"unknown event {_short(event)}; expected one of {', '.join(sorted(CLIENT_EVENTS))}",
        )
    if type(payload) is not dict:
        raise MessageError(
            "malformed", f"{event}: payload must be a JSON object, got {_json_kind(payload)}"
        )
    size = _flat_json_size(payload)
    if size is None:  # nested values: the full walk
        size = _json_size(event, payload, MAX_PAYLOAD_SIZE)
    if size > MAX_PAYLOAD_SIZE:
        raise MessageError(
            "too_large", f"{event}: payload is larger than {MAX_PAYLOAD_SIZE} characters of JSON"
        )
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise _message_error(event, exc) from None


def encode_relay(message: ClientMessage, sender: str) -> dict[str, object]:
    """Payload forwarded to the recipient: the fields as sent, without ``to``, plus ``from``.

    For ``state`` the server adds ``role``; ``bye`` and ``end`` are not relayed as such (the
    server emits ``peer-left`` and ``ended``), their dict is only given for completeness.
    """
    if type(message) is Candidate:  # the bulk of the relay: spelled out, 5 µs less than dump
        return {
            "from": sender,
            "candidate": message.candidate,
            "sdpMid": message.sdpMid,
            "sdpMLineIndex": message.sdpMLineIndex,
        }
    relayed: dict[str, object] = {"from": sender}
    # Required fields are always set, so exclude_unset only drops an omitted optional `restart`.
    relayed.update(message.model_dump(exclude={"to"}, exclude_unset=True))
    return relayed


# --- Data channel `assist` (peer to peer) ---------------------------------------------------


# -- /queue: the drop-in queue's client events (answered through the acknowledgement) ----------


class QueueNothing(BaseModel):
    """`take_next` and `leave` carry nothing (an empty object)."""

    model_config = ConfigDict(extra="forbid")


class QueueEntryRef(BaseModel):
    """`take`, `requeue`, `gone`: one person of the queue."""

    model_config = ConfigDict(extra="forbid")
    # A place's id is a UUID: anything else is malformed before it reaches the database
    # (PostgreSQL refuses a NUL character in a text, and the event went unanswered).
    entry_id: str = Field(min_length=1, max_length=36, pattern="^[0-9a-f-]+$")


class QueueTransfer(QueueEntryRef):
    """`transfer`: the person and the volunteer to hand them to."""

    volunteer_id: int = Field(ge=1, le=2**31 - 1)


class QueueRemove(BaseModel):
    """`remove`: several waiting people at once, the chosen ones (`entry_ids`) or everyone who
    joined in the last `since_minutes`, with the reason their pages are given."""

    model_config = ConfigDict(extra="forbid")
    entry_ids: list[Annotated[str, Field(min_length=1, max_length=36)]] = Field(
        default_factory=list, max_length=500
    )
    since_minutes: int | None = Field(default=None, ge=1, le=24 * 60)
    reason: Literal["gone", "removed"] = "removed"

    @model_validator(mode="after")
    def _one_choice(self) -> QueueRemove:
        if bool(self.entry_ids) == (self.since_minutes is not None):
            raise ValueError("give either entry_ids or since_minutes")
        return self


def _check_chunk(data: str) -> str:
    try:
        decoded = b64decode(data, validate=True)
    except binascii.Error:
        raise PydanticCustomError("value_error", "data is not valid base64") from None
    if len(decoded) > MAX_CHUNK_BYTES:
        raise PydanticCustomError(
            "too_large",
            "data decodes to {size} bytes, the limit is {limit}",
            {"size": len(decoded), "limit": MAX_CHUNK_BYTES},
        )
    return data


class Pointer(_Message):
    """Where the volunteer points or clicks on the beneficiary's screen."""

    t: Literal["pointer"] = "pointer"
    x: Unit
    y: Unit
    kind: Literal["click", "move"]


class Highlight(_Message):
    """A rectangle the volunteer dragged over the beneficiary's screen."""

    t: Literal["highlight"] = "highlight"
    x0: Unit
    y0: Unit
    x1: Unit
    y1: Unit


class Chat(_Message):
    """A chat line, in either direction."""

    t: Literal["chat"] = "chat"
    id: MessageId
    text: Annotated[str, StringConstraints(max_length=MAX_CHAT_CHARS)]


class _TransferStart(_Message):
    """Announces a file of ``size`` bytes sent in ``chunks`` chunk messages (one chunked-transfer
    path for photos and documents: ``web/static/js/transfer.js``)."""

    t: str  # each kind's literal; declared here so that it comes first on the wire
    id: MessageId
    size: Annotated[int, Field(ge=1)]
    chunks: Annotated[int, Field(ge=1)]

    def _limit(self, info: ValidationInfo) -> int:  # pragma: no cover - each kind says
        raise NotImplementedError

    @model_validator(mode="after")
    def _fits(self, info: ValidationInfo) -> _TransferStart:
        limit = self._limit(info)
        if self.size > limit:
            raise PydanticCustomError(
                "too_large",
                "{kind} of {size} bytes, the limit is {limit}",
                {"kind": self.t, "size": self.size, "limit": limit},
            )
        # Each chunk carries 1..16 KiB, so the count is bounded both ways by the size.
        if not -(-self.size // MAX_CHUNK_BYTES) <= self.chunks <= self.size:
            raise ValueError(f"{self.chunks} chunks cannot carry {self.size} bytes")
        return self


ChunkData = Annotated[
    str,
    StringConstraints(max_length=MAX_CHUNK_BASE64_CHARS),
    AfterValidator(_check_chunk),
]
"""One base64 piece of a file, ≤ 16 KiB decoded."""


class _TransferChunk(_Message):
    """One base64 piece (≤ 16 KiB decoded) of the file ``id``; ``seq`` counts from 0."""

    t: str
    id: MessageId
    seq: Annotated[int, Field(ge=0, lt=CEILING_DOCUMENT_BYTES)]
    data: ChunkData

    def decoded(self) -> bytes:
        """The bytes this chunk carries."""
        return b64decode(self.data, validate=True)


class PhotoStart(_TransferStart):
    """Announces a photo of ``size`` bytes sent in ``chunks`` photo-chunk messages."""

    t: Literal["photo-start"] = "photo-start"
    mime: Literal["image/jpeg", "image/png", "image/webp"]

    def _limit(self, info: ValidationInfo) -> int:
        return MAX_PHOTO_BYTES


class PhotoChunk(_TransferChunk):
    """One base64 piece (≤ 16 KiB decoded) of the photo ``id``; ``seq`` counts from 0."""

    t: Literal["photo-chunk"] = "photo-chunk"
    seq: Annotated[int, Field(ge=0, lt=MAX_PHOTO_BYTES)]


class PhotoEnd(_Message):
    """All chunks of the photo ``id`` were sent."""

    t: Literal["photo-end"] = "photo-end"
    id: MessageId


class DocStart(_TransferStart):
    """Announces a document of the beneficiary's vault, decrypted on their device, sent in
    ``chunks`` doc-chunk messages; ``copy``: the person gave a copy (the volunteer's page offers
    to save it only then). At most the deployment's VAULT_MAX_DOCUMENT_MB."""

    t: Literal["doc-start"] = "doc-start"
    mime: Literal["application/pdf", "image/jpeg", "image/png", "image/webp"]
    name: Annotated[str, StringConstraints(min_length=1, max_length=MAX_DOCUMENT_NAME_CHARS)]
    give_copy: bool = Field(alias="copy")  # "copy" on the wire, as VaultShown

    def _limit(self, info: ValidationInfo) -> int:
        context = info.context if isinstance(info.context, dict) else {}
        limit = context.get("max_document_bytes", DEFAULT_MAX_DOCUMENT_BYTES)
        return min(int(limit), CEILING_DOCUMENT_BYTES)


class DocChunk(_TransferChunk):
    """One base64 piece (≤ 16 KiB decoded) of the document ``id``; ``seq`` counts from 0."""

    t: Literal["doc-chunk"] = "doc-chunk"


class DocEnd(_Message):
    """All chunks of the document ``id`` were sent."""

    t: Literal["doc-end"] = "doc-end"
    id: MessageId


class VaultSuggest(_Message):
    """The volunteer suggests the person keeps the photo ``photo`` (a photo-start id they sent)
    in their vault; the person's page asks them."""

    t: Literal["vault-suggest"] = "vault-suggest"
    photo: MessageId


MAX_RIGHTS_ITEMS = 40
MAX_RIGHTS_LINES = 20
MAX_RIGHTS_TEXT = 200
MAX_RIGHTS_REASON = 400
RightsText = Annotated[str, StringConstraints(max_length=MAX_RIGHTS_TEXT)]


class RightsItem(_Message):
    """One question of the rights form and its answer, as the volunteer's page shows them."""

    q: RightsText
    a: RightsText


class RightsForm(_Message):
    """The rights form as filled so far (issue 16), shown read-only on the person's page: the
    questions the skip logic shows, in order, with their answers in words."""

    t: Literal["rights-form"] = "rights-form"
    items: Annotated[list[RightsItem], Field(max_length=MAX_RIGHTS_ITEMS)]


class RightsLine(_Message):
    """One benefit of the result, in the words of the volunteer's page."""

    label: RightsText
    verdict: Literal["likely", "unlikely", "check"]
    text: RightsText  # "Probablement éligible — environ 569 € par mois"
    reason: Annotated[str, StringConstraints(max_length=MAX_RIGHTS_REASON)]
    url: Annotated[str, StringConstraints(max_length=300, pattern=r"^https://[^\s]+$")]
    where: RightsText
    received: bool


class RightsResult(_Message):
    """The result of the rights check, shown on the person's page: the source line (month and
    OpenFisca-France version), the estimate notice, one line per benefit."""

    t: Literal["rights-result"] = "rights-result"
    source: RightsText
    notice: Annotated[str, StringConstraints(max_length=MAX_RIGHTS_REASON)]
    lines: Annotated[list[RightsLine], Field(max_length=MAX_RIGHTS_LINES)]


class RightsClose(_Message):
    """The volunteer stopped showing the rights form: the person's page hides it."""

    t: Literal["rights-close"] = "rights-close"


_DATACHANNEL_MODELS = (
    Pointer,
    Highlight,
    Chat,
    PhotoStart,
    PhotoChunk,
    PhotoEnd,
    DocStart,
    DocChunk,
    DocEnd,
    VaultSuggest,
    RightsForm,
    RightsResult,
    RightsClose,
)
DataChannelMessage: TypeAlias = Annotated[
    Pointer
    | Highlight
    | Chat
    | PhotoStart
    | PhotoChunk
    | PhotoEnd
    | DocStart
    | DocChunk
    | DocEnd
    | VaultSuggest
    | RightsForm
    | RightsResult
    | RightsClose,
    Field(discriminator="t"),
]
_DATACHANNEL: TypeAdapter[DataChannelMessage] = TypeAdapter(DataChannelMessage)
DATACHANNEL_TYPES: tuple[str, ...] = tuple(
    model.model_fields["t"].default for model in _DATACHANNEL_MODELS
)


def decode_datachannel(
    text: str, *, max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
) -> DataChannelMessage:
    """Parse one JSON text message of the ``assist`` data channel; raise MessageError if invalid.
    ``max_document_bytes``: the deployment's VAULT_MAX_DOCUMENT_MB, in bytes."""
    if type(text) is not str:
        raise MessageError(
            "malformed", f"data-channel message must be text, got {type(text).__name__}"
        )
    if len(text) > MAX_DATACHANNEL_CHARS:
        raise MessageError(
            "too_large",
            f"data-channel message of {len(text)} characters, the limit is {MAX_DATACHANNEL_CHARS}",
        )
    try:
        return _DATACHANNEL.validate_json(
            text, strict=True, context={"max_document_bytes": max_document_bytes}
        )
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            if error["type"] == "union_tag_invalid":
                tag = error.get("ctx", {}).get("tag")
                raise MessageError(
                    "unknown_event",
                    f"data channel: unknown message type t={_short(tag)}; expected one of "
                    f"{', '.join(DATACHANNEL_TYPES)}",
                ) from None
        raise _message_error("data channel", exc) from None


def encode_datachannel(message: DataChannelMessage) -> str:
    """JSON text of a data-channel message, as a browser peer expects it."""
    return message.model_dump_json(by_alias=True)


# --- Helpers --------------------------------------------------------------------------------


def _json_size(context: str, value: object, budget: int) -> int:
    """Approximate JSON length of a JSON-like value, giving up once it exceeds ``budget``.

    Iterative and bounded by ``budget``, so huge strings, deep nesting, huge integers and even
    cyclic containers cost little; any value that JSON cannot carry is refused as malformed.
    """
    size = 0
    stack: list[tuple[object, _Path]] = [(value, None)]
    while stack and size <= budget:
        item, path = stack.pop()
        if type(item) is str:
            size += len(item) + 2
        elif type(item) is dict:
            size += 2 + len(item)
            if size > budget:
                break
            for key, child in item.items():
                if type(key) is not str:
                    where = _format_path(context, path)
                    raise MessageError("malformed", f"{where}: key {_short(key)} is not a string")
                size += len(key) + 3
                stack.append((child, (path, key)))
        elif type(item) is list:
            size += 2 + len(item)
            if size > budget:
                break
            stack.extend((child, (path, index)) for index, child in enumerate(item))
        elif type(item) is int:
            # bit_length() * log10(2) digits, without str(), which refuses > 4300 digits.
            size += item.bit_length() * 302 // 1000 + 2
        elif type(item) is float:
            size += 24
        elif item is None or type(item) is bool:
            size += 5
        else:
            where = _format_path(context, path)
            raise MessageError(
                "malformed", f"{where}: value of type {type(item).__name__} is not JSON"
            )
    return size


def _flat_json_size(payload: dict[object, object]) -> int | None:
    """``_json_size`` of an object whose keys are strings and values scalars (every relayed
    candidate), without the walk's stack; None for anything else, which the walk then sizes."""
    size = 2 + len(payload)
    if size > MAX_PAYLOAD_SIZE:
        return size
    for key, item in payload.items():
        kind = type(item)
        if type(key) is not str:
            return None
        if kind is str:
            size += len(item) + 2  # type: ignore[arg-type]
        elif kind is int:
            size += item.bit_length() * 302 // 1000 + 2  # type: ignore[attr-defined]
        elif item is None or kind is bool:
            size += 5
        elif kind is float:
            size += 24
        else:
            return None
        size += len(key) + 3
    return size


_Path: TypeAlias = "tuple[_Path, str | int] | None"
"""Where a value sits in a payload, innermost key last, as a linked list built only on demand."""


def _format_path(context: str, path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, part = path
        parts.append(_loc_part(part))
    return ".".join([context, *reversed(parts)])


def _message_error(context: str, exc: ValidationError) -> MessageError:
    errors = exc.errors(include_url=False, include_input=False)
    code: ErrorCode = (
        "too_large"
        if any(error["type"] in _TOO_LARGE_ERROR_TYPES for error in errors)
        else "malformed"
    )
    return MessageError(code, f"{context}: {_describe(errors)}")


def _describe(errors: list[ErrorDetails]) -> str:
    parts = []
    for error in errors[:_MAX_REPORTED_ERRORS]:
        where = ".".join(_loc_part(part) for part in error["loc"])
        parts.append(f"{where or 'payload'}: {error['msg'][:_MAX_ERROR_TEXT]}")
    if len(errors) > _MAX_REPORTED_ERRORS:
        parts.append(f"and {len(errors) - _MAX_REPORTED_ERRORS} more errors")
    return "; ".join(parts)


def _short(value: object, limit: int = 40) -> str:
    """A bounded representation of client-controlled text for error messages."""
    if type(value) is str:
        return repr(value[:limit]) + ("…" if len(value) > limit else "")
    return f"<{type(value).__name__}>"


def _loc_part(part: object) -> str:
    if type(part) is str and len(part) <= MAX_ID_CHARS and part.replace("-", "_").isidentifier():
        return part
    return str(part) if type(part) is int else _short(part)


_JSON_KINDS: Mapping[type, str] = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
}


def _json_kind(value: object) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)
