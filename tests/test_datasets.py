"""Tests for spiralmix.datasets: each generator's geometry, seeding and bad input, and adding
a data set with one function and one YAML file."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from sklearn.datasets import make_circles, make_moons

from spiralmix.datasets import (
    blobs,
    checkerboard,
    circles,
    generate,
    max_classes,
    moons,
    spirals,
)
from spiralmix.train import train
from tests.conftest import CONF_DIR, TINY


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_same_point_set(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    """a and b (N, 2) hold the same points, in any order (a bijection within atol)."""
    assert a.shape == b.shape
    dist = torch.cdist(a.double(), b.double())  # (N, N)
    nearest = dist.argmin(1)
    assert dist.min(1).values.max() < atol
    assert len(torch.unique(nearest)) == len(a), "several points matched the same point"


def spiral_formula(m: int, n_cycles: float, start: float = 0.0) -> torch.Tensor:
    """The spiral of SPEC.md, computed independently with NumPy in float64: (m, 2)."""
    theta = np.linspace(0.0, 2 * np.pi * n_cycles, m) + start
    r = np.linspace(0.2, 2.0, m)
    return torch.from_numpy(np.stack([r * np.cos(theta), r * np.sin(theta)], 1))


# --- spirals ------------------------------------------------------------------------


@pytest.mark.parametrize("n_cycles", [2.0, 1.5])
def test_class_0_is_the_spiral_formula(n_cycles):
    X, y = spirals(400, n_cycles=n_cycles, generator=gen(0))
    assert_same_point_set(X[y == 0], spiral_formula(200, n_cycles).float())


def test_class_1_is_class_0_turned_by_pi():
    X, y = spirals(400, generator=gen(1))
    assert_same_point_set(X[y == 1], -X[y == 0])
    assert_same_point_set(X[y == 1], spiral_formula(200, 2.0, start=math.pi).float())


def test_radii_span_0_2_to_2():
    X, _ = spirals(1000, generator=gen(2))
    r = X.norm(dim=1)
    assert r.min() == pytest.approx(0.2, abs=1e-6)
    assert r.max() == pytest.approx(2.0, abs=1e-6)


def test_shapes_dtypes_and_class_balance():
    X, y = spirals(1000, generator=gen(3))
    assert X.shape == (1000, 2) and y.shape == (1000,)
    assert X.dtype == torch.float32 and y.dtype == torch.float32
    assert set(y.tolist()) == {0.0, 1.0}
    assert int((y == 0).sum()) == 500 and int((y == 1).sum()) == 500


def test_points_are_shuffled():
    _, y = spirals(1000, generator=gen(4))
    assert not torch.equal(y, y.sort().values)


def test_noise_has_the_requested_std():
    noise = 0.1
    clean, y_clean = spirals(1000, noise=0.0, generator=gen(5))
    noisy, y_noisy = spirals(1000, noise=noise, generator=gen(5))
    assert torch.equal(y_clean, y_noisy)
    diff = (noisy - clean).flatten()
    # 2000 Gaussian values: the sample std has a standard error of noise / sqrt(4000) ≈ 0.0016.
    assert diff.std().item() == pytest.approx(noise, abs=0.01)
    assert diff.mean().item() == pytest.approx(0.0, abs=0.01)


def test_negative_noise_raises():
    with pytest.raises(ValueError, match="noise"):
        spirals(10, noise=-0.1)


@pytest.mark.parametrize("n_samples", [999, 1, 0, -2])
def test_bad_n_samples_raises(n_samples):
    with pytest.raises(ValueError, match="n_samples"):
        spirals(n_samples)


def test_same_seed_same_data_different_seed_different_order():
    X1, y1 = spirals(200, noise=0.05, generator=gen(7))
    X2, y2 = spirals(200, noise=0.05, generator=gen(7))
    X3, _ = spirals(200, noise=0.05, generator=gen(8))
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    assert not torch.equal(X1, X3)


def reference_spirals(n_samples: int, noise: float, n_cycles: float, generator) -> tuple:
    """The two-spiral generator as the reference experiment had it, kept verbatim."""
    m = n_samples // 2
    theta = torch.linspace(0.0, 2 * math.pi * n_cycles, m, dtype=torch.float64)
    r = torch.linspace(0.2, 2.0, m, dtype=torch.float64)
    spiral0 = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    spiral1 = torch.stack([r * torch.cos(theta + math.pi), r * torch.sin(theta + math.pi)], dim=1)
    X = torch.cat([spiral0, spiral1]).float()
    y = torch.cat([torch.zeros(m), torch.ones(m)])
    order = torch.randperm(n_samples, generator=generator)
    X, y = X[order], y[order]
    if noise > 0:
        X = X + noise * torch.randn(X.shape, generator=generator)
    return X, y


@pytest.mark.parametrize(("n_samples", "noise", "n_cycles"), [(1000, 0.0, 2.0), (200, 0.1, 1.5)])
def test_two_spirals_are_bit_identical_to_the_reference(n_samples, noise, n_cycles):
    X, y = spirals(n_samples, noise, n_cycles, generator=gen(3))
    X_ref, y_ref = reference_spirals(n_samples, noise, n_cycles, gen(3))
    assert torch.equal(X, X_ref) and torch.equal(y, y_ref)


@pytest.mark.parametrize("K", [3, 5])
def test_k_spirals_are_arms_turned_by_2pi_over_k(K):
    m = 60
    X, y = spirals(K * m, n_classes=K, generator=gen(K))
    assert sorted(set(y.tolist())) == list(range(K))
    for c in range(K):
        assert int((y == c).sum()) == m
        assert_same_point_set(X[y == c], spiral_formula(m, 2.0, start=2 * math.pi * c / K).float())


# --- moons, circles: scikit-learn seeded from the member's stream ------------------------------


def test_moons_are_scikit_learns_with_a_seed_from_the_stream():
    X, y = moons(300, noise=0.1, generator=gen(4))
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen(4)))
    X_ref, y_ref = make_moons(300, noise=0.1, random_state=seed)
    assert torch.equal(X, torch.tensor(X_ref, dtype=torch.float32))
    assert torch.equal(y, torch.tensor(y_ref, dtype=torch.float32))
    assert X.dtype == torch.float32 and int(y.sum()) == 150
    assert not torch.equal(X, moons(300, noise=0.1, generator=gen(5))[0])


def test_moons_lie_within_the_configured_circle():
    X, _ = moons(1000, noise=0.0, generator=gen(0))
    assert (X - torch.tensor([0.5, 0.25])).norm(dim=1).max() <= 1.6


@pytest.mark.parametrize("factor", [0.3, 0.8])
def test_circles_inner_radius_is_factor(factor):
    X, y = circles(400, noise=0.0, factor=factor, generator=gen(6))
    r = X.norm(dim=1)
    assert torch.allclose(r[y == 0], torch.ones(200), atol=1e-6)
    assert torch.allclose(r[y == 1], torch.full((200,), factor), atol=1e-6)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen(6)))
    X_ref, _ = make_circles(400, noise=None, factor=factor, random_state=seed)
    assert torch.equal(X, torch.tensor(X_ref, dtype=torch.float32))


# --- checkerboard, blobs -----------------------------------------------------------------------


def test_checkerboard_of_two_is_xor():
    X, y = checkerboard(2000, board_size=2, generator=gen(7))
    assert X.abs().max() <= 1
    xor = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).float()
    assert torch.equal(y, xor)
    assert int(y.sum()) == 1000
    # Uniform within the class's cells: every quadrant holds about a quarter of the points.
    quadrant = 2 * (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
    assert torch.bincount(quadrant, minlength=4).min() > 400


@pytest.mark.parametrize("k", [3, 4])
def test_checkerboard_cells_alternate(k):
    X, y = checkerboard(3000, board_size=k, generator=gen(k))
    cells = ((X + 1) * k / 2).floor().clamp(max=k - 1)
    assert torch.equal(y, (cells.sum(1) % 2).float())
    assert len(torch.unique(cells, dim=0)) == k * k


@pytest.mark.parametrize("K", [2, 3, 5])
def test_blobs_are_gaussians_around_a_circle(K):
    X, y = blobs(1000 * K, n_classes=K, spread=0.4, generator=gen(K))
    for c in range(K):
        pts = X[y == c].double()
        angle = 2 * math.pi * c / K
        centre = torch.tensor([2 * math.cos(angle), 2 * math.sin(angle)], dtype=torch.float64)
        # 1000 points, std 0.4: the mean is within 4 standard errors (4 · 0.4 / √1000 ≈ 0.05).
        assert torch.allclose(pts.mean(0), centre, atol=0.05)
        assert torch.allclose(pts.std(0), torch.full((2,), 0.4, dtype=torch.float64), atol=0.03)


# --- bad input, seeding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: spirals(30, n_classes=1), "n_classes"),
        (lambda: spirals(31, n_classes=3), "n_samples"),
        (lambda: blobs(30, spread=0.0), "spread"),
        (lambda: circles(30, factor=1.0), "factor"),
        (lambda: circles(30, factor=0.0), "factor"),
        (lambda: checkerboard(30, board_size=1), "board_size"),
        (lambda: moons(30, noise=-1.0), "noise"),
        (lambda: checkerboard(30, noise=-0.1), "noise"),
    ],
)
def test_bad_arguments_raise_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("function", [spirals, moons, circles, checkerboard, blobs])
def test_same_generator_state_gives_the_same_points(function):
    a, b, c = (function(200, generator=gen(s)) for s in (1, 1, 2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (200, 2) and a[0].dtype == torch.float32


def test_generate_passes_only_the_keys_the_function_takes():
    keys = {"_target_": "spiralmix.datasets.circles", "n_samples": 100, "noise": 0.0,
            "factor": 0.25, "n_cycles": None, "test_fraction": 0.9, "n_classes": 2}  # fmt: skip
    X, y = generate(keys, gen(0))
    assert torch.allclose(X[y == 1].norm(dim=1), torch.full((50,), 0.25), atol=1e-6)


def test_max_classes_comes_from_the_signature():
    assert max_classes("spiralmix.datasets.spirals") is None
    assert max_classes("spiralmix.datasets.blobs") is None
    for name in ("moons", "circles", "checkerboard"):
        assert max_classes(f"spiralmix.datasets.{name}") == 2
    with pytest.raises(ValueError, match="no generator"):
        max_classes("spiralmix.datasets.nothing_here")


# --- a new data set: one function and one YAML file --------------------------------------------


def stripes(
    n_samples: int = 1000,
    noise: float = 0.0,
    n_classes: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """K vertical stripes on [0, K) × [0, 1): class c is x in [c, c + 1)."""
    m = n_samples // n_classes
    y = torch.arange(n_classes).repeat_interleave(m).float()
    X = torch.rand(n_samples, 2, generator=generator) + torch.stack([y, torch.zeros_like(y)], 1)
    return X + noise * torch.randn(X.shape, generator=generator), y


STRIPES_YAML = """\
_target_: tests.test_datasets.stripes
name: stripes
n_classes: 3
n_samples: 300
noise: 0.0
center: [1.5, 0.5]
radius: 1.6
test_fraction: 0.5
val_fraction: 0.0
batch_size: 16
"""


def test_a_new_data_set_needs_one_function_and_one_yaml_file(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "data" / "stripes.yaml").write_text(STRIPES_YAML)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, "data=stripes", "regularizer=mixup"])
    result = train(cfg, tmp_path / "run")[0]
    assert result["status"] == "completed"
    assert result["config"]["data"]["name"] == "stripes"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 200
    saved = torch.load(tmp_path / "run" / "boundary.pt", weights_only=True)
    assert saved["grid_p"].shape == (30 * 30, 3)
    assert torch.equal(saved["train_y"], saved["train_X"][:, 0].floor())
    assert np.isfinite(result["final"]["test/loss"])
