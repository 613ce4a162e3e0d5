"""Named, counter-based random streams.

Every random number in spiralmix comes from a ``torch.Generator`` seeded from
``(seed, stream name, block index)``. Drawing a block's numbers never depends on
how many numbers earlier blocks used, so a resumed run continues exactly where an
uninterrupted one would be, and an ensemble member draws exactly what a separate
run of its seed draws.
"""

from __future__ import annotations

import hashlib

import torch


def stream(seed: int, name: str, block: int = 0) -> torch.Generator:
    """A CPU generator for block ``block`` of the stream ``name`` of run ``seed``."""
    key = f"{seed}/{name}/{block}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    # manual_seed wants a value that fits in a signed 64-bit integer.
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
