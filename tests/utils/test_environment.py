"""The environment stamp shared by the benchmark and comparison writers."""

import datetime

import torch

from retnet.utils.environment import device_name, environment_stamp, git_sha, package_version


def test_stamp_fields(monkeypatch):
    monkeypatch.setenv("RETNET_GIT_SHA", "abc1234")
    stamp = environment_stamp("cpu")
    assert set(stamp) == {"date", "git_sha", "device", "torch", "triton", "python", "machine"}
    assert stamp["git_sha"] == "abc1234" and stamp["torch"] == torch.__version__
    assert stamp["device"] == f"CPU ({__import__('os').cpu_count()} cores, {torch.get_num_threads()} threads)"
    date = datetime.datetime.fromisoformat(stamp["date"])
    assert date.tzinfo is not None and abs(datetime.datetime.now(datetime.timezone.utc) - date).total_seconds() < 60


def test_git_sha_without_the_variable(monkeypatch):
    monkeypatch.delenv("RETNET_GIT_SHA", raising=False)
    sha = git_sha()
    assert sha is None or (len(sha) == 40 and int(sha, 16) >= 0)  # None outside a git checkout
    monkeypatch.setenv("RETNET_GIT_SHA", "")
    assert git_sha() == sha  # an empty variable does not count


def test_versions_and_devices():
    assert package_version("torch") is not None
    assert package_version("retnet-no-such-package") is None
    assert device_name(torch.device("cpu")).startswith("CPU (") and device_name("meta") == "meta"
