"""A TURN allocation probe (RFC 5766/8656) for ``sbd check``.

It does what a browser does with the credentials ``/api/v1/webrtc/config``
hands out: an unauthenticated Allocate to learn the realm and nonce, then an
Allocate with the long-term credential (``key = MD5(user:realm:password)``,
MESSAGE-INTEGRITY = HMAC-SHA1). Success proves the TURN server shares
``SBD_TURN_SECRET``; the allocation is released right away (Refresh with a
lifetime of 0). Blocking sockets with a timeout: it runs once, from a CLI.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import ssl
import struct
from dataclasses import dataclass
from urllib.parse import parse_qs

MAGIC_COOKIE = 0x2112A442
ALLOCATE = 0x0003
REFRESH = 0x0004
SUCCESS = 0x0100
ERROR = 0x0110

ATTR_USERNAME = 0x0006
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_ERROR_CODE = 0x0009
ATTR_LIFETIME = 0x000D
ATTR_REALM = 0x0014
ATTR_NONCE = 0x0015
ATTR_XOR_RELAYED_ADDRESS = 0x0016
ATTR_REQUESTED_TRANSPORT = 0x0019
UDP_PROTOCOL = 17


class TurnProbeError(Exception):
    """The probe could not allocate; ``code`` is the TURN error code if any."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TurnUrl:
    scheme: str  # turn or turns
    host: str
    port: int
    transport: str  # udp or tcp

    @classmethod
    def parse(cls, url: str) -> TurnUrl:
        """``turn:host[:port][?transport=udp|tcp]`` or ``turns:...`` (RFC 7065)."""
        scheme, sep, rest = url.partition(":")
        if not sep or scheme not in ("turn", "turns"):
            raise ValueError(f"{url!r} is not a turn: or turns: URL")
        address, _, query = rest.partition("?")
        transport = parse_qs(query).get("transport", ["tcp" if scheme == "turns" else "udp"])[0]
        if transport not in ("udp", "tcp"):
            raise ValueError(f"{url!r}: transport must be udp or tcp")
        if scheme == "turns" and transport == "udp":
            raise ValueError(f"{url!r}: turns: runs over TCP (TLS), not UDP")
        host, port = _split_host_port(address, 5349 if scheme == "turns" else 3478)
        return cls(scheme, host, port, transport)


def _split_host_port(address: str, default_port: int) -> tuple[str, int]:
    if address.startswith("["):  # [IPv6]:port
        host, _, tail = address[1:].partition("]")
        return host, int(tail[1:]) if tail.startswith(":") else default_port
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default_port
    if not host or not port.isdigit():
        raise ValueError(f"bad host:port {address!r}")
    return host, int(port)


@dataclass(frozen=True)
class Allocation:
    relayed_host: str
    relayed_port: int
    realm: str


def probe(url: str, username: str, password: str, timeout: float = 3.0) -> Allocation:
    """Allocate a relay on the TURN server at ``url`` with these credentials,
    then release it. Raises :class:`TurnProbeError` (or ``OSError``)."""
    target = TurnUrl.parse(url)
    with _Channel(target, timeout) as channel:
        first = channel.request(_message(ALLOCATE, [_requested_transport()]))
        code, attrs = _outcome(first)
        if code != 401 or ATTR_REALM not in attrs or ATTR_NONCE not in attrs:
            raise TurnProbeError(f"expected a 401 challenge, got {_describe(code, attrs)}", code)
        realm, nonce = attrs[ATTR_REALM], attrs[ATTR_NONCE]
        key = hashlib.md5(f"{username}:{realm.decode()}:{password}".encode()).digest()
        for _ in range(2):  # a second try only for a stale nonce (438)
            auth = [
                (ATTR_USERNAME, username.encode()),
                (ATTR_REALM, realm),
                (ATTR_NONCE, nonce),
            ]
            reply = channel.request(_signed(ALLOCATE, [_requested_transport(), *auth], key))
            code, attrs = _outcome(reply)
            if code == 438 and ATTR_NONCE in attrs:
                nonce = attrs[ATTR_NONCE]
                continue
            break
        if code is not None:
            raise TurnProbeError(f"allocation refused: {_describe(code, attrs)}", code)
        host, port = _xor_address(attrs[ATTR_XOR_RELAYED_ADDRESS])
        release = [(ATTR_LIFETIME, struct.pack("!I", 0)), *auth]
        channel.request(_signed(REFRESH, release, key))
        return Allocation(host, port, realm.decode())


# --- messages --------------------------------------------------------------


def _requested_transport() -> tuple[int, bytes]:
    return ATTR_REQUESTED_TRANSPORT, bytes([UDP_PROTOCOL, 0, 0, 0])


def _attributes(attrs: list[tuple[int, bytes]]) -> bytes:
    out = b""
    for kind, value in attrs:
        out += struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)
    return out


def _message(method: int, attrs: list[tuple[int, bytes]], length_extra: int = 0) -> bytes:
    body = _attributes(attrs)
    header = struct.pack(
        "!HHI12s", method, len(body) + length_extra, MAGIC_COOKIE, secrets.token_bytes(12)
    )
    return header + body


def _signed(method: int, attrs: list[tuple[int, bytes]], key: bytes) -> bytes:
    # The HMAC covers the message with its length already counting the
    # MESSAGE-INTEGRITY attribute (4 header + 20 value bytes), RFC 5389 15.4.
    unsigned = _message(method, attrs, length_extra=24)
    digest = hmac.new(key, unsigned, hashlib.sha1).digest()
    return unsigned + struct.pack("!HH", ATTR_MESSAGE_INTEGRITY, 20) + digest


def _parse(data: bytes) -> tuple[int, bytes, dict[int, bytes]]:
    if len(data) < 20:
        raise TurnProbeError("short STUN message")
    kind, length, cookie, transaction = struct.unpack("!HHI12s", data[:20])
    if cookie != MAGIC_COOKIE:
        raise TurnProbeError("not a STUN message (bad magic cookie)")
    attrs: dict[int, bytes] = {}
    offset = 20
    while offset + 4 <= 20 + length:
        attr, size = struct.unpack("!HH", data[offset : offset + 4])
        attrs.setdefault(attr, data[offset + 4 : offset + 4 + size])
        offset += 4 + size + (-size % 4)
    return kind, transaction, attrs


def _outcome(data: bytes) -> tuple[int | None, dict[int, bytes]]:
    """(None, attrs) for a success response, (error code, attrs) for an error."""
    kind, _, attrs = _parse(data)
    if kind & 0x0110 == SUCCESS:
        return None, attrs
    if kind & 0x0110 == ERROR:
        raw = attrs.get(ATTR_ERROR_CODE, b"\0\0\0\0")
        return (raw[2] & 0x7) * 100 + raw[3], attrs
    raise TurnProbeError(f"unexpected STUN message type {kind:#06x}")


def _describe(code: int | None, attrs: dict[int, bytes]) -> str:
    if code is None:
        return "success"
    reason = attrs.get(ATTR_ERROR_CODE, b"\0\0\0\0")[4:].decode(errors="replace")
    return f"{code} {reason}".strip()


def _xor_address(value: bytes) -> tuple[str, int]:
    family, port = struct.unpack("!xBH", value[:4])
    port ^= MAGIC_COOKIE >> 16
    if family == 1:
        address = struct.unpack("!I", value[4:8])[0] ^ MAGIC_COOKIE
        return socket.inet_ntoa(struct.pack("!I", address)), port
    raise TurnProbeError("IPv6 relayed addresses are not decoded by this probe")


# --- transport -------------------------------------------------------------


class _Channel:
    """One socket to the TURN server; a request gets the matching response."""

    def __init__(self, target: TurnUrl, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.sock: socket.socket | None = None

    def __enter__(self) -> _Channel:
        target = self.target
        if target.transport == "udp":
            family = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM)[0][0]
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
            # Three tries over UDP (datagrams get lost), within the timeout.
            self.sock.settimeout(self.timeout / 3)
            self.sock.connect((target.host, target.port))
        else:
            sock = socket.create_connection((target.host, target.port), self.timeout)
            if target.scheme == "turns":
                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=target.host)
            self.sock = sock
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sock is not None:
            self.sock.close()

    def request(self, message: bytes) -> bytes:
        assert self.sock is not None
        transaction = message[8:20]
        for attempt in range(3 if self.target.transport == "udp" else 1):
            self.sock.sendall(message)
            try:
                while True:
                    reply = self._receive()
                    if reply[8:20] == transaction:
                        return reply
            except TimeoutError:
                if attempt == 2 or self.target.transport != "udp":
                    raise TurnProbeError(f"no answer within {self.timeout}s") from None
        raise TurnProbeError("no answer")

    def _receive(self) -> bytes:
        assert self.sock is not None
        if self.target.transport == "udp":
            return self.sock.recv(2048)
        header = self._read_exactly(20)
        return header + self._read_exactly(struct.unpack("!H", header[2:4])[0])

    def _read_exactly(self, size: int) -> bytes:
        assert self.sock is not None
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise TurnProbeError("the TURN server closed the connection")
            data += chunk
        return data
