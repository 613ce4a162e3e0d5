"""A run's TensorBoard output: what spiralmix logs often, encoded and checksummed in bulk.

TensorBoard's own writer frames every event with two CRC-32C checksums computed byte by
byte in Python (tensorflow_stub's ``masked_crc32c``: about 15 µs for a scalar event, 6 ms
for a figure), in a thread that competes with training for the interpreter, and encodes
figures as PNG with row filters chosen one by one at zlib level 6. For an ensemble that
logs every member's loss every step and four figures per member at every evaluation, this
cost as much as the training itself. :class:`EventWriter` writes the per-step scalars a
chunk of steps at a time, and an evaluation's scalars and figures at once, with their
checksums computed in C (:func:`masked_crc32c`) and figures as unfiltered PNG at
zlib level 1 (:func:`encode_png`: lossless, as small for flat-coloured plots, five times
as fast).

The file is a standard event file (TFRecord framing of ``Event`` protos, see
``tensorboard/summary/writer/record_writer.py``) that TensorBoard reads beside the run's
other event file; its name sorts after the other file of the same process.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import DataClass, Summary, SummaryMetadata
from tensorboard.util.tensor_util import make_tensor_proto

# Arrays a run keeps for later (spiralmix.maps): no TensorBoard dashboard shows this plugin.
ARRAYS_PLUGIN = "spiralmix_arrays"


def masked_crc32c(blobs: Sequence[bytes]) -> np.ndarray:
    """The masked CRC-32C of each blob, as TFRecord framing wants it: uint32 (n,).

    Equal to ``tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c`` blob by
    blob; the checksums come from google-crc32c's C library (hundreds of times faster than
    TensorBoard's byte-by-byte Python loop on a figure), the mask is applied to all at once.
    """
    crc = np.fromiter(map(google_crc32c.value, blobs), dtype=np.uint32, count=len(blobs))
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


def encode_png(image: np.ndarray) -> bytes:
    """A lossless PNG of an RGB image (H, W, 3) uint8: rows unfiltered, deflated at level 1.

    Plots are flat colours: fast deflate on raw rows compresses them about as well as PIL's
    default (a filter chosen per row, level 6) in a fifth of the time.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"an (H, W, 3) uint8 image is needed, got {image.dtype} {image.shape}")
    height, width, _ = image.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # filter byte 0: none
    rows[:, 1:] = image.reshape(height, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        checksum = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    pixels = zlib.compress(rows.tobytes(), 1)
    return b"".join((b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header), chunk(b"IDAT", pixels),
                     chunk(b"IEND", b"")))  # fmt: skip


def encode_image_event(wall_time: float, step: int, tag: str, image: np.ndarray) -> bytes:
    """The event ``SummaryWriter.add_image(tag, image, step, dataformats="HWC")`` writes, for
    an RGB image (H, W, 3) uint8, serialised."""
    height, width, channels = image.shape
    png = Summary.Image(height=height, width=width, colorspace=channels,
                        encoded_image_string=encode_png(image))  # fmt: skip
    summary = Summary(value=[Summary.Value(tag=tag, image=png)])
    return Event(wall_time=wall_time, step=step, summary=summary).SerializeToString()


def encode_array_event(wall_time: float, step: int, tag: str, array: np.ndarray) -> bytes:
    """A tensor summary of ``array`` (any shape and dtype, kept exactly) under the plugin
    :data:`ARRAYS_PLUGIN`, serialised; read back with TensorBoard's ``EventAccumulator``
    (``Tensors(tag)``) and ``tensor_util.make_ndarray``."""
    metadata = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=ARRAYS_PLUGIN),
        data_class=DataClass.DATA_CLASS_TENSOR,
    )
    value = Summary.Value(tag=tag, metadata=metadata, tensor=make_tensor_proto(array))
    return Event(wall_time=wall_time, step=step, summary=Summary(value=[value])).SerializeToString()


class EventWriter:
    """The events of one run that spiralmix encodes itself, in an event file of its own in
    the folder ``log_dir``: per-step scalars, evaluations' scalars, figures and arrays."""

    def __init__(self, log_dir: str | Path) -> None:
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
        self.path = Path(log_dir) / f"{name}.{os.getpid()}.spiralmix"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - open for the run's lifetime
        version = Event(wall_time=time.time(), file_version="brain.Event:2")
        self._file.write(frame_records([version.SerializeToString()]))

    def write_scalars(self, steps: Sequence[int], columns: Mapping[str, Sequence[float]]) -> None:
        """One event per step holding every column's value at that step."""
        self._write(encode_scalar_events(time.time(), steps, columns))

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """One event per image (H, W, 3) uint8, by tag, at ``step``."""
        now = time.time()
        self._write([encode_image_event(now, step, tag, image) for tag, image in images.items()])

    def write_arrays(self, step: int, arrays: Mapping[str, np.ndarray]) -> None:
        """One tensor event per array, by tag, at ``step`` (see :func:`encode_array_event`)."""
        now = time.time()
        self._write([encode_array_event(now, step, tag, a) for tag, a in arrays.items()])

    def _write(self, records: Sequence[bytes]) -> None:
        if records:
            self._file.write(frame_records(records))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class RunLogger(TensorBoardLogger):
    """One run's TensorBoard logger: Lightning's event file (the test data's figure, text,
    HPARAMS) without its ``hparams.yaml`` (it would be empty: the config is in
    ``.hydra/config.yaml``, ``metrics.json`` and the HPARAMS tab), and ``events``, the file
    of per-step scalars and evaluations beside it.

    Every process starts its Lightning file with TensorBoard's session-start event, at step
    0 or, resuming, at ``purge_step``. TensorBoard takes a folder's first start for the
    run's beginning and each later one for a restart, which drops everything logged from
    its step on (scalars, images and kept maps alike). The Lightning file is created
    before the other one, so that TensorBoard, reading a folder's files in name order,
    drops the old process's events and keeps the new ones.
    """

    def __init__(self, *args, purge_step: int | None = None, **kwargs) -> None:
        # A first run's start too: without it, a resumed run's start would be the first.
        super().__init__(*args, purge_step=0 if purge_step is None else purge_step, **kwargs)
        self._events: EventWriter | None = None

    @property
    def events(self) -> EventWriter:
        if self._events is None:
            self.experiment.flush()  # Lightning's event file exists (and is named) first
            self._events = EventWriter(self.log_dir)
        return self._events

    def save(self) -> None:
        self.experiment.flush()
        if self._events is not None:
            self._events.flush()

    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._events is not None:
            self._events.close()


class EnsembleLogger(Logger):
    """The one Lightning logger of an ensemble: it owns each member's :class:`RunLogger`
    (``members[e]``: member e's TensorBoard run), so ``trainer.loggers`` has one entry.

    ``self.log`` in the module lands in the member's run when there is one member; with
    several, one number has no run to go to, and it raises instead of writing the same
    number into every member's run. Per-member numbers go through ``members[e]``. Every
    checkpoint flushes every member's event files, so a kill loses no event at or before
    the checkpointed step.
    """

    def __init__(self, members: Sequence[RunLogger], save_dir: str | Path) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member's logger")
        self.members = list(members)
        self._save_dir = str(save_dir)

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def experiment(self) -> list:
        """Each member's ``SummaryWriter``."""
        return [member.experiment for member in self.members]

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if len(self.members) > 1:
            # Lightning adds "epoch" to what self.log logged: name only the user's keys.
            keys = [k for k in metrics if k != "epoch"] or list(metrics)
            raise ValueError(
                f"self.log({', '.join(map(repr, keys))}) logs one number for an ensemble of "
                f"{len(self.members)} members; write member e's value through "
                "trainer.logger.members[e] (spiralmix.events.EnsembleLogger)"
            )
        self.members[0].log_metrics(metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        for member in self.members:
            member.log_hyperparams(params, *args, **kwargs)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self.save()

    @rank_zero_only
    def save(self) -> None:
        for member in self.members:
            member.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        for member in self.members:
            member.finalize(status)
