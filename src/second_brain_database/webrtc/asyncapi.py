"""The WebSocket protocol as an AsyncAPI 2.6 document, built from the Pydantic
models of :mod:`.schemas` at run time, so the document cannot drift from
what the server validates and sends. Served at ``/asyncapi.json``.

AsyncAPI's point of view is the server's: ``publish`` lists what clients
send, ``subscribe`` what they receive.
"""

from __future__ import annotations

from typing import Any, get_args

from fastapi import APIRouter, Request
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from second_brain_database.webrtc.schemas import (
    ROOM_ID_PATTERN,
    CloseCode,
    RoomClientMessage,
    ServerMessage,
    UserClientMessage,
    UserServerMessage,
)

ASYNCAPI_VERSION = "2.6.0"
CHANNEL = "/ws/webrtc/{room_id}"
USER_CHANNEL = "/ws/user"
REF_TEMPLATE = "#/components/schemas/{model}"

CLOSE_CODES: dict[int, str] = {
    CloseCode.NORMAL: "after `leave`",
    CloseCode.GOING_AWAY: "the server is shutting down; resume elsewhere",
    CloseCode.POLICY_VIOLATION: "`Origin` not in SBD_ALLOWED_ORIGINS",
    CloseCode.MESSAGE_TOO_BIG: "a frame larger than SBD_MAX_MESSAGE_BYTES",
    CloseCode.SERVICE_RESTART: "the server is restarting; resume elsewhere",
    CloseCode.UNAUTHORIZED: "missing, invalid or expired token, room not allowed, "
    "bad resume token, or kicked",
    CloseCode.ROOM_FULL: "room is full",
    CloseCode.RATE_LIMITED: "kept sending past the rate limit",
    CloseCode.INVALID_ROOM: "invalid room id",
}


def close_codes() -> dict[str, str]:
    """Every close code of the schemas; one without a sentence here gets its name."""
    return {
        str(int(code)): CLOSE_CODES.get(code, code.name.lower().replace("_", " "))
        for code in CloseCode
    }


def _union_members(union: Any) -> list[type[BaseModel]]:
    """The models of a (possibly Annotated, possibly nested) union."""
    members: list[type[BaseModel]] = []
    for arg in get_args(union) or (union,):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            members.append(arg)
        elif get_args(arg):
            members.extend(m for m in _union_members(arg) if m not in members)
    return members


def _merged(*unions: Any) -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = []
    for union in unions:
        models.extend(m for m in _union_members(union) if m not in models)
    return models


def client_models() -> list[type[BaseModel]]:
    """What clients send, on either socket."""
    return _merged(RoomClientMessage, UserClientMessage)


def server_models() -> list[type[BaseModel]]:
    """What the server sends, on either socket."""
    return _merged(ServerMessage, UserServerMessage)


def _operations(sends: Any, receives: Any, first: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A channel's ``publish`` and ``subscribe``: the messages of its unions."""

    def one_of(union: Any, prefix: str) -> list[dict[str, str]]:
        return [
            {"$ref": f"#/components/messages/{prefix}{m.__name__}"} for m in _union_members(union)
        ]

    return (
        {
            "operationId": "clientSends",
            "summary": "Frames a client sends.",
            "message": {"oneOf": one_of(sends, "client.")},
        },
        {
            "operationId": "clientReceives",
            "summary": f"Frames the server sends; `{first}` is always first.",
            "message": {"oneOf": one_of(receives, "server.")},
        },
    )


def _summary(model: type[BaseModel]) -> str:
    # The docstring's first paragraph, as one line.
    paragraph = (model.__doc__ or "").strip().split("\n\n", 1)[0]
    return " ".join(paragraph.split()).replace("``", "`") or model.__name__


def _message_types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("properties", {}).get("type", {})
    if "const" in kind:
        return [kind["const"]]
    return list(kind.get("enum", []))


def asyncapi_document(server_url: str = "localhost:8000", protocol: str = "ws") -> dict[str, Any]:
    clients, servers = client_models(), server_models()
    # Client frames as the server validates them, server frames as it sends them.
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((m, "validation") for m in clients),
        *((m, "serialization") for m in servers),
    ]
    refs, top = models_json_schema(pairs, ref_template=REF_TEMPLATE)
    schemas: dict[str, Any] = top.get("$defs", {})

    messages: dict[str, Any] = {}
    for model, mode in pairs:
        ref = refs[(model, mode)]["$ref"]
        name = ("client." if mode == "validation" else "server.") + model.__name__
        schema = schemas[ref.rsplit("/", 1)[1]]
        messages[name] = {
            "name": name,
            "title": ", ".join(_message_types(schema)) or model.__name__,
            "summary": _summary(model),
            "contentType": "application/json",
            "payload": {"$ref": ref},
        }
    room_publish, room_subscribe = _operations(RoomClientMessage, ServerMessage, "welcome")
    user_publish, user_subscribe = _operations(UserClientMessage, UserServerMessage, "ready")

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:second-brain-database:signaling",
        "info": {
            "title": "Second Brain Database signaling",
            "version": "1",
            "description": (
                "Room-based WebRTC signaling over one WebSocket per peer, and user sockets "
                "that ring a user's devices for calls. Every frame is a "
                "JSON object in a text frame with a `type`. Generated from the server's "
                "Pydantic models; see docs/protocol.md for the rules around them."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {"signaling": {"url": server_url, "protocol": protocol}},
        "channels": {
            CHANNEL: {
                "description": "A peer's session in room `room_id`.",
                "parameters": {
                    "room_id": {"schema": {"type": "string", "pattern": ROOM_ID_PATTERN}}
                },
                "bindings": {
                    "ws": {
                        "bindingVersion": "0.1.0",
                        "query": {
                            "type": "object",
                            "properties": {
                                "token": {"type": "string", "description": "access token (JWT)"},
                                "ticket": {
                                    "type": "string",
                                    "description": "single-use ticket, in place of token",
                                },
                                "resume": {
                                    "type": "string",
                                    "description": "resume_token of an earlier welcome",
                                },
                            },
                        },
                    }
                },
                "publish": room_publish,
                "subscribe": room_subscribe,
                "x-close-codes": close_codes(),
            },
            USER_CHANNEL: {
                "description": "A device of the token's user, reachable for calls.",
                "bindings": {
                    "ws": {
                        "bindingVersion": "0.1.0",
                        "query": {
                            "type": "object",
                            "properties": {
                                "token": {"type": "string", "description": "access token (JWT)"}
                            },
                        },
                    }
                },
                "publish": user_publish,
                "subscribe": user_subscribe,
                "x-close-codes": close_codes(),
            },
        },
        "components": {"schemas": schemas, "messages": messages},
    }


router = APIRouter(tags=["protocol"])


@router.get("/asyncapi.json", summary="The WebSocket protocol as an AsyncAPI 2.6 document")
async def asyncapi(request: Request) -> dict[str, Any]:
    secure = request.url.scheme == "https"
    return asyncapi_document(request.url.netloc, "wss" if secure else "ws")
