"""One evaluation of an ensemble: its metrics and the tensors its figures need, as a record.

:func:`evaluate` is a plain function of the network and the data. :class:`Evaluations` is
the one place that runs it during training (step 0, every N steps, the last step), keeps
the history and hands each record to the consumers ``train.py`` wires to it (scalars,
figures, hparams, progress), so that no consumer reads another object's attributes or
depends on the order of Lightning's hooks.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pytorch_lightning as pl
import torch

from spiralmix import calibration, metrics, selective
from spiralmix.model import MLPEnsemble
from spiralmix.posterior import true_posterior


@dataclass(frozen=True)
class EvaluationSettings:
    n_classes: int = 2
    grid_resolution: int = 100  # grid points per side
    ece_bins: int = 15
    flatten_fraction: float = 0.1  # a singular value counts above this share of the top one
    ood_center: tuple[float, float] = (0.0, 0.0)  # the data lie within ood_radius of it
    ood_radius: float = 2.0
    temperature_scaling: bool = False  # fit T on the validation points (there must be some)


@dataclass
class Evaluation:
    """Everything one evaluation of E members measured; tensors have a leading member axis.

    Probabilities are of class 1, (E, ·), for two classes and per class, (E, ·, K), for K > 2.
    """

    step: int
    metrics: dict[str, torch.Tensor]  # name (e.g. "test/acc") → (E,)
    grid: torch.Tensor  # (E, R², 2) a square grid over each member's test data ± 0.5
    grid_p: torch.Tensor  # (E, R²) or (E, R², K) probabilities on the grid
    test_p: torch.Tensor  # (E, n_test) or (E, n_test, K)
    reliability: dict[str, torch.Tensor]  # see metrics.reliability: count, confidence, ...
    spectra: list[torch.Tensor]  # per layer 0..n_hidden: (E, K, D) class singular values
    # Only when the last hidden layer has 2 units (and K = 2): a picture of hidden space.
    hidden_codes: torch.Tensor | None = None  # (E, n_train, 2) training points' codes
    hidden_grid: torch.Tensor | None = None  # (E, R², 2) a grid over the codes
    hidden_grid_p: torch.Tensor | None = None  # (E, R²) probabilities on that grid
    # Where the generator's posterior is known (spiralmix.posterior): p* on the grid.
    grid_truth: torch.Tensor | None = None  # (E, R²) or (E, R², K), as grid_p
    last: bool = False  # the last evaluation of this training (its last step, or a stop)


class EvaluationConsumer(Protocol):
    """What :class:`Evaluations` hands each record to, as soon as it is made."""

    def on_evaluation(self, evaluation: Evaluation) -> None: ...


def square_grid(
    X: torch.Tensor, resolution: int, margin: float | torch.Tensor = 0.5
) -> torch.Tensor:
    """A resolution² grid per member covering its points X (E, N, 2) ± margin (a number,
    or (E, 2) per member and axis): (E, R², 2), row i and column j at (xs[j], ys[i])."""
    R = resolution
    lo, hi = X.amin(1) - margin, X.amax(1) + margin  # (E, 2)
    t = torch.linspace(0, 1, R)
    xs = lo[:, :1] + (hi[:, :1] - lo[:, :1]) * t  # (E, R)
    ys = lo[:, 1:] + (hi[:, 1:] - lo[:, 1:]) * t
    gx = xs.unsqueeze(1).expand(-1, R, -1)
    gy = ys.unsqueeze(2).expand(-1, -1, R)
    return torch.stack([gx, gy], -1).reshape(len(X), R * R, 2)


@torch.no_grad()
def evaluate(
    net: MLPEnsemble, data: pl.LightningDataModule, settings: EvaluationSettings, step: int
) -> Evaluation:
    """Evaluate every member of ``net`` (in eval mode; the caller restores train mode) on its
    own test, training and validation points, a grid over the plane, a ring far from the
    data, and the class-conditional spectra of its hidden layers.

    ``data`` holds ``{train,val,test}_X`` (E, N, 2) and ``{train,val,test}_y`` (E, N), and
    the generator's keys as ``generator_keys`` (see :class:`spiralmix.data.SpiralDataModule`):
    where the generator's posterior is known (:mod:`spiralmix.posterior`) the ``truth/``
    metrics compare the members with it. With ``settings.temperature_scaling`` each member's
    temperature is fitted on its validation points and the ``temperature/`` metrics measure
    the scaled test predictions.
    """
    out: dict[str, torch.Tensor] = {}
    K = settings.n_classes
    test_p = reliability = None
    logits_of: dict[str, torch.Tensor] = {}
    for split, prefix in (("test", "test"), ("train", "train_clean"), ("val", "val")):
        X, y = getattr(data, f"{split}_X"), getattr(data, f"{split}_y")
        if X.shape[1] == 0:
            continue
        logits = logits_of[split] = net(X)
        p = metrics.probabilities(logits)
        out[f"{prefix}/loss"] = metrics.nll(logits, y)
        out[f"{prefix}/acc"] = metrics.accuracy(p, y)
        if split == "test":
            out["test/nll"] = out["test/loss"]
            out["test/brier"] = metrics.brier_score(p, y)
            reliability = metrics.reliability(p, y, settings.ece_bins)  # the diagram's data too
            out["test/ece"] = metrics.calibration_error(reliability)
            test_p = p
    grid = square_grid(data.test_X, settings.grid_resolution)
    grid_p = metrics.probabilities(forward_in_slices(net, grid))
    out["boundary/uncertain_fraction"] = metrics.uncertain_fraction(grid_p)
    r = settings.ood_radius
    ring = metrics.ring(r_min=1.25 * r, r_max=1.75 * r, center=settings.ood_center)
    ring_p = metrics.probabilities(net(ring.expand(net.n_members, -1, -1)))
    out["ood/confidence"] = metrics.mean_confidence(ring_p)
    spectra = []
    h = data.train_X
    for k in range(net.n_hidden + 1):
        if k > 0:
            h = net(h, k - 1, k)  # the training points after hidden layer k
        sv = metrics.class_singular_values(h, data.train_y, K)  # (E, K, D)
        out[f"flatten/layer{k}/top_sv"] = sv[..., 0].mean(-1)
        sig = metrics.n_significant(sv, settings.flatten_fraction)
        out[f"flatten/layer{k}/n_significant"] = sig.mean(-1)
        out[f"flatten/layer{k}/effective_rank"] = metrics.effective_rank(sv).mean(-1)
        spectra.append(sv)
    out.update(_calibration_metrics(test_p, data.test_y, ring_p, settings.ece_bins))
    truth = _ground_truth(data, grid)
    if truth is not None:
        out.update(_truth_metrics(test_p, grid_p, data.test_y, *truth))
    if settings.temperature_scaling:
        T = calibration.fit_temperature(logits_of["val"], data.val_y)  # never the test points
        scaled = calibration.scale(logits_of["test"], T)
        scaled_p = metrics.probabilities(scaled)
        out["temperature/T"] = T.float()
        out["temperature/nll"] = metrics.nll(scaled, data.test_y)
        out["temperature/ece"] = calibration.ece(scaled_p, data.test_y, settings.ece_bins)
        if truth is not None:
            out["temperature/truth_calibration_error"] = _distance(scaled_p, truth[0])
    record = Evaluation(step, out, grid, grid_p, test_p, reliability, spectra)
    if truth is not None:
        record.grid_truth = truth[1].float()
    if net.dims[-2] == 2 and K == 2:  # a 2-D bottleneck: its hidden space can be drawn
        codes = h  # (E, n_train, 2): the last hidden layer's output
        # ±10% of the codes' span per axis: their scale is arbitrary and changes in training.
        margin = 0.1 * (codes.amax(1) - codes.amin(1)).clamp_min(1e-3)
        hidden_grid = square_grid(codes, settings.grid_resolution, margin)  # (E, R², 2)
        record.hidden_codes, record.hidden_grid = codes, hidden_grid
        record.hidden_grid_p = metrics.probabilities(
            forward_in_slices(net, hidden_grid, net.n_hidden)
        )
    return record


GRID_SLICE = 256  # grid points per member and forward pass; a multiple of 32


def forward_in_slices(net: MLPEnsemble, points: torch.Tensor, start: int = 0) -> torch.Tensor:
    """``net(points, start)`` for many points (E, n, width), GRID_SLICE points per member
    at a time: a 30-member map's hidden states at once are 38 MB a layer, sliced they stay
    in cache, four to six times faster. Each point's logits are the bits of one pass over
    all points (a test checks it for this torch build and processor)."""
    return torch.cat([net(part, start) for part in points.split(GRID_SLICE, 1)], 1)


def _calibration_metrics(
    test_p: torch.Tensor, y: torch.Tensor, ring_p: torch.Tensor, n_bins: int
) -> dict[str, torch.Tensor]:
    """Calibration binned as the literature bins it, selective prediction on the test set,
    and how well top-label confidence and entropy tell test points from the far ring."""
    confidence, correct, _ = metrics.top_label(test_p, y)
    ring_confidence = metrics.top_label(ring_p, torch.zeros(ring_p.shape[:2]))[0]
    return {
        "calibration/ece": calibration.ece(test_p, y, n_bins),
        "calibration/ece_adaptive": calibration.adaptive_ece(test_p, y, n_bins),
        "calibration/mce": calibration.mce(test_p, y, n_bins),
        "calibration/classwise_ece": calibration.classwise_ece(test_p, y, n_bins),
        "calibration/confidence_gap": calibration.confidence_gap(test_p, y),
        "selective/aurc": selective.aurc(confidence, correct).float(),
        # Test points are the positives: they should get the higher score.
        "ood/auroc_confidence": selective.auroc(confidence, ring_confidence).float(),
        "ood/auroc_entropy": selective.auroc(
            -selective.entropy(test_p), -selective.entropy(ring_p)
        ).float(),
        "ood/fpr95_confidence": selective.fpr_at_tpr(confidence, ring_confidence).float(),
        "ood/fpr95_entropy": selective.fpr_at_tpr(
            -selective.entropy(test_p), -selective.entropy(ring_p)
        ).float(),
    }


# The true posterior on a data module's test points and grid, computed once per data module:
# its points never change, and the posterior costs far more than an evaluation of the net.
_TRUTH: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _ground_truth(
    data: pl.LightningDataModule, grid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """p* on the test points and on the grid, (E, n_test) and (E, R²) (K > 2: (E, ·, K)),
    float64; None where the posterior is degenerate or unknown (see spiralmix.posterior)."""
    keys = getattr(data, "generator_keys", None)
    if keys is None:
        return None
    cache = _TRUTH.setdefault(data, {})
    key = tuple(grid.shape)
    if key not in cache:
        # One member at a time: each member's p* is what its run alone computes.
        test = [true_posterior(keys, X) for X in data.test_X]
        cache[key] = None if test[0] is None else (
            torch.stack(test), torch.stack([true_posterior(keys, G) for G in grid])
        )  # fmt: skip
    return cache[key]


def _distance(p: torch.Tensor, p_star: torch.Tensor) -> torch.Tensor:
    """Mean total-variation distance ½ Σ_k |p_k − p*_k| per member (binary: |p − p*|)."""
    gap = (p.double() - p_star).abs()
    return (gap if p.ndim == 2 else gap.sum(-1) / 2).mean(-1).float()


def _truth_metrics(
    test_p: torch.Tensor,
    grid_p: torch.Tensor,
    y: torch.Tensor,
    test_truth: torch.Tensor,
    grid_truth: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The Bayes classifier's accuracy and NLL on the test labels; the model's excess risk
    and its distance to p* on the test points and the grid."""
    truth = metrics.two_columns(test_truth) if test_truth.ndim == 2 else test_truth
    predicted = metrics.two_columns(test_p) if test_p.ndim == 2 else test_p
    bayes_right = truth.gather(-1, truth.argmax(-1, keepdim=True)).squeeze(-1)
    model_right = truth.gather(-1, predicted.argmax(-1, keepdim=True)).squeeze(-1)
    label_p = truth.gather(-1, y.long().unsqueeze(-1)).squeeze(-1)
    return {
        "truth/bayes_acc": metrics.accuracy(test_truth, y).float(),
        "truth/bayes_nll": -label_p.clamp_min(1e-300).log().mean(-1).float(),
        # p*(Bayes class) − p*(model's class): its expected excess error, label noise averaged.
        "truth/excess_risk": (bayes_right - model_right).mean(-1).float(),
        "truth/calibration_error": _distance(test_p, test_truth),
        "truth/calibration_error_grid": _distance(grid_p, grid_truth),
    }


class Evaluations(pl.Callback):
    """Evaluates the ensemble at step 0, every ``every_n_steps`` steps and at the last step
    of training, keeps every evaluation's metrics (``history``, saved in checkpoints) and
    the latest record (``latest``), and hands each record to ``consumers``, in their order.

    ``net`` and ``data`` are those the module trains on (``data`` is set up by the time
    training starts). It evaluates after the training step and before the step's
    checkpoint (Lightning runs checkpoint callbacks last), so a checkpoint's history ends
    with the evaluation of its own step.
    """

    def __init__(
        self,
        net: MLPEnsemble,
        data: pl.LightningDataModule,
        settings: EvaluationSettings,
        every_n_steps: int,
        consumers: Sequence[EvaluationConsumer] = (),
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.net, self.data, self.settings = net, data, settings
        self.every_n_steps = every_n_steps
        self.consumers = list(consumers)
        self.history: list[dict] = []  # one entry per evaluation: step and metric → (E,) list
        self.latest: Evaluation | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == 0:  # a resumed run evaluated its first step before it stopped
            self.evaluate(0)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        step = trainer.global_step
        last = step >= trainer.max_steps or trainer.should_stop
        if step % self.every_n_steps == 0 or last:
            self.evaluate(step, last)

    def evaluate(self, step: int, last: bool = False) -> Evaluation:
        """Measure at ``step``, record it in the history and hand it to every consumer;
        ``last``: no evaluation follows in this training."""
        record = self.measure(step)
        record.last = last
        self.history.append({"step": step, **{k: v.tolist() for k, v in record.metrics.items()}})
        self.latest = record
        for consumer in self.consumers:
            consumer.on_evaluation(record)
        return record

    def measure(self, step: int) -> Evaluation:
        """:func:`evaluate` in eval mode and on the CPU, where the data sets, figures and saved
        tensors live (a run on another device moves the network there and back: a few kB);
        nothing is recorded or handed on."""
        device, was_training = next(self.net.parameters()).device, self.net.training
        self.net.cpu().eval()
        try:
            return evaluate(self.net, self.data, self.settings, step)
        finally:
            self.net.train(was_training).to(device)

    # Plain lists and numbers: checkpoints load with torch.load(weights_only=True).
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: object, checkpoint: dict) -> None:
        checkpoint.setdefault("spiralmix", {})["history"] = self.history

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: object, checkpoint: dict) -> None:
        self.history = checkpoint["spiralmix"]["history"]
