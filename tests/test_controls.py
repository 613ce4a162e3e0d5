"""The six controls of mixup: what each does to a step, its limit cases bit for bit, its
members equal to their runs alone, and its bad values refused by the command line."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch
from hydra import compose, initialize_config_dir

from spiralmix.__main__ import cli
from spiralmix.regularizers import (
    KernelMixup,
    LabelSmoothing,
    LocalMixup,
    Mixup,
    MixupIO,
    NoisyMixup,
    RegMixup,
    Regularizer,
    StepContext,
)
from spiralmix.regularizers.controls import warp_lambda
from spiralmix.step import EnsembleStep
from spiralmix.train import train
from tests.conftest import CONF_DIR, CONTROLS, TINY


def _chunk(regularizers: list[Regularizer], seeds: list[int], n_classes: int, steps: int = 4):
    """One chunk of ``steps`` optimizer steps on a shared random batch: the losses (steps,
    E) and every parameter afterwards."""
    step = EnsembleStep(seeds, regularizers, hidden_dims=(8, 8), n_classes=n_classes,
                        batch_size=8, steps_per_call=steps)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    E = len(seeds)
    x = torch.randn(steps, 1, 16, 2, generator=gen).expand(steps, E, 16, 2).contiguous()
    labels = torch.randint(0, n_classes, (steps, 1, 16), generator=gen).expand(steps, E, 16)
    y = labels.float() if n_classes == 2 else torch.nn.functional.one_hot(labels, n_classes).float()
    losses = step.train_chunk(x, y, step.draw(0), step.optimizer())
    return losses, [p.detach().clone() for p in step.net.parameters()]


def _assert_same_run(a, b, e_a: int = 0, e_b: int = 0) -> None:
    (losses_a, params_a), (losses_b, params_b) = a, b
    assert torch.equal(losses_a[:, e_a], losses_b[:, e_b])
    for pa, pb in zip(params_a, params_b):
        assert torch.equal(pa[e_a], pb[e_b])


EVERY = [
    Regularizer(), Mixup(), Mixup(layers=[0, 0]), LabelSmoothing(), MixupIO(),
    RegMixup(), RegMixup(layers=[0, 0]), LocalMixup(epsilon=2.0), LocalMixup(layers=[0, 0]),
    KernelMixup(), KernelMixup(layers=[0, 0]), NoisyMixup(), NoisyMixup(layers=[1, 2]),
]  # fmt: skip


def test_each_control_at_every_layer_equals_its_run_alone_beside_all_others():
    """Three classes (K logits); the binary case runs through train() below."""
    seeds = list(range(10, 10 + len(EVERY)))
    together = _chunk(EVERY, seeds, n_classes=3)
    for e, regularizer in enumerate(EVERY):
        _assert_same_run(together, _chunk([regularizer], [seeds[e]], 3), e_a=e)


LIMITS = [
    (RegMixup(eta=0.0), Regularizer()),
    (RegMixup(eta=0.0, layers=None), Regularizer()),
    (LocalMixup(epsilon=math.inf), Mixup()),
    (LocalMixup(epsilon=math.inf, layers=[0, 0]), Mixup(layers=[0, 0])),
    (NoisyMixup(alpha=2.0, add_noise=0.0, mult_noise=0.0), Mixup()),
    (KernelMixup(alpha=2.0, tau_std=math.inf), Mixup()),
    (KernelMixup(alpha=2.0, tau_std=math.inf, layers=[0, 0]), Mixup(layers=[0, 0])),
]


@pytest.mark.parametrize(("control", "method"), LIMITS, ids=repr)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_limit_cases_are_the_method_they_reduce_to_bit_for_bit(control, method, n_classes):
    _assert_same_run(_chunk([control], [7], n_classes), _chunk([method], [7], n_classes))
    # ... and beside a neighbour, where mixing goes by halves
    _assert_same_run(_chunk([Mixup(), control], [6, 7], n_classes),
                     _chunk([Mixup(), method], [6, 7], n_classes), 1, 1)  # fmt: skip


def test_away_from_their_limits_the_controls_change_training():
    pairs = [(RegMixup(eta=0.5), Regularizer()), (LocalMixup(epsilon=0.5), Mixup()),
             (NoisyMixup(alpha=2.0), Mixup()), (KernelMixup(alpha=2.0), Mixup()),
             (MixupIO(), Mixup()), (LabelSmoothing(), Regularizer())]  # fmt: skip
    for control, method in pairs:
        assert not torch.equal(_chunk([control], [7], 3)[0], _chunk([method], [7], 3)[0])


CONTEXT = StepContext(batch_size=2, pairing="halves", n_hidden=1, n_classes=3, whole=True)


def test_label_smoothing_moves_targets_towards_uniform_by_epsilon():
    y = torch.nn.functional.one_hot(torch.tensor([[0, 2]]), 3).float()
    out = LabelSmoothing.targets(y, {"epsilon": torch.tensor([0.3])}, CONTEXT)
    assert torch.allclose(out, torch.tensor([[[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]]))
    binary = dict(CONTEXT.__dict__, n_classes=2)
    out = LabelSmoothing.targets(torch.tensor([[0.0, 1.0]]), {"epsilon": torch.tensor([0.2])},
                                 StepContext(**binary))  # fmt: skip
    assert torch.allclose(out, torch.tensor([[0.1, 0.9]]))


def test_mixup_io_keeps_the_label_of_the_dominant_point():
    lam = torch.tensor([0.2, 0.5, 0.7])
    assert MixupIO.label_weight(lam).tolist() == [0.0, 1.0, 1.0]
    draw = {"lam": torch.tensor([0.3]), "ks": [0]}
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0]])  # pairs (1, 0) and (0, 1)
    assert MixupIO.targets(y, draw, CONTEXT).tolist() == [[0.0, 1.0]]  # the second points'
    assert Mixup.targets(y, draw, CONTEXT)[0].tolist() == pytest.approx([0.3, 0.7])


def test_regmixup_adds_eta_times_the_mixed_loss_to_the_clean_loss():
    rows, clean = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.5, 0.5, 1.5, 1.5]])
    draw = {"eta": torch.tensor([0.5]), "clean": clean}
    assert RegMixup.loss(rows, draw, CONTEXT).tolist() == [1.0 + 0.5 * 2.0]


def test_local_mixup_counts_only_pairs_within_epsilon():
    h = torch.tensor([[[0.0, 0.0], [5.0, 0.0], [0.0, 0.3], [5.0, 4.0]]])  # distances 0.3, 4
    draw = {"k": torch.tensor([0]), "ks": [0], "lam": torch.tensor([0.5]),
            "epsilon": torch.tensor([1.0])}  # fmt: skip
    LocalMixup.at_layer(0, h, draw, CONTEXT)
    assert draw["distance"][0].tolist() == pytest.approx([0.3, 4.0])
    rows = torch.tensor([[2.0, 6.0]])
    assert LocalMixup.loss(rows, draw, CONTEXT).tolist() == [1.0]  # (2·1 + 6·0) / 2


def test_kernel_warping_is_the_beta_cdf_of_the_similarity_kernel():
    lam = torch.tensor([0.3])
    distance = torch.tensor([[0.5, 1.0, 3.0]])  # over the mean 1.5
    warped = warp_lambda(lam, distance, torch.tensor([1.0]), torch.tensor([0.5]))
    scaled = distance.double() / 1.5
    omega = 1 / torch.exp(-(scaled - 1) / (2 * 0.5**2))
    expected = scipy.stats.beta.cdf(0.3, omega.numpy(), omega.numpy())
    assert warped.double().numpy() == pytest.approx(expected, rel=1e-6)
    # the near pair mixes more (λ towards ½), the far one less (λ towards 0)
    assert abs(warped[0, 0] - 0.5) < 0.2 < abs(warped[0, 2] - 0.5)
    off = warp_lambda(lam, distance, torch.tensor([1.0]), torch.tensor([math.inf]))
    assert torch.equal(off, lam.expand(1, 3))


def test_noisy_mixup_noise_has_the_papers_form():
    context = StepContext(8, "halves", 2, 2, True, (2, 16, 16))
    draws = NoisyMixup(add_noise=0.4, mult_noise=0.2).draw(500, context, torch.Generator())
    assert draws["add"].shape == draws["mult"].shape == (500, 8, 16)
    assert ((draws["mult"] - 1).abs() <= 0.2).all()  # 1 + σ·β·U(−1, 1), β ≤ 1
    # additive: σ·β·N(0, 1), E[β] = 2/7 for Beta(2, 5), so its std is about 0.4·√E[β²]
    assert draws["add"].std().item() == pytest.approx(0.4 * math.sqrt(2 * 3 / (7 * 8)), rel=0.1)


def _train(run_dir, overrides):
    overrides = [*TINY, *overrides]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return train(compose("config", overrides=overrides), run_dir, overrides)


@pytest.mark.parametrize("data", ["data=moons", "data=spirals3"])
def test_controls_beside_the_originals_equal_their_runs_alone(tmp_path, data):
    """Through the real run: metrics.json of each control's member equals its run alone."""
    names = ["none", "mixup", "hidden_mixup", *CONTROLS]
    together = _train(tmp_path / "together", [f"regularizers=[{','.join(names)}]",
                                              "seeds=[4,5]", data])  # fmt: skip
    for e in range(7, len(together), 2):  # seed 5 of each control
        member = together[e]
        alone = _train(tmp_path / member["regularizer"],
                       [f"regularizer={member['regularizer']}", "seed=5", data])[0]  # fmt: skip
        for key in ("status", "steps", "final", "best", "history"):
            assert member[key] == alone[key], (member["regularizer"], key)


def test_regmixup_without_its_mixed_loss_is_none_through_the_real_run(tmp_path):
    regmixup = _train(tmp_path / "r", ["regularizer=regmixup", "regularizer.eta=0"])[0]
    none = _train(tmp_path / "n", ["regularizer=none"])[0]
    for key in ("final", "best", "history"):
        assert regmixup[key] == none[key], key


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["regularizer=label_smoothing", "regularizer.epsilon=1"], "regularizer.epsilon"),
        (["regularizer=label_smoothing", "regularizer.epsilon=-0.1"], "regularizer.epsilon"),
        (["regularizer=local_mixup", "regularizer.epsilon=-1"], "regularizer.epsilon"),
        (["regularizer=regmixup", "regularizer.eta=-1"], "regularizer.eta"),
        (["regularizer=noisy_mixup", "regularizer.add_noise=-0.1"], "regularizer.add_noise"),
        (["regularizer=noisy_mixup", "regularizer.mult_noise=-0.1"], "regularizer.mult_noise"),
        (["regularizer=kernel_mixup", "regularizer.tau_std=0"], "regularizer.tau_std"),
        (["regularizer=kernel_mixup", "regularizer.layers=[0,9]"], "regularizer.layers"),
    ],
    ids=str,
)
def test_bad_control_values_are_refused_with_one_line_and_nothing_written(
    tmp_path, monkeypatch, capsys, argv, key
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_the_controls_preset_trains_the_mixups_and_every_control_on_three_data_sets():
    from spiralmix.config import validate

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=controls"])
        hydra = compose("config", ["experiment=controls"], return_hydra_config=True).hydra
    validate(cfg)
    assert cfg.regularizers == ["none", "mixup", "input_mixup", "hidden_mixup", *CONTROLS]
    assert len(cfg.seeds) == 10 and cfg.trainer.max_steps == 20000
    assert hydra.sweeper.params.data == "spirals,moons,blobs"
