"""The environment stamp written next to every benchmark and comparison result: where and with what it ran."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_REPO = Path(__file__).resolve().parents[2]


def git_sha() -> str | None:
    """The commit of the code that runs: ``RETNET_GIT_SHA`` if set, else ``git rev-parse HEAD`` of this checkout.

    The variable exists because a copied tree (a benchmark machine's copy) may carry another checkout's ``.git``,
    or none. Returns None when neither gives a commit.
    """
    sha = os.environ.get("RETNET_GIT_SHA")
    if sha:
        return sha
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def device_name(device: torch.device | str | None = None) -> str:
    """The GPU's name for a CUDA device; for the CPU, its core count and torch's thread count.

    Args:
        device: the device the run used; None means CUDA when available, else the CPU.
    """
    import torch  # here, not at the top: the CLI reads the version from this module without loading torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return str(device)


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (None if it is not installed); nothing is imported."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def retnet_version() -> str:
    """This package's installed version; ``0+unknown`` when the source tree is used without installing it."""
    return package_version("retnet") or "0+unknown"


def environment_stamp(device: torch.device | str | None = None) -> dict:
    """Date, commit, versions and device of a run, for the results files.

    Args:
        device: the device the run used (see :func:`device_name`).

    Returns:
        ``{"date", "git_sha", "device", "torch", "triton", "python", "machine"}``: an ISO-8601 UTC date to the
        second, :func:`git_sha`, :func:`device_name`, the torch and Triton versions (Triton None when absent),
        the Python version and the CPU architecture.
    """
    import torch

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "device": device_name(device),
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
