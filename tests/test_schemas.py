"""Client frames are parsed once, validated per type, and fail as error payloads."""

from __future__ import annotations

import types
from typing import Literal, Union, get_args, get_origin

import pytest

from second_brain_database.webrtc.schemas import (
    AppMessage,
    ErrorCode,
    IceCandidateMessage,
    IceCandidatePayload,
    MediaState,
    MediaStateMessage,
    OfferMessage,
    OfferPayload,
    PayloadModel,
    ProtocolError,
    parse_client_frame,
)


def test_offer_parses_with_target_and_ignores_forged_sender() -> None:
    message = parse_client_frame(
        '{"type": "offer", "to": "p1", "from": "evil", "payload": {"type": "offer", "sdp": "v=0"}}'
    )
    assert isinstance(message, OfferMessage)
    assert message.to == "p1"
    assert "from" not in message.model_dump()


def test_end_of_candidates_is_an_empty_candidate() -> None:
    message = parse_client_frame('{"type": "ice-candidate", "payload": {"candidate": ""}}')
    assert isinstance(message, IceCandidateMessage)
    assert message.payload.candidate == ""
    assert message.to is None


def test_app_payload_is_any_json() -> None:
    message = parse_client_frame('{"type": "app", "payload": [1, {"a": null}]}')
    assert isinstance(message, AppMessage)
    assert message.payload == [1, {"a": None}]


def test_media_state_refuses_unknown_fields() -> None:
    assert isinstance(
        parse_client_frame('{"type": "media-state", "payload": {"audio": true}}'), MediaStateMessage
    )
    with pytest.raises(ProtocolError):
        parse_client_frame('{"type": "media-state", "payload": {"volume": 11}}')


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "offer", "payload": {"type": "offer", "sdp": "' + "x" * 60_001 + '"}}',
        '{"type": "ice-candidate", "payload": {"candidate": "' + "c" * 2_049 + '"}}',
        '{"type": "offer", "to": "' + "p" * 65 + '", "payload": {"type": "offer", "sdp": "v"}}',
        '{"type": "ice-candidate", "payload": {"candidate": "", "sdpMLineIndex": 70000}}',
    ],
)
def test_size_bounds(frame: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame(frame)
    assert caught.value.code is ErrorCode.INVALID_MESSAGE


def test_deeply_nested_json_is_an_error_not_a_crash() -> None:
    with pytest.raises(ProtocolError):
        parse_client_frame('{"type": "app", "payload": ' + "[" * 5000 + "]" * 5000 + "}")


def test_error_does_not_echo_the_input() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame('{"type": "media-state", "id": "r9", "payload": {"audio": "SECRET"}}')
    assert caught.value.ref == "r9"
    assert "SECRET" not in caught.value.message
    assert b'"ref":"r9"' in caught.value.frame()


def _payload_models() -> list[type[PayloadModel]]:
    found, todo = [], list(PayloadModel.__subclasses__())
    while todo:
        model = todo.pop()
        found.append(model)
        todo.extend(model.__subclasses__())
    return found


@pytest.mark.parametrize("model", _payload_models(), ids=lambda m: m.__name__)
def test_payloads_are_flat_so_as_json_is_model_dump(model: type[PayloadModel]) -> None:
    """``as_json`` (the relay hot path) equals ``model_dump(exclude_none=True)``
    only for flat models: every field a str, int or bool, a Literal of
    strings, or one of those or None."""
    flat = {str, int, bool, type(None)}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if get_origin(annotation) is Literal:
            kinds = {type(value) for value in get_args(annotation)}
        elif get_origin(annotation) in (Union, types.UnionType):
            kinds = set(get_args(annotation))
        else:
            kinds = {annotation}
        assert kinds <= flat, f"{model.__name__}.{name}: {annotation}"


@pytest.mark.parametrize(
    "payload",
    [
        OfferPayload(type="offer", sdp="v=0"),
        IceCandidatePayload(candidate="candidate:1 1 udp 1 10.0.0.1 9 typ host", sdpMLineIndex=0),
        IceCandidatePayload(candidate="", sdpMid="0", sdpMLineIndex=1, usernameFragment="u"),
        MediaState(audio=False),
        MediaState(),
    ],
)
def test_as_json_matches_model_dump(payload: PayloadModel) -> None:
    assert payload.as_json() == payload.model_dump(exclude_none=True)
    assert list(payload.as_json()) == list(payload.model_dump(exclude_none=True))
