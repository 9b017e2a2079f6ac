"""Fixtures shared by several test modules."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

TMPFS = Path("/dev/shm")


@pytest.fixture
def fast_tmp_path(tmp_path: Path) -> Iterator[Path]:
    """A fresh folder in memory (tmpfs) when the machine has one, else pytest's tmp_path.

    An Optuna study on SQLite commits about thirty times per trial and every commit waits for an
    fsync: 10-30 ms each on a busy disk, seconds per study. The storage tests are about what is
    committed, not about the disk, so their databases live in memory."""
    if not (TMPFS.is_dir() and shutil.disk_usage(TMPFS).free > 1 << 28):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="einsim-test-", dir=TMPFS))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def poisoned(monkeypatch):
    """Every scratch and output buffer the multi-pass and decode kernels allocate starts as NaN
    (kernels/runtime.py's scratch and empty_output): an element a kernel never writes shows up."""
    import torch

    from einsim.kernels import runtime

    def nan_buffer(shape, device, dtype=None):
        return torch.full(shape, float("nan"), device=device, dtype=dtype or torch.float32)

    monkeypatch.setattr(runtime, "scratch", nan_buffer)
    monkeypatch.setattr(runtime, "empty_output", nan_buffer)
