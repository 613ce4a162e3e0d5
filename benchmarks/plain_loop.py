"""The reference: a plain-PyTorch training loop written the way the original script did it.

It is the baseline of the speed benchmark (benchmarks/run.py), so it keeps the original's
habits on purpose, wasteful ones included: a DataLoader re-created every epoch (with 100
training points and drop_last, one batch per epoch), λ and k from NumPy's global RNG, half
of every batch thrown away without mixup, a per-step ``add_scalar`` and three pyplot figures
per evaluation. Do not "fix" it: the comparison is only fair against what people ran.

    python benchmarks/plain_loop.py --regularizer mixup --seed 123 --steps 5000 \
        --log-dir /tmp/plain_mixup --json /tmp/plain_mixup.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

# name → (weight decay, dropout p, mixup layer range [k_min, k_max] or None)
REGULARIZERS: dict[str, tuple[float, float, tuple[int, int] | None]] = {
    "none": (0.0, 0.0, None),
    "weight_decay": (0.6, 0.0, None),
    "dropout": (0.0, 0.2, None),
    "mixup": (0.0, 0.0, (0, 3)),
    "input_mixup": (0.0, 0.0, (0, 0)),
    "hidden_mixup": (0.0, 0.0, (1, 3)),
}
BATCH_SIZE = 64  # 2 × 32: the first half is mixed with the second
ALPHA = 2.0


def make_spirals(n_samples: int = 1000, n_cycles: float = 2.0, noise: float = 0.0):
    """Two interleaved spirals, shuffled with torch's global RNG: X (n, 2), y (n,)."""
    m = n_samples // 2
    theta = torch.linspace(0, 2 * math.pi * n_cycles, m)
    r = torch.linspace(0.2, 2, m)
    x0 = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1)
    x1 = torch.stack([r * torch.cos(theta + math.pi), r * torch.sin(theta + math.pi)], 1)
    X = torch.cat([x0, x1])
    y = torch.cat([torch.zeros(m), torch.ones(m)])
    order = torch.randperm(n_samples)
    X, y = X[order], y[order]
    return X + noise * torch.randn_like(X), y


class MLP(nn.Module):
    def __init__(self, n_features: int = 2, hidden_dims=(32, 32, 32), p: float = 0.0):
        super().__init__()
        dims = [n_features, *hidden_dims]
        self.hidden = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.LeakyReLU(0.2), nn.Dropout(p))
            for a, b in zip(dims[:-1], dims[1:])
        )
        self.classifier = nn.Linear(dims[-1], 1)

    def forward(self, x: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        for layer in self.hidden[start:end]:
            x = layer(x)
        if end is None:
            x = self.classifier(x).squeeze(-1)
        return x


def forever(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def data_figure(X, y):
    fig = plt.figure()
    plt.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", s=8)
    plt.title("test data")
    return fig


def boundary_figure(xx, yy, p, X=None, y=None):
    fig = plt.figure()
    plt.contourf(xx, yy, p, levels=20, cmap="RdBu_r", vmin=0, vmax=1)
    plt.colorbar()
    if X is not None:
        plt.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", edgecolors="k", s=12)
    return fig


def evaluate(model, X_test, y_test, X_train, y_train, criterion, writer, step) -> dict:
    model.eval()
    with torch.no_grad():
        logits = model(X_test)
        loss = criterion(logits, y_test).item()
        acc = ((logits > 0).float() == y_test).float().mean().item()
        writer.add_scalar("test/loss", loss, step)
        writer.add_scalar("test/acc", acc, step)
        lo, hi = X_test.min(0).values - 0.5, X_test.max(0).values + 0.5
        xx, yy = torch.meshgrid(
            torch.linspace(lo[0], hi[0], 100), torch.linspace(lo[1], hi[1], 100), indexing="xy"
        )
        grid = torch.stack([xx.flatten(), yy.flatten()], 1)
        p = torch.sigmoid(model(grid)).reshape(100, 100)
    writer.add_figure("test_data", data_figure(X_test, y_test), step)
    writer.add_figure("probability", boundary_figure(xx, yy, p), step)
    writer.add_figure("probability_train", boundary_figure(xx, yy, p, X_train, y_train), step)
    model.train()
    return {"test/loss": loss, "test/acc": acc}


def run_plain(
    regularizer: str, seed: int, max_steps: int, eval_every: int = 2500, log_dir: str = "runs"
) -> dict:
    """Train one regularizer for ``max_steps`` steps, evaluating every ``eval_every`` steps.

    Returns the loop's rate (steps/s over the wall time from the step-0 evaluation to the
    end of the final one, every evaluation and figure included), that wall time in
    seconds, and the final test accuracy and loss.
    """
    if regularizer not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {regularizer!r}; one of {sorted(REGULARIZERS)}")
    weight_decay, p, layers = REGULARIZERS[regularizer]
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)  # the original did not; it changes no timing, only makes λ repeatable

    X, y = make_spirals()
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.9, stratify=y, random_state=seed
    )
    X_train, X_test = torch.as_tensor(X_train), torch.as_tensor(X_test)
    y_train, y_test = torch.as_tensor(y_train), torch.as_tensor(y_test)
    loader = DataLoader(
        TensorDataset(X_train, y_train), batch_size=BATCH_SIZE, shuffle=True, drop_last=True
    )
    batches = forever(loader)

    model = MLP(p=p)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=weight_decay)
    criterion = nn.BCEWithLogitsLoss()
    writer = SummaryWriter(log_dir)
    half = BATCH_SIZE // 2

    start = time.perf_counter()
    for step in range(max_steps):
        if step % eval_every == 0:
            evaluate(model, X_test, y_test, X_train, y_train, criterion, writer, step)
        x, t = next(batches)
        if layers is None:
            loss = criterion(model(x[:half]), t[:half])
        else:
            k = np.random.randint(layers[0], layers[1] + 1)
            lam = np.random.beta(ALPHA, ALPHA)
            h_a, h_b = model(x[:half], 0, k), model(x[half:], 0, k)
            h = lam * h_a + (1 - lam) * h_b
            target = lam * t[:half] + (1 - lam) * t[half:]
            loss = criterion(model(h, k), target)
            writer.add_scalar("mixup/k", k, step)
            writer.add_scalar("mixup/lambda", lam, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        writer.add_scalar("train/loss", loss.item(), step)
    final = evaluate(model, X_test, y_test, X_train, y_train, criterion, writer, max_steps)
    wall = time.perf_counter() - start
    writer.close()
    return {
        "regularizer": regularizer,
        "seed": seed,
        "steps": max_steps,
        "wall_time_s": wall,
        "steps_per_s": max_steps / wall,
        "test_acc": final["test/acc"],
        "test_loss": final["test/loss"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regularizer", default="none", choices=sorted(REGULARIZERS))
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=2500)
    parser.add_argument("--log-dir", default="runs/plain")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    result = run_plain(args.regularizer, args.seed, args.steps, args.eval_every, args.log_dir)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
