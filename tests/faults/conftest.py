"""Fault tests run the real ``duka serve`` (tests/faults/process.py); each stops it at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.process import DukaProcess


@pytest.fixture
def duka_process(tmp_path: Path) -> Iterator[DukaProcess]:
    """A ``DukaProcess`` in its own directory, not yet started (tests set env, then start)."""
    process = DukaProcess(tmp_path)
    try:
        yield process
    finally:
        process.stop_quietly()
