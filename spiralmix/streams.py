"""Named, counter-based random streams.

Every random number in spiralmix comes from a ``torch.Generator`` seeded from
``(seed, stream name, block index)``. Drawing a block's numbers never depends on
how many numbers earlier blocks used, so a resumed run continues exactly where an
uninterrupted one would be, and an ensemble member draws exactly what a separate
run of its seed draws.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def stream(seed: int, name: str, block: int = 0) -> torch.Generator:
    """A CPU generator for block ``block`` of the stream ``name`` of run ``seed``."""
    key = f"{seed}/{name}/{block}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    # manual_seed wants a value that fits in a signed 64-bit integer.
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def permutations(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """n independent random permutations of range(size), int64 (n, size): the order that
    sorts each row of ``torch.rand(n, size, generator=generator)``.

    Sorted by NumPy, eight times faster than ``argsort`` on these small rows (a run's
    batches are a chunk's worth of them). Without ties every sort gives that one order;
    where any row has tied keys (about one chunk in fifteen of 250 permutations of 100
    points) torch's own ``argsort`` orders them all, so the numbers are always its.
    """
    keys = torch.rand(n, size, generator=generator)
    values = keys.numpy()
    order = np.argsort(values, axis=1)
    if (np.diff(np.take_along_axis(values, order, 1), axis=1) == 0).any():
        return keys.argsort(dim=1)
    return torch.from_numpy(order.astype(np.int64, copy=False))
