"""spiralmix.events: per-step scalars as TensorBoard writes and reads them."""

from __future__ import annotations

import math

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tb_crc
from tensorboard.summary.writer.record_writer import RecordWriter

from spiralmix.events import RunLogger, encode_scalar_events, frame_records, masked_crc32c


def test_checksums_equal_tensorboards_for_blobs_of_any_length():
    gen = torch.Generator().manual_seed(0)
    lengths = [0, 1, 7, 8, 9, 64, 200, *torch.randint(0, 120, (200,), generator=gen).tolist()]
    blobs = [bytes(torch.randint(0, 256, (n,), generator=gen).tolist()) for n in lengths]
    assert masked_crc32c(blobs).tolist() == [tb_crc(b) for b in blobs]
    assert masked_crc32c([b"123456789"]).tolist() == [tb_crc(b"123456789")]


def test_framing_equals_tensorboards_record_writer(tmp_path):
    records = [b"", b"a", b"spiralmix" * 20]
    with open(tmp_path / "theirs", "wb") as f:
        writer = RecordWriter(f)
        for record in records:
            writer.write(record)
    assert frame_records(records) == (tmp_path / "theirs").read_bytes()


def test_encoded_events_parse_to_the_events_protobuf_would_make():
    columns = {
        "train/loss": [0.5, 0.0, -1e-30, math.inf],
        "mixup/k": [2.0, 3.0, 0.0, -1.0],
        "mixup/lambda": [0.3, 0.1, 0.2, 0.9],
    }
    steps = [1, 127, 128, 2**40]  # one- to six-byte varints
    for i, record in enumerate(encode_scalar_events(1234.5, steps, columns)):
        event = Event.FromString(record)
        values = [Summary.Value(tag=tag, simple_value=v[i]) for tag, v in columns.items()]
        assert event == Event(wall_time=1234.5, step=steps[i], summary=Summary(value=values))


def test_run_logger_writes_per_step_scalars_that_tensorboard_reads(tmp_path):
    logger = RunLogger(save_dir=tmp_path, name="", version="")
    logger.experiment.add_scalar("test/acc", 0.5, 0)
    losses = [1.0 / (s + 1) for s in range(500)]
    for chunk in range(2):  # two chunks of 250 steps, k and λ beside the loss
        rows = range(250 * chunk, 250 * (chunk + 1))
        columns = {"train/loss": [losses[s] for s in rows], "mixup/k": [float(s % 4) for s in rows]}
        logger.step_scalars.write([s + 1 for s in rows], columns)
    logger.finalize("success")
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 501))
    assert [e.value for e in loss] == [torch.tensor(v).item() for v in losses]  # float32
    assert [e.value for e in events.Scalars("mixup/k")][:5] == [0.0, 1.0, 2.0, 3.0, 0.0]
    assert [e.step for e in events.Scalars("test/acc")] == [0]
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2  # Lightning's, and ours
