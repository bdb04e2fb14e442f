"""/asyncapi.json: the WebSocket protocol as AsyncAPI 2.6, generated from the
Pydantic schemas, checked against them and against frames a real server sends."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from pydantic import BaseModel, TypeAdapter

from second_brain_database.webrtc import asyncapi
from second_brain_database.webrtc.schemas import (
    ClientMessageType,
    CloseCode,
    ServerMessageType,
    parse_client_frame,
)
from tests.peers import Device, Peer, make_token
from tests.servers import SbdServer


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi.asyncapi_document()


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def operation_types(
    document: dict[str, Any], operation: str, address: str = asyncapi.CHANNEL
) -> set[str]:
    channel = document["channels"][address]
    kinds: set[str] = set()
    for message_ref in channel[operation]["message"]["oneOf"]:
        message = resolve(document, message_ref["$ref"])
        kinds.update(asyncapi._message_types(resolve(document, message["payload"]["$ref"])))
    return kinds


def test_document_is_well_formed_asyncapi(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "2.6.0"
    assert document["info"]["title"] and document["info"]["version"]
    assert set(document["channels"]) == {"/ws/webrtc/{room_id}", "/ws/user"}
    channel = document["channels"]["/ws/webrtc/{room_id}"]
    assert set(channel["parameters"]) == {"room_id"}  # every {param} of the address
    assert {"publish", "subscribe"} <= set(channel)
    for ref in refs(document):  # every $ref resolves
        resolve(document, ref)
    for name, message in document["components"]["messages"].items():
        assert message["name"] == name and message["payload"]["$ref"]


USER_SOCKET_ONLY = {"ready", "incoming-call"}


def test_every_message_type_of_the_schemas_is_documented(document: dict[str, Any]) -> None:
    assert operation_types(document, "publish") == {t.value for t in ClientMessageType} - {
        "call-answer"
    }
    assert (
        operation_types(document, "subscribe")
        == {t.value for t in ServerMessageType} - USER_SOCKET_ONLY
    )
    user = asyncapi.USER_CHANNEL
    assert operation_types(document, "publish", user) == {
        "call",
        "call-answer",
        "call-cancel",
        "ping",
        "refresh",
        "leave",
    }
    assert operation_types(document, "subscribe", user) == USER_SOCKET_ONLY | {
        "call-state",
        "pong",
        "error",
    }
    for address in (asyncapi.CHANNEL, user):
        codes = document["channels"][address]["x-close-codes"]
        assert set(codes) == {str(int(code)) for code in CloseCode}


def test_payload_schemas_are_the_models_own(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for model in asyncapi.client_models():
        own = model.model_json_schema(ref_template=asyncapi.REF_TEMPLATE)
        own.pop("$defs", None)
        assert schemas[model.__name__] == own, model.__name__
    for model in asyncapi.server_models():
        own = model.model_json_schema(mode="serialization", ref_template=asyncapi.REF_TEMPLATE)
        own.pop("$defs", None)
        assert schemas[model.__name__] == own, model.__name__


async def test_served_document_matches_and_real_frames_fit_it(server: SbdServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        served = (await http.get("/asyncapi.json")).json()
    assert served == asyncapi.asyncapi_document(f"127.0.0.1:{server.port}", "ws")

    # Frames a real server sent, each valid for the message the document names.
    by_type: dict[str, type[BaseModel]] = {}
    for model in asyncapi.server_models():
        schema = served["components"]["schemas"][model.__name__]
        for kind in asyncapi._message_types(schema):
            by_type[kind] = model
    a = await Peer.join(server.ws_url, "asyncapi-room", make_token("alice"))
    b = await Peer.join(server.ws_url, "asyncapi-room", make_token("bob"))
    frames = [a.welcome, b.welcome, await a.expect("user-joined")]
    client_frames: list[dict[str, Any]] = [
        b.offer(a.peer_id),
        {"type": "ping"},
        {"type": "bogus"},
    ]
    for frame in client_frames:
        await b.send(frame)
    frames += [await a.expect("offer"), await b.expect("pong"), await b.expect("error")]
    await b.send({"type": "leave"})
    frames.append(await a.expect("user-left"))
    for frame in frames:
        TypeAdapter(by_type[frame["type"]]).validate_python(frame)
    for frame in client_frames[:2]:  # what the client sent is what the document allows
        parse_client_frame(orjson.dumps(frame))
    await a.close()


async def test_real_user_socket_frames_fit_the_document(server: SbdServer) -> None:
    by_type: dict[str, type[BaseModel]] = {}
    for model in asyncapi.server_models():
        schema = asyncapi.asyncapi_document()["components"]["schemas"][model.__name__]
        for kind in asyncapi._message_types(schema):
            by_type[kind] = model
    phone = await Device.ready(server.ws_url, "asyncapi-bob")
    caller = await Device.ready(server.ws_url, "asyncapi-alice")
    sent: list[dict[str, Any]] = [
        {"type": "call", "id": "c", "payload": {"to_user": "asyncapi-bob", "room_id": "r"}},
        {"type": "ping"},
    ]
    for frame in sent:
        await caller.send(frame)
    ringing, pong = await caller.expect("call-state"), await caller.expect("pong")
    incoming = await phone.expect("incoming-call")
    await phone.answer(incoming["payload"]["call_id"])
    accepted = await phone.expect("call-state")
    await phone.send({"type": "offer", "to": "x", "payload": {"type": "offer", "sdp": "v=0"}})
    refused = await phone.expect("error")
    frames = [phone.welcome, caller.welcome, ringing, pong, incoming, accepted, refused]
    for frame in frames:
        TypeAdapter(by_type[frame["type"]]).validate_python(frame)
    for frame in sent:
        parse_client_frame(orjson.dumps(frame))
    await phone.close()
    await caller.close()
