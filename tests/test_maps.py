"""Every member's maps kept as arrays, a few members' figures, and spiralmix-render."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, compose_config
from matplotlib.colors import to_rgb
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spiralmix import maps, plots
from spiralmix.evaluation import square_grid
from spiralmix.train import drawing_figures, train


def test_quantized_probabilities_are_within_half_a_level():
    p = torch.rand(10_000, generator=torch.Generator().manual_seed(0))
    q = maps.quantize(p)
    assert q.dtype == np.uint8
    assert (maps.dequantize(q) - p).abs().max() <= 0.5 / 255 + 1e-7
    assert maps.quantize(torch.tensor([0.0, 0.5, 1.0])).tolist() == [0, 128, 255]


def test_a_bare_map_is_north_up_in_the_figures_colours_with_its_points():
    grid = square_grid(torch.tensor([[[-1.0, -1.0], [1.0, 1.0]]]), 10, margin=0)[0]
    p = (grid[:, 1] > 0).float()  # class 1 in the upper half
    X, y = torch.tensor([[-1.0, -1.0]]), torch.tensor([1])  # a class-1 point, bottom left
    image = plots.map_pixels(grid, p, X, y, scale=4)
    assert image.shape == (40, 40, 3) and image.dtype == np.uint8
    red, blue = plots.matplotlib.colormaps[plots.CMAP]([1.0, 0.0])[:, :3]
    assert np.abs(image[5, 30] / 255 - red).max() < 0.01  # top: p = 1
    assert np.abs(image[20, 20] / 255 - red).max() > 0.2  # row 20 is below y = 0
    assert np.abs(image[35, 30] / 255 - blue).max() < 0.01  # bottom: p = 0
    dot = image[38, 1] / 255  # the point's centre, clipped into the corner
    assert np.abs(dot - np.array(to_rgb(plots.CLASS_COLORS[1]))).max() < 0.01
    assert image[36, 1].tolist() == [0, 0, 0]  # its black ring, 3 pixels up


@pytest.mark.parametrize(
    ("seeds", "figure_seeds", "expected"),
    [
        ([7], 0, [True]),  # a run alone draws its figures
        ([1, 2, 3], None, [True, True, True]),
        ([1, 2, 3, 1, 2, 3], 2, [True, True, False, True, True, False]),  # per regularizer
        ([5, 4, 3], 1, [True, False, False]),  # the first listed, not the smallest
        ([1, 2], 0, [False, False]),
    ],
)
def test_which_members_draw_figures(seeds, figure_seeds, expected):
    assert drawing_figures(seeds, figure_seeds) == expected


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """Three noisy-spiral members side by side, figures for the first seed only."""
    run_dir = tmp_path_factory.mktemp("ensemble")
    cfg = compose_config(
        [*TINY, "regularizer=mixup", "seeds=[1,2,3]", "data.noise=0.2",
         "evaluation.figure_seeds=1"]
    )  # fmt: skip
    train(cfg, run_dir)
    return run_dir


def _tags(member_dir):
    events = EventAccumulator(str(member_dir), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    images = {tag: [i.step for i in events.Images(tag)] for tag in events.Tags()["images"]}
    return images, events


def test_figures_for_a_few_members_bare_maps_and_arrays_for_all(ensemble):
    steps = [0, 100, 200]
    images, _ = _tags(ensemble / "seed=1")
    assert images["boundary/probability_train"] == steps
    assert images["flatten/spectrum"] == steps and images["boundary/test_data"] == [0]
    assert images["boundary/true_posterior"] == [0]
    for seed in (2, 3):
        images, events = _tags(ensemble / f"seed={seed}")
        assert images == {"boundary/map": [0, 200]}  # first and last only
        assert [t.step for t in events.Tensors(maps.PROBABILITY)] == steps
        assert [t.step for t in events.Tensors(maps.TRUTH)] == [0]
        saved = torch.load(ensemble / f"seed={seed}" / "boundary.pt", weights_only=True)
        kept = maps.read_maps(ensemble / f"seed={seed}")
        assert sorted(kept) == steps
        assert torch.equal(kept[200], maps.dequantize(maps.quantize(saved["grid_p"])))
        truth = maps.read_maps(ensemble / f"seed={seed}", maps.TRUTH)[0]
        assert (truth - saved["grid_truth"]).abs().max() <= 0.5 / 255 + 1e-6


def test_render_draws_the_kept_map_as_tensorboards_figure(ensemble, tmp_path):
    out = tmp_path / "out"
    assert maps.main([str(ensemble / "seed=3"), "--step", "100", "--out", str(out)]) == 0
    from PIL import Image

    drawn = np.asarray(Image.open(out / "probability_step0000100.png").convert("RGB"))
    saved = torch.load(ensemble / "seed=3" / "boundary.pt", weights_only=True)
    kept = maps.read_maps(ensemble / "seed=3")[100]
    expected = plots.probability_map(
        saved["grid"], kept, "spirals · mixup · seed 3 · step 100", saved["train_X"],
        saved["train_y"],
    )  # fmt: skip
    assert np.array_equal(drawn, expected)
    # A folder of runs draws each one, named after its folder.
    assert maps.main([str(ensemble), "--step", "all", "--out", str(tmp_path / "all")]) == 0
    assert len(list((tmp_path / "all").glob("seed=*/probability_step*.png"))) == 9
    assert maps.main([str(ensemble / "seed=2"), "--truth", "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "true_posterior.png").is_file()


def test_render_refuses_a_step_never_evaluated_and_writes_nothing(ensemble, tmp_path, capsys):
    assert maps.main([str(ensemble), "--step", "100", "--step", "150", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("spiralmix-render: error: --step 150: ")
    assert error.endswith("has maps at steps 0, 100, 200") and "\n" not in error
    assert list(tmp_path.iterdir()) == [] and not list(ensemble.glob("seed=*/maps"))


def test_render_refuses_a_bad_step_and_a_folder_without_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        maps.main([str(tmp_path), "--step", "soon"])
    assert exit_.value.code == 2
    assert "--step soon is invalid: give a step, first, last or all" in capsys.readouterr().err
    assert maps.main([str(tmp_path)]) == 2
    assert "holds no run (no metrics.json)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_member_without_figures_keeps_the_maps_of_its_run_alone(ensemble, tmp_path):
    cfg = compose_config([*TINY, "regularizer=mixup", "seed=3", "data.noise=0.2"])
    train(cfg, tmp_path)
    for tag in (maps.PROBABILITY, maps.TRUTH):
        alone, member = maps.read_maps(tmp_path, tag), maps.read_maps(ensemble / "seed=3", tag)
        assert alone.keys() == member.keys()
        assert all(torch.equal(alone[step], member[step]) for step in alone)
