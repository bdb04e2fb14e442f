"""RFC 6455 framing, server side, without I/O: client frames in, events out.

:class:`ClientFrameParser` takes the bytes a client sends after the handshake
and calls a :class:`FrameHandler` once per complete message, ping, pong or
close, or once with the close code a violation earns (1002, 1007, 1009);
:func:`encode_frame` builds the server's (unmasked) frames. No extension is
ever negotiated (permessage-deflate is off), so every reserved bit must be 0.

It replaces the ``websockets`` library's parser for the data phase of
``sbd serve``'s connections (native_ws.py) because that parser, a chain of
generators, costs about 3.5 us per frame and this one under 1 us; the
handshake stays the library's. docs/conformance.md lists the cases checked.
"""

from __future__ import annotations

import codecs
import struct
from typing import Protocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets installed without its C extension
    from websockets.utils import apply_mask

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FIN = 0x80

PROTOCOL_ERROR, INVALID_DATA, MESSAGE_TOO_BIG = 1002, 1007, 1009
NO_STATUS = 1005
# Close codes a peer may send (RFC 6455 section 7.4, the IANA registry):
# 1004-1006 and 1015 are reserved, 1016-2999 unassigned, 3000-4999 for use.
_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})

# Fragments one message may have (the default of SBD_MAX_MESSAGE_FRAGMENTS).
MAX_FRAGMENTS = 1024

_HEADER_16 = struct.Struct("!BBH")
_utf8_decoder = codecs.getincrementaldecoder("utf-8")
_HEADER_64 = struct.Struct("!BBQ")


def encode_frame(first_byte: int, payload: bytes) -> bytes:
    """A server frame: ``first_byte`` is FIN | opcode; never masked."""
    length = len(payload)
    if length < 126:
        return bytes((first_byte, length)) + payload
    if length < 65536:
        return _HEADER_16.pack(first_byte, 126, length) + payload
    return _HEADER_64.pack(first_byte, 127, length) + payload


def text_frame(payload: bytes) -> bytes:
    return encode_frame(FIN | OP_TEXT, payload)


class FrameHandler(Protocol):
    def on_message(self, data: str | bytes) -> None:
        """A complete text (``str``, valid UTF-8) or binary message."""

    def on_ping(self, payload: bytes) -> None: ...

    def on_pong(self, payload: bytes) -> None: ...

    def on_close(self, code: int, reason: str, payload: bytes) -> None:
        """The client's close frame (``payload`` as received, to echo)."""

    def on_violation(self, code: int, reason: str) -> None:
        """The client broke the protocol: close with ``code``."""


class ClientFrameParser:
    """Masked client frames to handler calls, across any split of the bytes.

    Every complete message before a violation in the same bytes is handed
    on first. A text message's UTF-8 is checked as it arrives, fragment by
    fragment and, for a frame that is still arriving, read by read, so that
    invalid text fails at once with 1007 (RFC 6455 section 8.1). A message
    being assembled is one buffer, whatever its number of fragments, and is
    bounded in bytes (``max_size``) and fragments (``max_fragments``): 1009
    past either. After a close frame or a violation it ignores what follows."""

    __slots__ = (
        "_buffer",
        "_checked",
        "_decoder",
        "_done",
        "_fragments",
        "_handler",
        "_max_fragments",
        "_max_size",
        "_message",
        "_opcode",
    )

    def __init__(self, handler: FrameHandler, max_size: int, max_fragments: int) -> None:
        self._handler = handler
        self._max_size = max_size
        self._max_fragments = max_fragments
        self._buffer = b""
        self._done = False
        # A fragmented message in progress: its opcode (OP_CONT: none), its
        # bytes so far and its number of fragments.
        self._opcode = OP_CONT
        self._message = bytearray()
        self._fragments = 0
        # The UTF-8 check of a text message that arrives in pieces, and how
        # many payload bytes of the frame at the head of _buffer it has seen.
        self._decoder: codecs.IncrementalDecoder | None = None
        self._checked = 0

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        available = len(data)
        position = 0
        while available - position >= 2:
            first, second = data[position], data[position + 1]
            opcode = first & 0x0F
            if first & 0x70:
                return self._violation(PROTOCOL_ERROR, "reserved bits must be 0")
            if not second & 0x80:
                return self._violation(PROTOCOL_ERROR, "client frames must be masked")
            length = second & 0x7F
            start = position + 2
            if length == 126:
                if available - start < 2:
                    break
                length = int.from_bytes(data[start : start + 2], "big")
                start += 2
            elif length == 127:
                if available - start < 8:
                    break
                length = int.from_bytes(data[start : start + 8], "big")
                start += 8
                if length >> 63:
                    return self._violation(PROTOCOL_ERROR, "invalid frame length")
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    return self._violation(PROTOCOL_ERROR, "unknown opcode")
                if not first & FIN:
                    return self._violation(PROTOCOL_ERROR, "fragmented control frame")
                if length > 125:
                    return self._violation(PROTOCOL_ERROR, "control frame too long")
            elif opcode > OP_BINARY:
                return self._violation(PROTOCOL_ERROR, "unknown opcode")
            elif opcode != OP_CONT:
                if self._opcode != OP_CONT:
                    return self._violation(PROTOCOL_ERROR, "expected a continuation frame")
                if length > self._max_size:
                    # Checked on the header: an announced 2**62 bytes is
                    # refused before a byte of it is buffered.
                    return self._violation(MESSAGE_TOO_BIG, "message too big")
            elif self._opcode == OP_CONT:
                return self._violation(PROTOCOL_ERROR, "continuation without a message")
            elif self._fragments >= self._max_fragments:
                return self._violation(MESSAGE_TOO_BIG, "too many fragments")
            elif len(self._message) + length > self._max_size:
                return self._violation(MESSAGE_TOO_BIG, "message too big")
            end = start + 4 + length
            if available < end:
                if opcode == OP_TEXT or (opcode == OP_CONT and self._opcode == OP_TEXT):
                    self._check_arrived(data, start, available)
                    if self._done:
                        return
                break
            payload = apply_mask(data[start + 4 : end], data[start : start + 4])
            position = end
            if opcode >= OP_CLOSE:
                self._control(opcode, payload)
            else:
                self._data(opcode, first & FIN, payload)
            if self._done:
                return
        if position < available:
            self._buffer = data[position:]

    def _check_arrived(self, data: bytes, start: int, available: int) -> None:
        """Check the UTF-8 of the part of a text frame that has arrived."""
        checked = self._checked
        if available - start - 4 <= checked:
            return
        mask = data[start : start + 4]
        if checked & 3:  # the mask continues where the checked part ends
            mask = mask[checked & 3 :] + mask[: checked & 3]
        if self._decoder is None:
            self._decoder = _utf8_decoder()
        try:
            self._decoder.decode(apply_mask(data[start + 4 + checked : available], mask))
        except UnicodeDecodeError:
            return self._violation(INVALID_DATA, "invalid UTF-8")
        self._checked = available - start - 4
        return None

    def _data(self, opcode: int, fin: int, payload: bytes) -> None:
        if opcode == OP_CONT:
            opcode = self._opcode
        elif fin and self._decoder is None:
            # The common case: a whole message in one frame, in one read.
            if opcode == OP_BINARY:
                return self._handler.on_message(payload)
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                return self._violation(INVALID_DATA, "invalid UTF-8")
            return self._handler.on_message(text)
        if opcode == OP_TEXT:
            checked, self._checked = self._checked, 0
            if self._decoder is None:
                self._decoder = _utf8_decoder()
            try:
                self._decoder.decode(payload[checked:] if checked else payload, bool(fin))
            except UnicodeDecodeError:
                return self._violation(INVALID_DATA, "invalid UTF-8")
        if not fin:
            self._opcode = opcode
            self._message += payload
            self._fragments += 1
            return None
        message = bytes(self._message + payload) if self._message else payload
        self._opcode, self._message, self._fragments = OP_CONT, bytearray(), 0
        self._decoder = None
        if opcode == OP_BINARY:
            return self._handler.on_message(message)
        return self._handler.on_message(message.decode())  # checked above

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            return self._handler.on_ping(payload)
        if opcode == OP_PONG:
            return self._handler.on_pong(payload)
        if not payload:
            code, reason = NO_STATUS, ""
        elif len(payload) == 1:
            return self._violation(PROTOCOL_ERROR, "close frame too short")
        else:
            code = int.from_bytes(payload[:2], "big")
            if code not in _SENDABLE_CLOSE_CODES and not 3000 <= code < 5000:
                return self._violation(PROTOCOL_ERROR, "invalid close code")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                return self._violation(INVALID_DATA, "invalid UTF-8 in close reason")
        self._done = True
        return self._handler.on_close(code, reason, payload)

    def _violation(self, code: int, reason: str) -> None:
        self._done = True
        self._buffer = b""
        self._message = bytearray()
        self._handler.on_violation(code, reason)
