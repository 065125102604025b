"""TensorBoard scalar event files without TensorFlow or tensorboard installed.

An event file is a TFRecord stream of ``Event`` protos: each record is
``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``. We encode the
handful of proto fields scalars need by hand (Event.wall_time = 1, step = 2, file_version = 3,
summary = 5; Summary.value = 1; Value.tag = 1, simple_value = 2), which TensorBoard reads as usual:
``tensorboard --logdir runs/``.
"""
from __future__ import annotations

import socket
import struct
import time
from pathlib import Path


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
    return _varint((num << 3) | wire) + payload


def _length_delimited(num: int, payload: bytes) -> bytes:
    return _field(num, 2, _varint(len(payload)) + payload)


def encode_event(wall_time: float, step: int | None = None, scalars: dict[str, float] | None = None,
                 file_version: str | None = None) -> bytes:
    msg = _field(1, 1, struct.pack("<d", wall_time))
    if step is not None:
        msg += _field(2, 0, _varint(step))
    if file_version is not None:
        msg += _length_delimited(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _length_delimited(1, _length_delimited(1, tag.encode()) + _field(2, 5, struct.pack("<f", value)))
            for tag, value in scalars.items())
        msg += _length_delimited(5, summary)
    return msg


def record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


class SummaryWriter:
    """Append scalar summaries to ``logdir/events.out.tfevents.<time>.<host>``."""

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.path = self.logdir / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self._f = self.path.open("ab")
        self._f.write(record(encode_event(time.time(), file_version="brain.Event:2")))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        finite = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._f.write(record(encode_event(time.time(), step, finite)))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_events(path: str | Path) -> list[bytes]:
    """The records of an event file, with both CRCs checked (for tests and debugging)."""
    data = Path(path).read_bytes()
    out, i = [], 0
    while i < len(data):
        header = data[i:i + 8]
        (n,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[i + 8:i + 12])
        if hcrc != masked_crc32c(header):
            raise ValueError(f"bad length CRC at byte {i}")
        body = data[i + 12:i + 12 + n]
        (bcrc,) = struct.unpack("<I", data[i + 12 + n:i + 16 + n])
        if bcrc != masked_crc32c(body):
            raise ValueError(f"bad data CRC at byte {i}")
        out.append(body)
        i += 16 + n
    return out
