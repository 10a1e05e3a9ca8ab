"""Token shards: the corpus as two flat uint16 arrays on disk, read as memmaps.

``train.bin`` and ``val.bin`` hold the token ids of each split's files in manifest
order, with ``<|endoftext|>`` between consecutive files (none before the first or
after the last). uint16 fits any vocabulary up to 65536 and halves the disk and page
cache cost of int32. Batches are random windows whose positions come from
``(seed, split, step)`` alone, so a resumed run sees exactly the batches it would have
seen, and ranks of a distributed run split one global batch between them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..errors import UserError

SPLITS = ("train", "val")
TOKEN_DTYPE = np.uint16


def append_tokens(fh: BinaryIO, docs: Iterable[Sequence[int]], eot: int, first: bool) -> tuple[int, bool]:
    """Write documents to an open ``.bin`` file, an EOT before each one but the first.

    Returns (tokens written, whether the next document is still the first), so a shard
    can be written in chunks.
    """
    written = 0
    for ids in docs:
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(TOKEN_DTYPE).max):
            raise ValueError("token id does not fit in uint16")
        if not first:
            np.asarray([eot], dtype=TOKEN_DTYPE).tofile(fh)
            written += 1
        arr.astype(TOKEN_DTYPE).tofile(fh)
        written += int(arr.size)
        first = False
    return written, first


class TokenShards:
    """Read-only view of a data dir's ``train.bin`` / ``val.bin``.

    ``.train`` and ``.val`` are ``np.memmap`` arrays of uint16; ``.vocab_size`` and
    ``.eot_id`` come from ``meta.json``.
    """

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        meta_path = self.data_dir / "meta.json"
        missing = [n for n in ("meta.json", "train.bin", "val.bin") if not (self.data_dir / n).is_file()]
        if missing:
            raise UserError(
                f"not a complete data dir: {self.data_dir} (missing {', '.join(missing)}; "
                "run `sparsecircuits data build`)"
            )
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
            self.vocab_size = int(self.meta["vocab_size"])
            self.eot_id = int(self.meta["eot_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"data dir has a malformed meta.json: {meta_path} ({exc})") from None
        self.train = self._open("train")
        self.val = self._open("val")

    def _open(self, split: str) -> np.memmap:
        path = self.data_dir / f"{split}.bin"
        expected = self.meta.get(f"{split}_tokens")
        size = path.stat().st_size
        if size == 0 or size % np.dtype(TOKEN_DTYPE).itemsize or (
            expected is not None and size // np.dtype(TOKEN_DTYPE).itemsize != expected
        ):
            raise UserError(f"token shard is empty or truncated: {path} (rebuild the data)")
        return np.memmap(path, dtype=TOKEN_DTYPE, mode="r")

    def tokens(self, split: str) -> np.memmap:
        if split not in SPLITS:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.train if split == "train" else self.val

    @property
    def tokenizer_path(self) -> Path:
        return self.data_dir / "tokenizer.json"

    def get_batch(
        self,
        split: str,
        batch_size: int,
        block_size: int,
        step: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows ``x`` and next-token targets ``y``, each (batch_size, block_size).

        The global batch of ``batch_size * world_size`` window starts is drawn from one
        generator seeded by (seed, split, step); rank r takes rows [r*B, (r+1)*B). So two
        ranks with batch B/2 together see exactly what one rank with batch B sees.
        """
        if batch_size < 1 or block_size < 1:
            raise ValueError(f"batch_size and block_size must be positive, got {batch_size}, {block_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if step < 0 or seed < 0:
            raise ValueError(f"step and seed must be non-negative, got {step}, {seed}")
        data = self.tokens(split)
        n_starts = len(data) - block_size  # a window needs block_size + 1 tokens
        if n_starts < 1:
            raise UserError(
                f"{split} split has {len(data)} tokens, too few for block size {block_size}"
            )
        rng = np.random.default_rng([seed, SPLITS.index(split), step])
        starts = rng.integers(0, n_starts, size=batch_size * world_size)
        starts = starts[rank * batch_size : (rank + 1) * batch_size]  # (B,)
        idx = starts[:, None] + np.arange(block_size + 1)  # (B, T+1)
        windows = torch.from_numpy(data[idx].astype(np.int64))  # (B, T+1)
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def iter_val_windows(
        self, block_size: int, max_windows: int | None = None, batch_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Deterministic eval batches: non-overlapping val windows, (b, block_size) each.

        With ``max_windows`` below the number available, the windows are spread evenly
        over the whole split (not just its first files).
        """
        if block_size < 1 or batch_size < 1:
            raise ValueError("block_size and batch_size must be positive")
        data = self.val
        available = (len(data) - 1) // block_size
        if available < 1:
            raise UserError(f"val split has {len(data)} tokens, too few for block size {block_size}")
        if max_windows is not None and max_windows < 1:
            return
        if max_windows is None or max_windows >= available:
            picks = np.arange(available)
        else:
            picks = np.unique(np.linspace(0, available - 1, max_windows).round().astype(np.int64))
        for i in range(0, len(picks), batch_size):
            starts = picks[i : i + batch_size] * block_size  # (b,)
            idx = starts[:, None] + np.arange(block_size + 1)  # (b, T+1)
            windows = torch.from_numpy(data[idx].astype(np.int64))  # (b, T+1)
            yield windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
