"""A 2-D data set per member (see :mod:`spiralmix.datasets`), its stratified split, and
batches served from tensors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from spiralmix.datasets import generate
from spiralmix.streams import permutations, stream


def stratified_split(
    y: torch.Tensor, fractions: Sequence[float], generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Split indices of ``y`` into len(fractions) + 1 parts with the same class balance.

    Part i gets round(fractions[i] · n_c) points of each class c; the last part gets the
    rest. Indices within each part are in random order.
    """
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for label in torch.unique(y):
        idx = torch.nonzero(y == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        start = 0
        for part, fraction in zip(parts, fractions):
            n = round(fraction * len(idx))
            part.append(idx[start : start + n])
            start += n
        parts[-1].append(idx[start:])
    return [torch.cat(p)[torch.randperm(sum(map(len, p)), generator=generator)] for p in parts]


class SpiralDataset(Dataset):
    """Points X of shape (N, n_features) with class indices y of shape (N,) in 0..K-1."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, n_classes: int = 2) -> None:
        if X.ndim != 2:
            raise ValueError(f"X must have shape (N, n_features), got {tuple(X.shape)}")
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(f"y must have shape ({len(X)},) to match X, got {tuple(y.shape)}")
        if not torch.all((y >= 0) & (y < n_classes) & (y == y.round())):
            raise ValueError(f"targets must be class indices 0..{n_classes - 1}")
        self.X = X.float()
        self.y = y.float()

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X[i], self.y[i]


class SpiralDataModule(pl.LightningDataModule):
    """One data set and split per seed, stacked along a leading member axis.

    ``setup`` builds, for each seed, the data set (the generator ``dataset`` names, called
    with ``n_samples``, ``noise`` and ``options``; see :func:`spiralmix.datasets.generate`)
    and a stratified train / validation / test split, all drawn from that seed's ``"data"``
    stream: tensors ``train_X`` of shape (E, n_train, 2), ``train_y`` (E, n_train) class
    indices, ``test_X`` (E, n_test, 2), ... for E = len(seeds). Training batches come
    straight from these tensors in chunks of ``steps_per_call`` steps.
    """

    def __init__(
        self,
        seeds: Sequence[int] = (123,),
        n_samples: int = 1000,
        noise: float = 0.0,
        dataset: str = "spiralmix.datasets.spirals",
        options: Mapping | None = None,
        n_classes: int = 2,
        test_fraction: float = 0.9,
        val_fraction: float = 0.0,
        batch_size: int = 32,
        pairing: str = "halves",
        steps_per_call: int = 250,
    ) -> None:
        super().__init__()
        self.seeds = list(seeds)
        self.n_samples, self.noise, self.n_classes = n_samples, noise, n_classes
        # The generator's own keys, e.g. n_cycles for spirals or factor for circles.
        self.generator_keys = {**(options or {}), "_target_": dataset, "n_samples": n_samples,
                               "noise": noise, "n_classes": n_classes}  # fmt: skip
        self.test_fraction, self.val_fraction = test_fraction, val_fraction
        self.batch_size, self.pairing, self.steps_per_call = batch_size, pairing, steps_per_call

    @property
    def samples_per_step(self) -> int:
        """Samples drawn per step: 2·batch_size pairs them as halves, batch_size permutes."""
        return 2 * self.batch_size if self.pairing == "halves" else self.batch_size

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_X"):
            return
        splits = {"train": [], "val": [], "test": []}
        for seed in self.seeds:
            gen = stream(seed, "data")
            X, y = generate(self.generator_keys, gen)
            test, val, train = stratified_split(y, [self.test_fraction, self.val_fraction], gen)
            for name, idx in (("train", train), ("val", val), ("test", test)):
                splits[name].append(SpiralDataset(X[idx], y[idx], self.n_classes))
        for name, datasets in splits.items():
            setattr(self, f"{name}_X", torch.stack([d.X for d in datasets]))
            setattr(self, f"{name}_y", torch.stack([d.y for d in datasets]))
        if self.train_X.shape[1] < self.samples_per_step:
            raise ValueError(
                f"a step needs {self.samples_per_step} distinct training points "
                f"but the split leaves {self.train_X.shape[1]}"
            )

    def chunk(self, index: int) -> dict[str, torch.Tensor]:
        """Batches for steps [index·S, (index+1)·S), S = steps_per_call.

        Each step's batch is a fresh random subset of the training set without
        replacement (one shuffled epoch with drop_last, as the reference loader did).
        Returns x of shape (S, E, N, 2) and targets y of shape (S, E, N) (labels 0/1) for
        K = 2 classes, (S, E, N, K) (one-hot) for K > 2; N = samples_per_step.
        """
        S, N = self.steps_per_call, self.samples_per_step
        n_train = self.train_X.shape[1]
        xs, ys = [], []
        for member, seed in enumerate(self.seeds):
            gen = stream(seed, "batches", index)
            idx = permutations(S, n_train, gen)[:, :N]  # (S, N)
            xs.append(self.train_X[member][idx])
            ys.append(self.train_y[member][idx])
        y = torch.stack(ys, 1)
        if self.n_classes > 2:  # mixing one-hot targets gives soft targets on the simplex
            y = F.one_hot(y.long(), self.n_classes).float()
        return {"x": torch.stack(xs, 1), "y": y, "chunk": torch.tensor(index)}

    def train_dataloader(self) -> _Chunks:
        return _Chunks(self)


class _Chunks:
    """Endless iterable of training chunks that starts at the trainer's current step.

    Starting from ``trainer.global_step`` when iteration begins makes a resumed run draw
    the same batches as an uninterrupted one; Lightning stops at ``max_steps``.
    """

    def __init__(self, datamodule: SpiralDataModule) -> None:
        self.datamodule = datamodule

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        trainer = self.datamodule.trainer
        index = trainer.global_step // self.datamodule.steps_per_call if trainer else 0
        while True:
            yield self.datamodule.chunk(index)
            index += 1
