"""Tests for spiralmix.evaluation: the record's contents for two and K classes, and how the
callbacks receive it."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spiralmix import calibration, metrics, selective
from spiralmix.callbacks import BoundaryImages, EvaluationScalars
from spiralmix.evaluation import (
    GRID_SLICE,
    Evaluation,
    Evaluations,
    EvaluationSettings,
    evaluate,
    forward_in_slices,
    square_grid,
)
from spiralmix.events import RunLogger
from spiralmix.model import MLPEnsemble
from spiralmix.posterior import true_posterior
from spiralmix.train import build_datamodule, build_module, train
from tests.conftest import TINY, compose_config, members


def _setup(*overrides: str, seeds=(1, 2)):
    cfg = compose_config(["evaluation.grid_resolution=12", *overrides])
    runs = members(cfg, list(seeds))
    module, dm = build_module(runs), build_datamodule(runs)
    dm.setup()
    return cfg, module, dm


@pytest.mark.parametrize(("data", "K"), [("spirals", 2), ("spirals3", 3), ("blobs", 2)])
def test_record_shapes_and_metrics(data, K):
    cfg, module, dm = _setup(f"data={data}")
    settings = EvaluationSettings(n_classes=K, grid_resolution=12, ood_radius=cfg.data.radius,
                                  ood_center=tuple(cfg.data.center))  # fmt: skip
    record = evaluate(module.net.eval(), dm, settings, step=7)
    assert isinstance(record, Evaluation) and record.step == 7
    n_test = dm.test_X.shape[1]
    tail = () if K == 2 else (K,)
    assert record.grid.shape == (2, 144, 2)
    assert record.grid_p.shape == (2, 144, *tail)
    assert record.test_p.shape == (2, n_test, *tail)
    assert [sv.shape[:2] for sv in record.spectra] == [(2, K)] * 4
    for name in ("test/acc", "test/loss", "test/ece", "test/brier", "ood/confidence",
                 "boundary/uncertain_fraction", "flatten/layer3/effective_rank"):  # fmt: skip
        assert record.metrics[name].shape == (2,), name
    # The record's numbers are the metrics of its own tensors.
    torch.testing.assert_close(
        record.metrics["test/acc"], metrics.accuracy(record.test_p, dm.test_y)
    )
    erank = metrics.effective_rank(record.spectra[2]).mean(-1)
    torch.testing.assert_close(record.metrics["flatten/layer2/effective_rank"], erank)
    assert record.hidden_codes is None  # a 32-unit last layer: no hidden-space picture


def test_far_from_the_data_confidence_uses_a_ring_outside_the_data():
    cfg, module, dm = _setup("data=moons")
    center, radius = torch.tensor(list(cfg.data.center)), cfg.data.radius
    everything = torch.cat([dm.train_X, dm.test_X], 1)
    # Noise 0.1 can carry a point past the noise-free circle, but not to 1.25 radii.
    assert (everything - center).norm(dim=-1).max() < 1.25 * radius
    settings = EvaluationSettings(ood_center=tuple(cfg.data.center), ood_radius=radius)
    record = evaluate(module.net.eval(), dm, settings, step=0)
    ring = metrics.ring(r_min=1.25 * radius, r_max=1.75 * radius, center=tuple(cfg.data.center))
    p = torch.sigmoid(module.net(ring.expand(2, -1, -1)))
    torch.testing.assert_close(record.metrics["ood/confidence"], metrics.mean_confidence(p))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_maps_computed_in_slices_are_the_bits_of_one_pass(n_classes):
    """30 members on a 100 × 100 grid, and a grid that ends in a partial slice."""
    net = MLPEnsemble([torch.Generator().manual_seed(s) for s in range(30)],
                      n_classes=n_classes).eval()  # fmt: skip
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n_points in (100 * 100, 3 * GRID_SLICE + 17):
            grid = torch.rand(30, n_points, 2, generator=g) * 4 - 2
            assert torch.equal(forward_in_slices(net, grid), net(grid))
            hidden = torch.rand(30, n_points, 32, generator=g)
            assert torch.equal(
                forward_in_slices(net, hidden, net.n_hidden), net(hidden, net.n_hidden)
            )


def test_square_grid_covers_the_points():
    X = torch.tensor([[[0.0, 1.0], [2.0, -1.0]]])
    grid = square_grid(X, 3, margin=0.5)
    assert grid.shape == (1, 9, 2)
    assert grid[0, 0].tolist() == [-0.5, -1.5] and grid[0, -1].tolist() == [2.5, 1.5]


class Recorder:
    def __init__(self, pipeline: list) -> None:
        self.pipeline, self.seen = pipeline, []

    def on_evaluation(self, evaluation: Evaluation) -> None:
        (evaluations,) = self.pipeline
        # Handed on after the history holds the record, in the order of the consumers.
        self.seen.append((evaluation.step, len(evaluations.history), evaluations.latest))


def test_the_pipeline_records_each_evaluation_and_hands_it_to_its_consumers_in_order():
    cfg, module, dm = _setup()
    pipeline: list = []
    first, second = Recorder(pipeline), Recorder(pipeline)
    settings = EvaluationSettings(grid_resolution=12, ood_radius=cfg.data.radius)
    evaluations = Evaluations(module.net, dm, settings, every_n_steps=5, consumers=[first, second])
    pipeline.append(evaluations)
    module.net.train()
    records = [evaluations.evaluate(0), evaluations.evaluate(5)]
    assert module.net.training  # evaluated in eval mode, handed back in train mode
    assert first.seen == second.seen == [(0, 1, records[0]), (5, 2, records[1])]
    assert [h["step"] for h in evaluations.history] == [0, 5]
    assert evaluations.history[-1]["test/acc"] == records[1].metrics["test/acc"].tolist()
    # measure() records nothing and hands nothing on.
    again = evaluations.measure(5)
    assert again.metrics["test/acc"].tolist() == records[1].metrics["test/acc"].tolist()
    assert len(evaluations.history) == 2 and len(first.seen) == 2


def test_the_consumers_write_each_members_run_without_a_trainer(tmp_path):
    """Scalars and figures need nothing but the runs and data they are handed."""
    cfg, module, dm = _setup()
    runs = [RunLogger(save_dir=tmp_path / str(e), name="", version="") for e in range(2)]
    figures = BoundaryImages(runs, ["spirals · none"] * 2, [1, 2], dm, cfg.model.hidden_dims)
    settings = EvaluationSettings(grid_resolution=12, ood_radius=cfg.data.radius)
    consumers = [EvaluationScalars(runs), figures]
    evaluations = Evaluations(module.net, dm, settings, every_n_steps=5, consumers=consumers)
    records = [evaluations.evaluate(0), evaluations.evaluate(5)]
    for run in runs:
        run.finalize("success")
    for e in range(2):
        events = EventAccumulator(str(tmp_path / str(e)), size_guidance={"images": 0})
        events.Reload()
        acc = [(s.step, s.value) for s in events.Scalars("test/acc")]
        assert acc == [(r.step, pytest.approx(r.metrics["test/acc"][e].item())) for r in records]
        assert [i.step for i in events.Images("boundary/test_data")] == [0]  # once
        assert [i.step for i in events.Images("boundary/probability")] == [0, 5]


def test_the_pipeline_evaluates_at_step_0_every_n_steps_and_at_the_end(tmp_path, tiny_config):
    """From a real Trainer run: steps 0, 100 and the last (250, not a multiple of 100)."""
    result = train(tiny_config("trainer.max_steps=250"), tmp_path)[0]
    assert [h["step"] for h in result["history"]] == [0, 100, 200, 250]
    checkpoint = torch.load(tmp_path / "checkpoints" / "step=100.ckpt", weights_only=True)
    assert [h["step"] for h in checkpoint["spiralmix"]["history"]] == [0, 100]


def test_k_class_run_writes_k_class_probabilities(tmp_path):
    cfg = compose_config([*TINY, "data=blobs", "data.n_classes=4", "regularizer=mixup"])
    result = train(cfg, tmp_path)[0]
    saved = torch.load(tmp_path / "boundary.pt", weights_only=True)
    assert saved["grid_p"].shape == (30 * 30, 4)
    assert saved["test_p"].shape == (len(saved["test_y"]), 4)
    assert [sv.shape[0] for sv in saved["spectra"]] == [4] * 4
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["config"]["data"]["name"] == "blobs"
    assert written["config"]["data"]["n_classes"] == 4
    assert result["final"]["test/acc"] > 0.5  # four well separated blobs, 200 steps


def test_calibration_and_far_from_data_metrics_are_the_pure_functions_of_the_record():
    cfg, module, dm = _setup("data=spirals3")
    settings = EvaluationSettings(n_classes=3, grid_resolution=12)
    record = evaluate(module.net.eval(), dm, settings, step=0)
    p, y = record.test_p, dm.test_y
    torch.testing.assert_close(record.metrics["calibration/ece"], calibration.ece(p, y))
    torch.testing.assert_close(record.metrics["calibration/mce"], calibration.mce(p, y))
    ring = metrics.ring(r_min=2.5, r_max=3.5)
    ring_p = metrics.probabilities(module.net(ring.expand(2, -1, -1)))
    expected = selective.auroc(p.amax(-1), ring_p.amax(-1)).float()
    torch.testing.assert_close(record.metrics["ood/auroc_confidence"], expected)
    assert record.metrics["selective/aurc"].shape == (2,)
    # Noise 0 on the spirals: the posterior is degenerate, nothing is compared with it.
    assert not any(name.startswith("truth/") for name in record.metrics)
    assert not any(name.startswith("temperature/") for name in record.metrics)


@pytest.mark.parametrize("data", ["spirals", "spirals3", "checkerboard"])
def test_truth_metrics_compare_with_the_posterior_of_each_members_own_points(data):
    cfg, module, dm = _setup(f"data={data}", "data.noise=0.2")
    settings = EvaluationSettings(n_classes=cfg.data.n_classes, grid_resolution=12)
    record = evaluate(module.net.eval(), dm, settings, step=0)
    truth = true_posterior(dm.generator_keys, dm.test_X[1])  # member 1 alone
    p, y = record.test_p[1], dm.test_y[1]
    gap = (p.double() - truth).abs()
    distance = gap.mean() if p.ndim == 1 else gap.sum(-1).mean() / 2
    assert record.metrics["truth/calibration_error"][1].item() == pytest.approx(distance.item())
    bayes_acc = metrics.accuracy(truth[None], y[None])
    assert record.metrics["truth/bayes_acc"][1].item() == pytest.approx(bayes_acc.item())
    assert (record.metrics["truth/excess_risk"] >= 0).all()
    assert record.metrics["truth/calibration_error_grid"].shape == (2,)
    # Evaluating again reuses the posterior and gives the same numbers.
    again = evaluate(module.net.eval(), dm, settings, step=1)
    for name, value in record.metrics.items():
        assert torch.equal(again.metrics[name], value), name


def test_temperature_is_fitted_on_validation_points_only():
    cfg, module, dm = _setup("data.noise=0.2", "data.test_fraction=0.8", "data.val_fraction=0.1")
    settings = EvaluationSettings(grid_resolution=12, temperature_scaling=True)
    net = module.net.eval()
    record = evaluate(net, dm, settings, step=0)
    T = calibration.fit_temperature(net(dm.val_X), dm.val_y)
    torch.testing.assert_close(record.metrics["temperature/T"], T.float())
    scaled = calibration.scale(net(dm.test_X), T)
    torch.testing.assert_close(record.metrics["temperature/nll"], metrics.nll(scaled, dm.test_y))
    assert "temperature/truth_calibration_error" in record.metrics
    # Changing the test labels changes no temperature.
    dm.test_y = 1 - dm.test_y
    flipped = evaluate(net, dm, settings, step=0)
    assert torch.equal(flipped.metrics["temperature/T"], record.metrics["temperature/T"])


def test_the_new_metrics_reach_metrics_json(tmp_path):
    split = ["data.test_fraction=0.8", "data.val_fraction=0.1"]
    cfg = compose_config([*TINY, "data.noise=0.2", *split, "evaluation.temperature_scaling=true"])
    train(cfg, tmp_path)
    final = json.loads((tmp_path / "metrics.json").read_text())["final"]
    for name in ("truth/bayes_acc", "temperature/T", "selective/aurc", "ood/auroc_confidence",
                 "calibration/ece", "truth/calibration_error_grid"):  # fmt: skip
        assert isinstance(final[name], float), name
    assert 0.5 < final["truth/bayes_acc"] < 1 and final["temperature/T"] > 0


def test_noisy_data_show_the_true_posterior_once_beside_the_learned_maps(tmp_path, tiny_config):
    """boundary/true_posterior: drawn at step 0 where the generator's posterior exists (noise
    > 0), in the learned maps' colours and size; not at all for noise-free spirals."""
    for noise in (0.2, 0.0):
        run_dir = tmp_path / f"noise={noise}"
        train(tiny_config(f"data.noise={noise}", "trainer.max_steps=100"), run_dir)
        events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
        events.Reload()
        tags = events.Tags()["images"]
        assert ("boundary/true_posterior" in tags) == (noise > 0)
        if noise > 0:
            (truth,) = events.Images("boundary/true_posterior")
            (learned, *_) = events.Images("boundary/probability")
            assert truth.step == 0
            assert (truth.width, truth.height) == (learned.width, learned.height)
