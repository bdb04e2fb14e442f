"""The signaling protocol as Pydantic models: every frame a client may send,
every frame the server sends, the error codes and the close codes.

These models are the reference for ``docs/protocol.md``. Client frames are
parsed and validated exactly once, at ingress, by :func:`parse_client_frame`;
a frame that fails becomes a :class:`ProtocolError` carrying the ``error``
payload to send back, never a dropped connection.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import IntEnum, StrEnum
from json import JSONDecoder, decoder, scanner
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

ROOM_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
ROOM_ID_RE = re.compile(ROOM_ID_PATTERN)

MAX_SDP_CHARS = 60_000
MAX_CANDIDATE_CHARS = 2_048
MAX_ID_CHARS = 128
MAX_NOTICE_CHARS = 1_000
# Deepest nesting of an ``app`` payload (docs/protocol.md); well inside the
# recursion limit of the decoder that finds the payload's text.
MAX_APP_PAYLOAD_DEPTH = 512
TOO_DEEP = "payload is nested too deeply"
_APP = "app"

PeerId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# Any string a client may name a call by; one the server never issued is
# ``unknown_call``, not a schema error.
CallId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
UserId = Annotated[str, Field(min_length=1, max_length=256)]
MAX_CALL_DATA_BYTES = 1_024
ClientRef = Annotated[str, Field(max_length=MAX_ID_CHARS)]


class ClientMessageType(StrEnum):
    OFFER = "offer"
    ANSWER = "answer"
    ICE_CANDIDATE = "ice-candidate"
    MEDIA_STATE = "media-state"
    APP = "app"
    PING = "ping"
    LEAVE = "leave"
    REFRESH = "refresh"
    KICK = "kick"
    CALL = "call"
    CALL_ANSWER = "call-answer"
    CALL_CANCEL = "call-cancel"
    CALL_SETUP = "call-setup"


class ServerMessageType(StrEnum):
    WELCOME = "welcome"
    USER_JOINED = "user-joined"
    USER_LEFT = "user-left"
    PONG = "pong"
    ERROR = "error"
    NOTICE = "notice"
    READY = "ready"
    INCOMING_CALL = "incoming-call"
    CALL_STATE = "call-state"
    # Relayed types keep the type the sender gave them.
    OFFER = "offer"
    ANSWER = "answer"
    ICE_CANDIDATE = "ice-candidate"
    MEDIA_STATE = "media-state"
    APP = "app"


RELAYED_TYPES = frozenset(
    {
        ClientMessageType.OFFER,
        ClientMessageType.ANSWER,
        ClientMessageType.ICE_CANDIDATE,
        ClientMessageType.MEDIA_STATE,
        ClientMessageType.APP,
    }
)
SERVER_ONLY_TYPES = frozenset(
    {
        "welcome",
        "user-joined",
        "user-left",
        "pong",
        "error",
        "notice",
        "ready",
        "incoming-call",
        "call-state",
    }
)


class ErrorCode(StrEnum):
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_PEER = "unknown_peer"
    RATE_LIMITED = "rate_limited"
    FORBIDDEN = "forbidden"
    UNKNOWN_CALL = "unknown_call"
    # Not in PROTOCOL.md: the message could not be relayed because Redis is
    # unreachable (docs/protocol.md, "Extensions").
    UNAVAILABLE = "unavailable"


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    UNAUTHORIZED = 4003
    ROOM_FULL = 4008
    RATE_LIMITED = 4029
    INVALID_ROOM = 4400
    SESSION_REPLACED = 4409
    IDLE = 4408


# --- payloads ---------------------------------------------------------------


class PayloadModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def as_json(self) -> dict[str, Any]:
        """``model_dump(exclude_none=True)`` at half its cost, for the relay hot
        path: payloads are flat, their fields str, int or bool
        (tests/test_schemas.py holds every payload model to that)."""
        return {name: value for name, value in self.__dict__.items() if value is not None}


class OfferPayload(PayloadModel):
    """An RTCSessionDescriptionInit of type ``offer``."""

    type: Literal["offer"]
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)


class AnswerPayload(PayloadModel):
    """An RTCSessionDescriptionInit of type ``answer`` (or ``pranswer``)."""

    type: Literal["answer", "pranswer"]
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)


class IceCandidatePayload(PayloadModel):
    """An RTCIceCandidateInit; an empty ``candidate`` is end-of-candidates."""

    candidate: str = Field(max_length=MAX_CANDIDATE_CHARS)
    sdpMid: str | None = Field(default=None, max_length=256)
    sdpMLineIndex: int | None = Field(default=None, ge=0, le=65535)
    usernameFragment: str | None = Field(default=None, max_length=256)


class MediaState(PayloadModel):
    """What a peer is sending; every field optional, unknown fields refused.
    Strict booleans: ``1`` or ``"true"`` is refused, not read as true, so that
    every receiver sees exactly ``true``/``false``."""

    audio: bool | None = Field(default=None, strict=True)
    video: bool | None = Field(default=None, strict=True)
    screen: bool | None = Field(default=None, strict=True)


class CandidateType(StrEnum):
    """The local candidate of the ICE pair a peer connection selected (RFC 8445 5.1.1)."""

    HOST = "host"
    SRFLX = "srflx"
    PRFLX = "prflx"
    RELAY = "relay"


class CallSetupOutcome(StrEnum):
    CONNECTED = "connected"
    FAILED = "failed"


MAX_SETUP_MS = 600_000


class CallSetupPayload(BaseModel):
    """How one peer connection's setup went, as the SDK measured it: from its
    first offer (sent or received) to ``connected`` or ``failed``. Nothing
    names a peer or a room: the server only counts it (never relayed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outcome: CallSetupOutcome
    setup_ms: float = Field(ge=0, le=MAX_SETUP_MS, allow_inf_nan=False)
    candidate_type: CandidateType | None = None
    """The selected pair's local candidate type; null when it failed."""


class RefreshPayload(PayloadModel):
    token: str = Field(min_length=1, max_length=8192)


class KickPayload(PayloadModel):
    peer_id: PeerId


class CallPayload(BaseModel):
    """Whom to ring, for which room, and what to show them: ``data`` is any
    JSON of at most 1024 bytes serialized, carried to the callee unchanged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to_user: UserId
    room_id: Annotated[str, Field(pattern=ROOM_ID_PATTERN)]
    data: Any = None

    @field_validator("data")
    @classmethod
    def _small(cls, data: Any) -> Any:
        try:
            size = len(orjson.dumps(data))
        except orjson.JSONEncodeError:
            raise ValueError(TOO_DEEP) from None
        if size > MAX_CALL_DATA_BYTES:
            raise ValueError(f"at most {MAX_CALL_DATA_BYTES} bytes serialized")
        return data


class CallAnswerPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    call_id: CallId
    accept: bool = Field(strict=True)


class CallCancelPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    call_id: CallId


# --- client to server -------------------------------------------------------


class _ClientMessage(BaseModel):
    # Unknown top-level fields (a forged ``from``, say) are ignored, not relayed.
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: ClientRef | None = None


class OfferMessage(_ClientMessage):
    type: Literal[ClientMessageType.OFFER]
    to: PeerId | None = None
    payload: OfferPayload


class AnswerMessage(_ClientMessage):
    type: Literal[ClientMessageType.ANSWER]
    to: PeerId | None = None
    payload: AnswerPayload


class IceCandidateMessage(_ClientMessage):
    type: Literal[ClientMessageType.ICE_CANDIDATE]
    to: PeerId | None = None
    payload: IceCandidatePayload


class MediaStateMessage(_ClientMessage):
    """Always for the whole room; the server also records it as the peer's ``media``."""

    type: Literal[ClientMessageType.MEDIA_STATE]
    payload: MediaState


class AppMessage(_ClientMessage):
    """``payload`` is the decoded value (for the server's own use); what is
    relayed is ``exact_payload``, the JSON text the client sent (an
    :class:`orjson.Fragment`, :func:`app_frame`): no number, escape or space
    of it is changed. ``exact_payload`` is set by :func:`parse_client_frame`
    over anything a client sent under that name, and is no part of the wire
    schema. (A plain field: a private attribute doubles validation's cost.)"""

    type: Literal[ClientMessageType.APP]
    to: PeerId | None = None
    payload: Any = None
    exact_payload: SkipJsonSchema[Any] = Field(default=None, exclude=True)


class PingMessage(_ClientMessage):
    type: Literal[ClientMessageType.PING]


class LeaveMessage(_ClientMessage):
    type: Literal[ClientMessageType.LEAVE]


class RefreshMessage(_ClientMessage):
    type: Literal[ClientMessageType.REFRESH]
    payload: RefreshPayload


class KickMessage(_ClientMessage):
    type: Literal[ClientMessageType.KICK]
    payload: KickPayload


class CallSetupMessage(_ClientMessage):
    """Call-setup telemetry (room sockets): counted, never relayed, no answer."""

    type: Literal[ClientMessageType.CALL_SETUP]
    payload: CallSetupPayload


class CallMessage(_ClientMessage):
    """Ring every user socket of ``to_user`` (user and room sockets)."""

    type: Literal[ClientMessageType.CALL]
    payload: CallPayload


class CallAnswerMessage(_ClientMessage):
    """Accept or decline a ringing call (user sockets of the callee only)."""

    type: Literal[ClientMessageType.CALL_ANSWER]
    payload: CallAnswerPayload


class CallCancelMessage(_ClientMessage):
    """Stop ringing a call this connection started (user and room sockets)."""

    type: Literal[ClientMessageType.CALL_CANCEL]
    payload: CallCancelPayload


RelayedMessage = OfferMessage | AnswerMessage | IceCandidateMessage | MediaStateMessage | AppMessage
RoomClientMessage = (
    RelayedMessage
    | PingMessage
    | LeaveMessage
    | RefreshMessage
    | KickMessage
    | CallMessage
    | CallCancelMessage
    | CallSetupMessage
)
UserClientMessage = (
    CallMessage
    | CallAnswerMessage
    | CallCancelMessage
    | PingMessage
    | RefreshMessage
    | LeaveMessage
)
# What the parser accepts: every client type of either socket. Each session
# refuses the types its socket does not take (``invalid_message``).
ClientMessage = Annotated[
    RoomClientMessage | CallAnswerMessage,
    Field(discriminator="type"),
]
_client_message_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


# --- server to client -------------------------------------------------------


class Participant(BaseModel):
    peer_id: str
    user_id: str
    name: str
    media: dict[str, Any] = Field(default_factory=dict)


class WelcomePayload(BaseModel):
    peer_id: str
    user_id: str
    room_id: str
    resume_token: str
    participants: list[Participant]


class WelcomeMessage(BaseModel):
    type: Literal[ServerMessageType.WELCOME] = ServerMessageType.WELCOME
    payload: WelcomePayload


class UserJoinedPayload(BaseModel):
    peer_id: str
    user_id: str
    name: str


class UserJoinedMessage(BaseModel):
    type: Literal[ServerMessageType.USER_JOINED] = ServerMessageType.USER_JOINED
    payload: UserJoinedPayload


class UserLeftPayload(BaseModel):
    peer_id: str
    user_id: str


class UserLeftMessage(BaseModel):
    type: Literal[ServerMessageType.USER_LEFT] = ServerMessageType.USER_LEFT
    payload: UserLeftPayload


class RelayedFrame(BaseModel):
    """A relayed message as its receivers see it: ``from``/``from_user`` are
    stamped by the server from the sender's authenticated session."""

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["offer", "answer", "ice-candidate", "media-state", "app"]
    from_: str = Field(alias="from")
    from_user: str
    to: str | None
    payload: Any


class PongMessage(BaseModel):
    type: Literal[ServerMessageType.PONG] = ServerMessageType.PONG


class ErrorPayload(BaseModel):
    code: ErrorCode
    message: str
    ref: str | None = None


class ErrorMessage(BaseModel):
    type: Literal[ServerMessageType.ERROR] = ServerMessageType.ERROR
    payload: ErrorPayload


class NoticePayload(BaseModel):
    message: str = Field(min_length=1, max_length=MAX_NOTICE_CHARS)
    level: Literal["info", "warning"] = "info"


class NoticeMessage(BaseModel):
    """A message from the operators to everyone in the room (shown to users)."""

    type: Literal[ServerMessageType.NOTICE] = ServerMessageType.NOTICE
    payload: NoticePayload


class ServerInfo(BaseModel):
    """What this deployment is and supports, so that SDKs can tell."""

    version: str
    features: list[str]


class ReadyPayload(BaseModel):
    user_id: str
    connection_id: str
    server: ServerInfo


class ReadyMessage(BaseModel):
    """The first frame on a user socket."""

    type: Literal[ServerMessageType.READY] = ServerMessageType.READY
    payload: ReadyPayload


class IncomingCallPayload(BaseModel):
    call_id: str
    room_id: str
    name: str
    data: Any


class IncomingCallMessage(BaseModel):
    """A call ringing this user (on every user socket of the callee)."""

    type: Literal[ServerMessageType.INCOMING_CALL] = ServerMessageType.INCOMING_CALL
    from_user: str
    payload: IncomingCallPayload


CallStateName = Literal[
    "ringing", "accepted", "declined", "answered-elsewhere", "cancelled", "missed"
]


class CallStatePayload(BaseModel):
    """``devices`` with ``ringing``; ``room_id`` and ``ticket`` for the
    device whose answer accepted the call."""

    call_id: str
    state: CallStateName
    devices: int | None = None
    room_id: str | None = None
    ticket: str | None = None


class CallStateMessage(BaseModel):
    """Where a call stands, for the caller and the callee's devices; ``ref``
    echoes the ``id`` of the ``call`` that started it, on ``ringing``."""

    type: Literal[ServerMessageType.CALL_STATE] = ServerMessageType.CALL_STATE
    ref: str | None = None
    payload: CallStatePayload


ServerMessage = (
    WelcomeMessage
    | UserJoinedMessage
    | UserLeftMessage
    | RelayedFrame
    | PongMessage
    | ErrorMessage
    | NoticeMessage
    | CallStateMessage
)
UserServerMessage = (
    ReadyMessage | IncomingCallMessage | CallStateMessage | PongMessage | ErrorMessage
)
ServerFrame = Annotated[ServerMessage, Field(discriminator="type")]


# --- ingress ----------------------------------------------------------------


class ProtocolError(Exception):
    """A client frame the server answers with an ``error`` message."""

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def frame(self) -> bytes:
        payload = ErrorPayload(code=self.code, message=self.message, ref=self.ref)
        return encode(ErrorMessage(payload=payload))


def parse_client_frame(text: str | bytes) -> ClientMessage:
    """Parse and validate one client text frame, or raise :class:`ProtocolError`."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        # orjson refuses some valid JSON (1e400, a lone escaped surrogate);
        # an ``app`` payload may hold it, since it is relayed as text.
        raw = _app_frame_orjson_refused(text)
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "frame must be a JSON object")
    # A plain str: comparing with the enum member costs more (measured on the
    # relay of every offer).
    if raw.get("type") == _APP:
        exact_payload: orjson.Fragment | None = None
        if "payload" in raw:
            exact_payload = _payload_as_written_by_orjson(text, raw["payload"])
            if exact_payload is None:
                raw, exact_payload = app_frame(text, raw.get("id"))
        raw["exact_payload"] = exact_payload
    try:
        message = _client_message_adapter.validate_python(raw)
    except ValidationError as exc:
        # Worked out only for a refused frame: the hot path is the valid one.
        ref = raw.get("id")
        ref = ref[:MAX_ID_CHARS] if isinstance(ref, str) else None
        kind = raw.get("type")
        if isinstance(kind, str) and kind in SERVER_ONLY_TYPES:
            why = f"'{kind}' is sent by the server only"
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, why, ref) from None
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, _describe(exc), ref) from None
    return message


def relay_payload(message: RelayedMessage) -> Any:
    """A relayed message's payload as its receivers get it: an ``app``
    payload's exact text, the other payloads' fields."""
    if isinstance(message, AppMessage):
        return message.exact_payload
    return message.payload.as_json()


# --- app payloads: carried as the exact text the client sent ------------------


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# The standard library's C scanner (public in all but its stubs): it parses one
# JSON value, or string, and says where it ends, which is how the payload's own
# text is cut out of the frame.
_scan_value: Callable[[str, int], tuple[Any, int]] = scanner.make_scanner(
    JSONDecoder(parse_constant=_refuse_constant)  # type: ignore[arg-type]
)
_scan_string: Callable[[str, int, bool], tuple[str, int]] = decoder.scanstring  # type: ignore[attr-defined]
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# A string, or an unterminated one to the end: one pass, no retries (linear
# even on a frame that is not JSON).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def _payload_as_written_by_orjson(text: str | bytes, payload: Any) -> orjson.Fragment | None:
    """The fast path of :func:`app_frame`, for the common frame: the payload is
    the last member and the client wrote it exactly as orjson writes the
    decoded value (compact, no big numbers). Proven by comparing the text, so
    it is exact whenever it answers; None sends the frame the slow way."""
    if not isinstance(text, str):
        return None
    try:
        written = orjson.dumps(payload).decode()
    except orjson.JSONEncodeError:
        return None
    member = f'"payload":{written}}}'
    text = text.rstrip(" \t\n\r")
    # A ',' or '{' before the key's quote proves it a top-level key, not the
    # end of one like "x\\"payload" (a quote inside a string is escaped).
    if text.endswith(member) and text[: -len(member)].rstrip(" \t\n\r")[-1:] in (",", "{"):
        return orjson.Fragment(written)
    return None


def app_frame(
    text: str | bytes, ref: object = None
) -> tuple[dict[str, Any], orjson.Fragment | None]:
    """The top-level object of an ``app`` frame, decoded, and its ``payload``
    (the last one, as for any JSON object) as an :class:`orjson.Fragment` of
    exactly the text the client sent: relayed so, big integers, ``-0``, long
    decimals, ``1e400`` and escapes arrive unchanged."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "frame is not valid JSON") from None
    # Checked before the scanner recurses: the frame's object is one level.
    if _nested_deeper_than(text, MAX_APP_PAYLOAD_DEPTH + 1):
        ref = ref[:MAX_ID_CHARS] if isinstance(ref, str) else None
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, TOO_DEEP, ref)
    try:
        frame, span = _split_payload(text)
    except (ValueError, StopIteration, IndexError):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "frame is not valid JSON") from None
    if span is None:
        return frame, None
    return frame, orjson.Fragment(text[span[0] : span[1]])


def _split_payload(text: str) -> tuple[dict[str, Any], tuple[int, int] | None]:
    """Walk the top-level object: decode every member but ``payload``, whose
    span is returned. Raises ValueError (or the scanner's StopIteration) on
    anything that is not one JSON object."""
    index = _WHITESPACE.match(text, 0).end()  # type: ignore[union-attr]
    if text[index] != "{":
        raise ValueError("not an object")
    frame: dict[str, Any] = {}
    payload: tuple[int, int] | None = None
    index = _WHITESPACE.match(text, index + 1).end()  # type: ignore[union-attr]
    if text[index] == "}":
        index += 1
    else:
        while True:
            if text[index] != '"':
                raise ValueError("key expected")
            key, index = _scan_string(text, index + 1, True)
            index = _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]
            if text[index] != ":":
                raise ValueError("':' expected")
            start = _WHITESPACE.match(text, index + 1).end()  # type: ignore[union-attr]
            value, index = _scan_value(text, start)
            if key == "payload":
                payload = (start, index)
                frame.pop("payload", None)  # keep the member order a parser would
            frame[key] = value
            index = _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]
            if text[index] == "}":
                index += 1
                break
            if text[index] != ",":
                raise ValueError("',' or '}' expected")
            index = _WHITESPACE.match(text, index + 1).end()  # type: ignore[union-attr]
    if _WHITESPACE.match(text, index).end() != len(text):  # type: ignore[union-attr]
        raise ValueError("text after the object")
    return frame, payload


def _nested_deeper_than(text: str, limit: int) -> bool:
    """Whether the JSON ``text`` nests arrays and objects deeper than ``limit``.
    Exact, but worked out only when there are that many brackets at all."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for bracket in _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > limit:
            return True
    return False


def _app_frame_orjson_refused(text: str | bytes) -> dict[str, Any]:
    """A frame orjson refused: valid only as an ``app`` frame whose other
    members are plain text (they may be echoed in an ``error``)."""
    not_json = ProtocolError(ErrorCode.INVALID_MESSAGE, "frame is not valid JSON")
    try:
        frame, _ = app_frame(text)
    except ProtocolError:
        raise not_json from None
    if frame.get("type") != ClientMessageType.APP:
        raise not_json
    try:
        orjson.dumps({key: value for key, value in frame.items() if key != "payload"})
    except orjson.JSONEncodeError:
        raise not_json from None
    return frame


def _describe(exc: ValidationError) -> str:
    """One short, client-safe line naming the first problem (no input echoed)."""
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return "missing or unknown message type"
    where = ".".join(str(part) for part in first["loc"][1:]) or "message"
    return f"{where}: {first['msg']}"[:200]


def encode(message: BaseModel) -> bytes:
    """Serialize a server message once, for every receiver."""
    return orjson.dumps(message.model_dump(mode="json", by_alias=True))


PONG_FRAME = encode(PongMessage())
