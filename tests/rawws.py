"""A raw RFC 6455 client: hand-built frames over a plain socket, so tests can
send what no WebSocket library would (unmasked frames, reserved bits, bad
UTF-8, broken fragmentation, invalid close codes) and read exactly what the
server answers."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
from dataclasses import dataclass

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass(frozen=True)
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != CLOSE or len(self.payload) < 2:
            return None
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code


class HandshakeRefused(Exception):
    def __init__(self, status_line: str, headers: dict[str, str]) -> None:
        super().__init__(status_line)
        self.status_line = status_line
        self.headers = headers


def build_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
) -> bytes:
    head = bytearray([(0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode & 0xF])
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head.append(mask_bit | length)
    elif length < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack("!H", length)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", length)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class RawWebSocket:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    @classmethod
    def open(
        cls,
        port: int,
        path: str,
        *,
        headers: str = "",
        version: str = "13",
        timeout: float = 5,
        rcvbuf: int | None = None,
    ) -> RawWebSocket:
        """Handshake (checking ``Sec-WebSocket-Accept``) or raise HandshakeRefused.
        ``rcvbuf``: the socket's receive buffer, set before connecting (a
        client that reads slowly, with a small window from the start)."""
        key = base64.b64encode(os.urandom(16)).decode()
        sock = socket.socket()
        sock.settimeout(timeout)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", port))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: {version}\r\n{headers}\r\n"
        )
        sock.sendall(request.encode())
        ws = cls(sock)
        status_line, answer_headers = ws._read_http_head()
        if not status_line.startswith("HTTP/1.1 101"):
            sock.close()
            raise HandshakeRefused(status_line, answer_headers)
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert answer_headers.get("sec-websocket-accept") == accept
        return ws

    @staticmethod
    def send_raw_request(port: int, request: bytes, timeout: float = 5) -> str:
        """Send any bytes as the request; return the status line of the answer."""
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            ws = RawWebSocket(sock)
            return ws._read_http_head()[0]

    def _read_http_head(self) -> tuple[str, dict[str, str]]:
        while b"\r\n\r\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return lines[0], headers

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **options: bool | int) -> None:
        self.sock.sendall(build_frame(opcode, payload, **options))  # type: ignore[arg-type]

    def _read_exact(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def recv_frame(self) -> Frame:
        first, second = self._read_exact(2)
        assert not second & 0x80, "the server masked a frame"
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read_exact(8))[0]
        return Frame(bool(first & 0x80), first >> 4 & 0x7, first & 0xF, self._read_exact(length))

    def expect_close(self) -> Frame:
        """Read to the server's close frame (data frames before it are dropped),
        answer it as a client does, and check that the server then closes the
        TCP connection."""
        while True:
            frame = self.recv_frame()
            if frame.opcode == CLOSE:
                break
        with contextlib.suppress(OSError):
            self.send_frame(CLOSE, frame.payload[:2])
        self.sock.settimeout(3)
        try:
            while self.sock.recv(4096):
                pass
        except TimeoutError:
            raise AssertionError("the server did not close the TCP connection") from None
        except ConnectionResetError:
            pass
        return frame

    def close(self) -> None:
        self.sock.close()
