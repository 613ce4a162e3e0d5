"""Tests for spiralmix.plots: K-class decision maps (binary figures are covered by the CLI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb

from spiralmix.plots import (
    CLASS_COLORS,
    BoundaryPanel,
    ClassMapPanel,
    ReliabilityPanel,
    SpectrumPanel,
    class_colors,
    class_map_rgb,
    probability_map,
)


def test_class_colors_keep_blue_and_red_for_two_and_differ_for_more():
    assert class_colors(2) == CLASS_COLORS
    for K in (3, 5, 10):
        assert len(set(class_colors(K))) == K


@pytest.mark.parametrize("K", [11, 12, 20, 50])
def test_more_than_ten_classes_get_distinct_colours(K):
    rgb = np.array([to_rgb(c) for c in class_colors(K)])
    gaps = np.linalg.norm(rgb[:, None] - rgb[None, :], axis=-1) + np.eye(K)
    assert gaps.min() > 0.05  # no two classes share a colour (they did beyond ten)
    neighbours = np.linalg.norm(rgb[1:] - rgb[:-1], axis=-1)  # adjacent labels differ most
    assert neighbours.min() > 0.2


@pytest.mark.parametrize("K", [3, 4])
def test_certain_points_take_their_class_colour_and_chance_is_white(K):
    certain = torch.eye(K)  # (K, K): point c is class c for sure
    rgb = class_map_rgb(certain)
    assert rgb.shape == (K, 3)
    for c in range(K):
        assert np.allclose(rgb[c], to_rgb(class_colors(K)[c]))
    assert np.allclose(class_map_rgb(torch.full((1, K), 1 / K)), 1.0)
    # Half-way from chance to certainty: half-way from white to the colour.
    half = torch.full((K,), (1 - (1 / K + 0.5 * (1 - 1 / K))) / (K - 1))
    half[1] = 1 / K + 0.5 * (1 - 1 / K)
    expected = 1 - 0.5 * (1 - np.array(to_rgb(class_colors(K)[1])))
    assert np.allclose(class_map_rgb(half.unsqueeze(0))[0], expected, atol=1e-6)


def test_class_map_panel_renders_and_changes_with_the_probabilities():
    R, K = 20, 3
    t = torch.linspace(-1, 1, R)
    grid = torch.stack(torch.meshgrid(t, t, indexing="xy"), -1).reshape(-1, 2)
    X = torch.randn(30, 2)
    y = torch.arange(3).repeat(10).float()
    panel = ClassMapPanel(grid, K, X, y)
    uniform = panel.render(torch.full((R * R, K), 1 / K), "title")
    sure = panel.render(torch.nn.functional.one_hot(torch.arange(R * R) % K, K).float(), "title")
    assert uniform.shape == sure.shape and uniform.shape[2] == 3 and uniform.dtype == np.uint8
    assert uniform.shape[0] > 300 and uniform.shape[1] > 400
    assert (uniform != sure).any()


def test_reliability_and_spectrum_panels_take_k_classes():
    edges = torch.linspace(1 / 3, 1, 16)
    stats = {"count": torch.ones(15), "confidence": torch.linspace(0.4, 0.95, 15),
             "accuracy": torch.linspace(0.3, 1.0, 15), "edges": edges}  # fmt: skip
    assert ReliabilityPanel(edges).render(stats, "t").ndim == 3
    # Classes with fewer points than a layer is wide give shorter spectra.
    spectra = [torch.rand(3, 2), torch.rand(3, 10), torch.rand(3, 10)]
    assert SpectrumPanel([2, 16, 16], n_classes=3).render(spectra, "t").ndim == 3


def test_spectrum_axis_only_widens_so_a_runs_figures_share_a_scale():
    panel = SpectrumPanel([2, 4])
    spectra = [torch.tensor([[10.0, 1.0]] * 2), torch.tensor([[10.0, 1.0, 0.1, 0.01]] * 2)]
    first = panel.render(spectra, "t")
    assert panel.axes[0].get_ylim() == (-2, 1)
    narrower = [sv.clamp_min(0.5) for sv in spectra]  # decades -1 … 1
    assert np.array_equal(panel.render(narrower, "t")[:, :60], first[:, :60])  # same y-axis
    assert panel.axes[0].get_ylim() == (-2, 1)
    panel.render([sv * 1e-3 for sv in spectra], "t")  # decades -5 … -2
    assert panel.axes[0].get_ylim() == (-5, 1)


@pytest.mark.parametrize("K", [2, 3])
def test_a_probability_map_is_drawn_as_the_learned_maps_are(K):
    R = 16
    t = torch.linspace(-1, 1, R)
    grid = torch.stack(torch.meshgrid(t, t, indexing="xy"), -1).reshape(-1, 2)
    p = torch.sigmoid(3 * grid[:, 0]) if K == 2 else torch.softmax(grid @ torch.randn(2, K), -1)
    image = probability_map(grid, p.double(), "true posterior")
    panel = BoundaryPanel(grid) if K == 2 else ClassMapPanel(grid, K)
    assert np.array_equal(image, panel.render(p, "true posterior"))
    assert not np.array_equal(image, panel.render(p.flip(0), "true posterior"))
