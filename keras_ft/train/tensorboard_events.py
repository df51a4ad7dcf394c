"""TensorBoard event files written without TensorFlow.

An event file is a TFRecord file of `Event` protos. Training would otherwise
import TensorFlow (~570 MB resident, seconds of start-up) only to write a few
scalars per step, and the `tensorboard` package, whose writer needs no
TensorFlow, is not a dependency. So the few protobuf fields a scalar needs are
encoded here, as torch's and tensorboardX's writers do: the same records
`tf.summary.write` writes for a scalar (a float tensor whose metadata names
the "scalars" plugin), which TensorBoard and
`tf.compat.v1.train.summary_iterator` read alike.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path

_WRITERS = itertools.count(1)


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C (Castagnoli), rotated and offset ("masked")."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: length, its checksum, the data, its checksum."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


# Protobuf wire format: a field is a varint key (number << 3 | wire type).
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # wire type 2: length-delimited
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:  # wire type 0: varint
    return _varint(number << 3) + _varint(value)


def _double_field(number: int, value: float) -> bytes:  # wire type 1: 64-bit
    return _varint(number << 3 | 1) + struct.pack("<d", value)


_DT_FLOAT = 1  # tensorflow/core/framework/types.proto
_DATA_CLASS_SCALAR = 1  # tensorboard's summary.proto DataClass

# SummaryMetadata{plugin_data: {plugin_name: "scalars"}, data_class: SCALAR}
_SCALAR_METADATA = _field(1, _field(1, b"scalars")) + _int_field(4, _DATA_CLASS_SCALAR)


def scalar_value(tag: str, value: float) -> bytes:
    """A `Summary.Value`: `tag`, a scalar float tensor, the "scalars" metadata."""
    # TensorProto{dtype: DT_FLOAT, tensor_shape: {} (a scalar), tensor_content}
    tensor = _int_field(1, _DT_FLOAT) + _field(2, b"") + _field(4, struct.pack("<f", value))
    return _field(1, tag.encode("utf-8")) + _field(8, tensor) + _field(9, _SCALAR_METADATA)


def event(step: int, value: bytes, wall_time: float | None = None) -> bytes:
    """An `Event` at `step` holding a `Summary` of one `value`."""
    wall_time = time.time() if wall_time is None else wall_time
    return _double_field(1, wall_time) + _int_field(2, step) + _field(5, _field(1, value))


class EventFileWriter:
    """Appends scalar summaries to a new event file in `log_dir`.

    Named as TensorFlow names its files (`events.out.tfevents.<time>.<host>.
    <pid>.<n>.v2`), headed by the `brain.Event:2` version record; each `write`
    is flushed, so TensorBoard shows a step as soon as it is written.
    """

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = (
            f"events.out.tfevents.{int(now)}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_WRITERS)}.v2"
        )
        self.path = self.log_dir / name
        self._file = open(self.path, "ab")
        self._file.write(tfrecord(_double_field(1, now) + _field(3, b"brain.Event:2")))
        self._file.flush()

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Writes `scalars` (tag -> value) at `step`, an event each (as TensorFlow)."""
        self._file.write(
            b"".join(
                tfrecord(event(int(step), scalar_value(tag, float(value))))
                for tag, value in scalars.items()
            )
        )
        self._file.flush()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
