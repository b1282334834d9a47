"""TensorBoard event files, written without TensorFlow or the tensorboard package.

    writer = EventWriter(run_dir / "tensorboard")
    writer.scalars(step=100, values={"loss": 0.12, "traj_per_s": 2400.0})
    writer.close()
    # tensorboard --logdir RUN_DIR/tensorboard

An event file is a sequence of TFRecords (length, masked CRC-32C of the length, data, masked
CRC-32C of the data), each holding one `Event` protocol buffer. Only the few fields scalars
need are written, encoded by hand:

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
              SessionLog session_log = 7; }
    SessionLog { enum Status { START = 1; ... } status = 1; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1  # int64 as two's complement, as protobuf does
    while True:
        low = n & 0x7F
        n >>= 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    return varint(number << 3 | wire_type) + payload


def length_delimited(number: int, data: bytes) -> bytes:
    return field(number, 2, varint(len(data)) + data)


def event(step: int, file_version: str | None = None, values: dict[str, float] | None = None) -> bytes:
    out = field(1, 1, struct.pack("<d", time.time())) + field(2, 0, varint(step))
    if file_version is not None:
        out += length_delimited(3, file_version.encode())
    if values:
        summary = b"".join(length_delimited(1, length_delimited(1, tag.encode()) + field(2, 5, struct.pack("<f", v)))
                           for tag, v in values.items())
        out += length_delimited(5, summary)
    return out


class EventWriter:
    """Appends scalar events to a new event file in `log_dir`, flushed after each write."""

    def __init__(self, log_dir: Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.distgfn"
        self.path = log_dir / name
        self.file = open(self.path, "ab")
        self.file.write(record(event(0, file_version="brain.Event:2")))
        self.file.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.file.write(record(event(step, values=values)))
        self.file.flush()

    def session_start(self, step: int) -> None:
        """Marks a restart at `step`: TensorBoard drops the events at this step and after it that
        an earlier process wrote (a resumed run redoes them)."""
        self.file.write(record(event(step) + length_delimited(7, field(1, 0, varint(1)))))  # SessionLog START
        self.file.flush()

    def close(self) -> None:
        self.file.close()
