"""spiralmix.events: scalars and figures as TensorBoard writes and reads them."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_accumulator import (
    EventAccumulator as PluginEventAccumulator,
)
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tb_crc
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util.tensor_util import make_ndarray
from torch.utils.tensorboard.summary import image as tb_image

from spiralmix.events import (
    EnsembleLogger,
    RunLogger,
    encode_image_event,
    encode_png,
    encode_scalar_events,
    frame_records,
    masked_crc32c,
)
from spiralmix.maps import read_maps
from spiralmix.module import MixupClassifier


def test_checksums_equal_tensorboards_for_blobs_of_any_length():
    gen = torch.Generator().manual_seed(0)
    lengths = [0, 1, 7, 8, 9, 64, 200, *torch.randint(0, 120, (200,), generator=gen).tolist()]
    blobs = [bytes(torch.randint(0, 256, (n,), generator=gen).tolist()) for n in lengths]
    assert masked_crc32c(blobs).tolist() == [tb_crc(b) for b in blobs]
    assert masked_crc32c([b"123456789"]).tolist() == [tb_crc(b"123456789")]
    # Long blobs: figures.
    lengths = [63, 64, 65, 128, 129, 1000, 4097, 65536, 200_001]
    blobs = [bytes(torch.randint(0, 256, (n,), generator=gen).tolist()) for n in lengths]
    assert masked_crc32c(blobs).tolist() == [tb_crc(b) for b in blobs]
    assert masked_crc32c(blobs[:1] + [b""] + blobs[-1:]).tolist() == [
        tb_crc(blobs[0]), tb_crc(b""), tb_crc(blobs[-1])]  # fmt: skip


def test_checksums_come_from_the_c_library():
    # Its pure-Python fallback is as slow as TensorBoard's own: figures would cost ms each.
    import google_crc32c

    assert google_crc32c.implementation == "c"


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


def _figure_like(height: int = 60, width: int = 80) -> np.ndarray:
    """Flat colours with a few noisy rows, as an RGB (H, W, 3) uint8 image."""
    gen = torch.Generator().manual_seed(1)
    image = torch.zeros(height, width, 3, dtype=torch.uint8)
    image[:, : width // 2] = torch.tensor([33, 102, 172], dtype=torch.uint8)
    image[height // 3 : height // 2] = torch.randint(0, 256, (height // 2 - height // 3, width, 3),
                                                     generator=gen, dtype=torch.uint8)  # fmt: skip
    return image.numpy()


def test_png_decodes_to_the_same_pixels_as_tensorboards_encoding():
    image = _figure_like()
    ours = np.asarray(Image.open(io.BytesIO(encode_png(image))))
    theirs = tb_image("x", image, dataformats="HWC").value[0].image
    assert ours.dtype == np.uint8 and np.array_equal(ours, image)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(theirs.encoded_image_string))), ours)
    event = Event.FromString(encode_image_event(5.0, 7, "x", image))
    ours_meta = event.summary.value[0].image
    assert (event.step, event.summary.value[0].tag) == (7, "x")
    assert (ours_meta.height, ours_meta.width, ours_meta.colorspace) == (
        theirs.height, theirs.width, theirs.colorspace)  # fmt: skip
    for bad in (image.astype(np.float32), image[..., 0], image[..., :2]):
        with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
            encode_png(bad)


def test_run_logger_writes_per_step_scalars_that_tensorboard_reads(tmp_path):
    logger = RunLogger(save_dir=tmp_path, name="", version="")
    logger.experiment.add_scalar("test/acc", 0.5, 0)
    losses = [1.0 / (s + 1) for s in range(500)]
    for chunk in range(2):  # two chunks of 250 steps, k and λ beside the loss
        rows = range(250 * chunk, 250 * (chunk + 1))
        columns = {"train/loss": [losses[s] for s in rows], "mixup/k": [float(s % 4) for s in rows]}
        logger.events.write_scalars([s + 1 for s in rows], columns)
    logger.events.write_images(500, {"boundary/probability": _figure_like()})
    logger.finalize("success")
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 501))
    assert [e.value for e in loss] == [torch.tensor(v).item() for v in losses]  # float32
    assert [e.value for e in events.Scalars("mixup/k")][:5] == [0.0, 1.0, 2.0, 3.0, 0.0]
    assert [e.step for e in events.Scalars("test/acc")] == [0]
    (figure,) = events.Images("boundary/probability")
    decoded = np.asarray(Image.open(io.BytesIO(figure.encoded_image_string)))
    assert figure.step == 500 and np.array_equal(decoded, _figure_like())
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2  # Lightning's, and ours


def test_a_resumed_run_shows_each_step_once_scalars_and_kept_maps_alike(tmp_path):
    """The interrupted process logged steps 0–400; the resumed one (purge_step=400) logs
    400 again, then 600. TensorBoard (and spiralmix-render) show each step once, the
    resumed process's values."""
    old = RunLogger(save_dir=tmp_path, name="", version="")
    for step in (0, 200, 400):
        old.events.write_scalars([step], {"test/acc": [0.5]})
        old.events.write_arrays(step, {"maps/probability": np.full((2, 2), 1, np.uint8)})
    old.finalize("success")
    time.sleep(1.1)  # event files are named by the second
    new = RunLogger(save_dir=tmp_path, name="", version="", purge_step=400)
    for step in (400, 600):
        new.events.write_scalars([step], {"test/acc": [0.75]})
        new.events.write_arrays(step, {"maps/probability": np.full((2, 2), 2, np.uint8)})
    new.finalize("success")
    assert _scalars(tmp_path)["test/acc"] == [(0, 0.5), (200, 0.5), (400, 0.75), (600, 0.75)]
    events = PluginEventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    events.Reload()
    kept = [
        (e.step, make_ndarray(e.tensor_proto)[0, 0]) for e in events.Tensors("maps/probability")
    ]
    assert kept == [(0, 1), (200, 1), (400, 2), (600, 2)]
    assert sorted(read_maps(tmp_path)) == [0, 200, 400, 600]


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_one_member_ensemble_logger_puts_self_log_into_the_members_run(tmp_path):
    run = RunLogger(save_dir=tmp_path, name="", version="")
    logger = EnsembleLogger([run], tmp_path)
    logger.log_metrics({"custom/value": 2.5}, step=7)
    logger.finalize("success")
    assert _scalars(tmp_path)["custom/value"] == [(7, 2.5)]


def test_ensemble_logger_refuses_one_number_for_several_members(tmp_path):
    runs = [RunLogger(save_dir=tmp_path / str(e), name="", version="") for e in range(2)]
    logger = EnsembleLogger(runs, tmp_path)
    with pytest.raises(ValueError, match=r"'custom/value'.*2 members.*members\[e\]"):
        logger.log_metrics({"custom/value": 2.5}, step=7)
    logger.finalize("success")
    assert all("custom/value" not in _scalars(tmp_path / str(e)) for e in range(2))


def test_a_checkpoint_flushes_every_members_events(tmp_path):
    """What was written up to a checkpoint is on disk before the process could be killed."""
    runs = [RunLogger(save_dir=tmp_path / str(e), name="", version="") for e in range(2)]
    logger = EnsembleLogger(runs, tmp_path)
    for e, run in enumerate(runs):
        run.events.write_scalars([1, 2], {"train/loss": [0.5 + e, 0.25 + e]})
    logger.after_save_checkpoint(None)  # what ModelCheckpoint calls after each save
    for e in range(2):  # read while the files are still open, as after a kill
        assert _scalars(tmp_path / str(e))["train/loss"] == [(1, 0.5 + e), (2, 0.25 + e)]
    logger.finalize("success")


def test_a_run_has_one_lightning_logger_for_all_members(tmp_path, tiny_config, monkeypatch):
    import spiralmix.train as train_module

    seen = []

    class RunConfigsAndLoggers(train_module.RunConfigsInCheckpoints):
        def on_train_start(self, trainer, pl_module):
            seen.extend(trainer.loggers)

    monkeypatch.setattr(train_module, "RunConfigsInCheckpoints", RunConfigsAndLoggers)
    train_module.train(tiny_config("seeds=[1,2,3]"), tmp_path)
    (logger,) = seen
    assert isinstance(logger, EnsembleLogger) and len(logger.members) == 3
    assert [Path(m.log_dir) for m in logger.members] == [tmp_path / f"seed={s}" for s in (1, 2, 3)]


class LoggingClassifier(MixupClassifier):
    """A Lightning user's habit: ``self.log`` in ``training_step``."""

    def training_step(self, batch, batch_idx):
        super().training_step(batch, batch_idx)
        self.log("custom/chunk", float(batch_idx + 1))


def _train_logging(tmp_path, tiny_config, monkeypatch, *overrides):
    import spiralmix.train as train_module

    monkeypatch.setattr(train_module, "MixupClassifier", LoggingClassifier)
    return train_module.train(tiny_config(*overrides), tmp_path)


def test_self_log_in_a_one_member_run_lands_in_its_run(tmp_path, tiny_config, monkeypatch):
    _train_logging(tmp_path, tiny_config, monkeypatch)
    # One point per training_step call (a chunk of 50 steps), at Lightning's count of the
    # calls before it.
    assert _scalars(tmp_path)["custom/chunk"] == [(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)]
    assert "train/loss" in _scalars(tmp_path)  # beside the run's own scalars


def test_self_log_in_an_ensemble_fails_naming_the_key(tmp_path, tiny_config, monkeypatch):
    with pytest.raises(ValueError, match=r"self\.log\('custom/chunk'\).*2 members.*members\[e\]"):
        _train_logging(tmp_path, tiny_config, monkeypatch, "seeds=[1,2]")
    for seed in (1, 2):  # nothing half-logged into either member's run
        assert "custom/chunk" not in _scalars(tmp_path / f"seed={seed}")
