"""A run's TensorBoard output; per-step scalars a chunk of steps at a time, in a file of their own.

TensorBoard's own writer frames every event with two CRC-32C checksums computed byte by
byte in Python (tensorflow_stub's ``masked_crc32c``), about 15 µs an event, in a thread
that competes with training for the interpreter: for an ensemble that logs every member's
loss every step this cost as much as the training itself. A chunk's events are known at
once, so :func:`masked_crc32c` computes all their checksums together (a vectorised table
lookup per byte position) and :class:`StepScalarWriter` writes them in one call.

The file is a standard event file (TFRecord framing of ``Event`` protos, see
``tensorboard/summary/writer/record_writer.py``) that TensorBoard reads beside the run's
other event file; its name sorts after the other file of the same process.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.compat.proto.event_pb2 import Event

_CASTAGNOLI = np.uint32(0x82F63B78)  # CRC-32C's polynomial, bits reversed


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ _CASTAGNOLI, table >> 1).astype(np.uint32)
    return table


_TABLE = _crc_table()


def masked_crc32c(blobs: Sequence[bytes]) -> np.ndarray:
    """The masked CRC-32C of each blob, as TFRecord framing wants it: uint32 (n,).

    Equal to ``tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c`` blob by
    blob; one pass over byte positions for all blobs at once.
    """
    lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
    width = int(lengths.max(initial=0))
    present = np.arange(width) < lengths[:, None]  # (n, width): byte i exists in blob b
    data = np.zeros((len(blobs), width), dtype=np.uint32)
    data[present] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    crc = np.full(len(blobs), 0xFFFFFFFF, dtype=np.uint32)
    for i in range(width):
        updated = _TABLE[(crc ^ data[:, i]) & 0xFF] ^ (crc >> 8)
        crc = np.where(present[:, i], updated, crc)
    crc ^= np.uint32(0xFFFFFFFF)
    return ((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)  # wraps modulo 2³²


def frame_records(records: Sequence[bytes]) -> bytes:
    """TFRecord framing: per record its length (uint64), the length's masked CRC, the
    record and the record's masked CRC, little-endian."""
    headers = [struct.pack("<Q", len(r)) for r in records]
    header_crcs, record_crcs = masked_crc32c(headers), masked_crc32c(records)
    return b"".join(
        b"".join((h, struct.pack("<I", hc), r, struct.pack("<I", rc)))
        for h, hc, r, rc in zip(headers, header_crcs.tolist(), records, record_crcs.tolist())
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_scalar_events(
    wall_time: float, steps: Sequence[int], columns: dict[str, Sequence[float]]
) -> list[bytes]:
    """``Event(wall_time, step, summary=Summary(value=[Value(tag, simple_value), ...]))``
    serialised for each step, the values being ``columns[tag][i]`` for the i-th step.

    Written out field by field in the protobuf wire format (what ``SerializeToString``
    gives, a quarter of its time): Event.wall_time (1, double), Event.step (2, varint),
    Event.summary (5, bytes); Summary.value (1, bytes); Value.tag (1, bytes),
    Value.simple_value (2, float).
    """
    values = []
    for tag in columns:
        name = tag.encode()
        value = b"\x0a" + _varint(len(name)) + name + b"\x15"  # then the float32
        values.append(b"\x0a" + _varint(len(value) + 4) + value)
    summary = struct.Struct("<" + "".join(f"{len(v)}sf" for v in values))
    head = b"\x09" + struct.pack("<d", wall_time) + b"\x10"
    tail = b"\x2a" + _varint(summary.size)
    rows = zip(*columns.values())
    return [
        b"".join((head, _varint(step), tail, summary.pack(*_interleave(values, row))))
        for step, row in zip(steps, rows)
    ]


def _interleave(prefixes: list[bytes], row: Sequence[float]) -> list:
    out: list = []
    for prefix, value in zip(prefixes, row):
        out += (prefix, value)
    return out


class StepScalarWriter:
    """One run's per-step scalars in an event file of its own, in the folder ``log_dir``."""

    def __init__(self, log_dir: str | Path) -> None:
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
        self.path = Path(log_dir) / f"{name}.{os.getpid()}.steps"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - open for the run's lifetime
        version = Event(wall_time=time.time(), file_version="brain.Event:2")
        self._file.write(frame_records([version.SerializeToString()]))

    def write(self, steps: Sequence[int], columns: dict[str, Sequence[float]]) -> None:
        """One event per step holding every column's value at that step."""
        records = encode_scalar_events(time.time(), steps, columns)
        if records:
            self._file.write(frame_records(records))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class RunLogger(TensorBoardLogger):
    """One run's TensorBoard logger: Lightning's event file (evaluations, images, text,
    HPARAMS) without its ``hparams.yaml`` (it would be empty: the config is in
    ``.hydra/config.yaml``, ``metrics.json`` and the HPARAMS tab), and ``step_scalars``, the
    per-step scalars' file beside it.

    A resumed run (``purge_step``) starts its Lightning file with TensorBoard's session-start
    event, which drops everything the interrupted process logged from that step on; that
    file is created before the per-step file, so that TensorBoard, reading a folder's files
    in name order, drops the old per-step events and keeps the new ones.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._step_scalars: StepScalarWriter | None = None

    @property
    def step_scalars(self) -> StepScalarWriter:
        if self._step_scalars is None:
            self.experiment.flush()  # Lightning's event file exists (and is named) first
            self._step_scalars = StepScalarWriter(self.log_dir)
        return self._step_scalars

    def save(self) -> None:
        self.experiment.flush()
        if self._step_scalars is not None:
            self._step_scalars.flush()

    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._step_scalars is not None:
            self._step_scalars.close()
