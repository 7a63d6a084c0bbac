"""Reading prepared datasets: memory-mapped token streams cut into fixed windows, in a deterministic order.

The sampler is a pure function of (seed, step): the global batch of optimizer step ``s`` is the windows
``perm_e[(s·G + j) mod W]`` for j < G (G global batch size, W windows per epoch, ``perm_e`` a seeded
permutation for epoch e), and rank r of R takes its contiguous share. So the data position of a run is just
its step count, resuming is exact, and any number of ranks sees the same global batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .prepare import read_manifest
from .tokenizer import Tokenizer, load_tokenizer


class PreparedDataset:
    """A prepared dataset folder (see :mod:`retnet.data.prepare`).

    Args:
        path: the folder holding ``manifest.json``, ``tokenizer/`` and ``{train,val}.bin``.

    Raises:
        FileNotFoundError: the folder is missing or incomplete.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.dtype = np.dtype(self.manifest["dtype"])
        self.tokenizer: Tokenizer = load_tokenizer(self.path / "tokenizer")
        self.sep_id = int(self.manifest["separator_id"])

    def tokens(self, split: str) -> np.ndarray:
        """The flat token stream of ``split`` ("train" or "val") as a read-only memmap."""
        if split not in ("train", "val"):
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'val'")
        return np.memmap(self.path / f"{split}.bin", dtype=self.dtype, mode="r")

    def bytes_per_token(self, split: str) -> float:
        """Average UTF-8 bytes per token of ``split`` (for bits per byte)."""
        c = self.manifest["splits"][split]
        return c["bytes"] / max(c["tokens"], 1)


class WindowSampler:
    """Fixed windows of ``seq_len + 1`` tokens over a stream, served in a seeded per-epoch order.

    Args:
        tokens: the token stream.
        seq_len: tokens per training sequence T (each window holds T + 1 for the shifted targets).
        seed: seeds the epoch permutations.
        shuffle: False serves windows in stream order (evaluation).

    Raises:
        ValueError: the stream is shorter than one window.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int = 0, shuffle: bool = True) -> None:
        self.tokens = tokens
        self.seq_len = seq_len
        self.num_windows = (len(tokens) - 1) // seq_len
        if self.num_windows < 1:
            raise ValueError(f"token stream of {len(tokens)} tokens is shorter than one window of {seq_len + 1}")
        self.seed = seed
        self.shuffle = shuffle
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_windows)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
            self._perm_epoch = epoch
        return self._perm

    def window(self, global_index: int) -> np.ndarray:
        """The ``global_index``-th window served (epochs continue past the end): ``(T + 1,)`` int64."""
        epoch, i = divmod(global_index, self.num_windows)
        start = int(self._order(epoch)[i]) * self.seq_len
        return np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64)

    def batch(self, step: int, global_batch: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Rank ``rank``'s share of step ``step``'s global batch: ``(global_batch / world_size, T + 1)`` int64.

        Raises:
            ValueError: ``global_batch`` not divisible by ``world_size``.
        """
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by world size {world_size}")
        per_rank = global_batch // world_size
        first = step * global_batch + rank * per_rank
        return np.stack([self.window(first + j) for j in range(per_rank)])

    def epoch_of(self, step: int, global_batch: int) -> float:
        """Epochs completed after ``step`` steps."""
        return step * global_batch / self.num_windows
