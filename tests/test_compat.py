"""Each non-public API that spiralmix/compat.py relies on, against the installed library.

A failure here names the library and its version: an upgrade changed what compat.py uses.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import HydraException
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.summary_pb2 import Summary

from spiralmix import compat, exactness
from spiralmix.adamw import VECTOR_FLOATS
from tests.conftest import CONF_DIR, compose_config

PRESETS = sorted((Path(CONF_DIR) / "regularizer").glob("*.yaml"))


def installed(distribution: str) -> str:
    return f"{distribution} {version(distribution)}"


class StepCounter(pl.LightningModule):
    """Manual optimization that counts 7 steps per batch through compat, none by itself."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        compat.count_optimizer_steps(self.trainer, 7)

    def train_dataloader(self):
        return [torch.zeros(1)] * 3

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_step_counter_moves_global_step(tmp_path):
    trainer = pl.Trainer(
        max_steps=14, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    try:
        trainer.fit(StepCounter())
    except compat.LibraryChanged as err:
        pytest.fail(str(err))
    # 14 = max_steps is reached after two batches of 7 steps; a changed counter stops elsewhere.
    assert trainer.global_step == 14, (
        f"{installed('pytorch-lightning')}: global_step {trainer.global_step} after 2 x 7 "
        "steps counted through compat.count_optimizer_steps"
    )


def test_lightning_step_counter_change_is_named():
    with pytest.raises(compat.LibraryChanged, match=r"pytorch-lightning \d+\.\d+"):
        compat.count_optimizer_steps(object(), 1)


def test_tensorboard_file_writer_writes_one_event_with_several_tags(tmp_path):
    logger = TensorBoardLogger(save_dir=tmp_path, name="", version="")
    try:
        writer = compat.event_file_writer(logger.experiment)
    except compat.LibraryChanged as err:
        pytest.fail(str(err))
    summary = Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in (("a", 1), ("b", 2))])
    writer.add_summary(summary, 5)
    logger.finalize("success")
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    found = {t: [(e.step, e.value) for e in events.Scalars(t)] for t in ("a", "b")}
    assert found == {"a": [(5, 1.0)], "b": [(5, 2.0)]}, installed("torch")


def test_fused_adamw_kernel_steps_like_adamw_step():
    try:
        kernel = compat.fused_adamw_kernel()
    except compat.LibraryChanged as err:
        pytest.fail(str(err))
    ours, theirs = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.AdamW([theirs], lr=0.1, weight_decay=0.5, fused=True)
    theirs.grad = torch.arange(4.0)
    optimizer.step()
    exp_avg, exp_avg_sq, step = torch.zeros(4), torch.zeros(4), torch.tensor(1.0)
    kernel([ours], [torch.arange(4.0)], [exp_avg], [exp_avg_sq], [], [step], amsgrad=False,
           lr=0.1, beta1=0.9, beta2=0.999, weight_decay=0.5, eps=1e-8, maximize=False,
           grad_scale=None, found_inf=None)  # fmt: skip
    assert torch.equal(ours.detach(), theirs.detach()), installed("torch")


def test_hydra_basic_sweeper_expands_like_a_sweep():
    try:
        jobs = compat.plan_basic_sweep(["regularizer=none,mixup", "seed=1,2", "x=3"])
    except compat.LibraryChanged as err:
        pytest.fail(str(err))
    expected = [
        ["regularizer=none", "seed=1", "x=3"],
        ["regularizer=none", "seed=2", "x=3"],
        ["regularizer=mixup", "seed=1", "x=3"],
        ["regularizer=mixup", "seed=2", "x=3"],
    ]
    assert jobs == expected, f"{installed('hydra-core')}: BasicSweeper planned {jobs}"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("regularizer=nonsense", "available " + " ".join(sorted(p.stem for p in PRESETS))),
        ("model.lr=abc", "model.lr"),
    ],
)
def test_hydra_error_wording_gives_short_lines(override, expected):
    with pytest.raises(HydraException) as info:
        compose_config([override])
    try:
        text = ": ".join(compat.hydra_error_lines(info.value))
    except compat.LibraryChanged as err:
        pytest.fail(str(err))
    assert expected in text and "\n" not in text, f"{installed('hydra-core')}: {text!r}"


def test_foreach_ops_are_there_and_compute_what_they_say():
    tensors = [torch.ones(3), torch.full((2,), 2.0)]
    compat.foreach_mul_(tensors, [torch.tensor(3.0), torch.tensor(0.5)])
    compat.foreach_add_(tensors, 1)
    assert tensors[0].tolist() == [4.0] * 3 and tensors[1].tolist() == [2.0] * 2


@pytest.mark.parametrize(
    "check",
    [
        lambda: exactness.check_adamw_vector_width(VECTOR_FLOATS),
        exactness.check_one_logit_layer,
        exactness.check_mixing_arithmetic,
        exactness.check_loss_blocks,
        exactness.check_probability_blocks,
        exactness.check_half_row_sums,
    ],
    ids=[
        "adamw_vector_width",
        "one_logit_layer",
        "mixing_arithmetic",
        "loss_blocks",
        "probability_blocks",
        "half_row_sums",
    ],  # fmt: skip
)
def test_exactness_assumptions_hold_for_this_torch(check):
    """Members equal their runs alone only while these hold; each fails naming torch and
    its version (compat.LibraryChanged)."""
    check()
