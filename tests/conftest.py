"""Fixtures every test module shares."""

from __future__ import annotations

from pathlib import Path

import pytest

# Settings convvol reads from the environment; a test's run must not depend on the caller's.
ENVIRONMENT_SETTINGS = (
    "CONVVOL_FILTERS", "CONVVOL_MAX_PIXELS", "CONVVOL_MAX_KERNEL", "DASK_SCHEDULER_ADDRESS",
)  # fmt: skip


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory (no ./filters of its own, no settings from the environment)."""
    monkeypatch.chdir(tmp_path)
    for name in ENVIRONMENT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    return tmp_path
