"""Test-only signing keys and a real HTTP server publishing them as a JWKS."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


@dataclass
class KeyPair:
    private: Any
    kid: str

    @property
    def public_pem(self) -> str:
        pem: bytes = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode()

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
        data: dict[str, Any] = json.loads(algorithm.to_jwk(public))
        return {**data, "kid": self.kid, "use": "sig"}

    def sign(self, algorithm: str, claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(
            claims, self.private, algorithm=algorithm, headers={"kid": self.kid, **headers}
        )


def rsa_key(kid: str) -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid)


def ec_key(kid: str) -> KeyPair:
    return KeyPair(ec.generate_private_key(ec.SECP256R1()), kid)


def claims(user: str = "alice", ttl: float = 600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": user, "iat": now, "exp": now + ttl, **extra}


@dataclass
class JwksServer:
    """Serves ``document`` at ``url``; counts requests, can answer slowly."""

    document: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    delay_s: float = 0.0
    requests: int = 0
    url: str = ""

    def publish(self, *keys: KeyPair) -> None:
        self.document = {"keys": [key.jwk() for key in keys]}


@contextmanager
def jwks_server() -> Iterator[JwksServer]:
    state = JwksServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            time.sleep(state.delay_s)
            body = json.dumps(state.document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/.well-known/jwks.json"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
