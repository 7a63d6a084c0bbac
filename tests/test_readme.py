"""Every python code block of README.md runs (at small sizes, in a scratch folder).

Blocks are matched by their first line of code. ``PREAMBLES`` defines the names a block assumes (the README's
retention snippet uses ``q, k, v``), ``SHRINK`` swaps sizes for small ones (each swap must still match the block,
so a changed README fails here instead of silently running something else), ``CHECKS`` asserts what a block
promises, and ``SKIP`` names the blocks that cannot run as they stand, with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"

PREAMBLES = {
    "from retnet import retention, log_decay_schedule": (
        "import torch\n"
        "B, T, H, K, V = 2, 37, 2, 8, 16\n"
        "q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K) * K**-0.5, torch.randn(B, T, H, V)\n"
        "q2, k2, v2 = torch.randn(B, 5, H, K), torch.randn(B, 5, H, K) * K**-0.5, torch.randn(B, 5, H, V)\n"
    ),
}
HF_IMPORT = "from retnet.hf import RetNetHFConfig, RetNetHFForCausalLM, register_auto_classes"
SHRINK = {
    "import torch": [('RetNetConfig.from_preset("tiny"', 'RetNetConfig.from_preset("debug"')],
    HF_IMPORT: [
        (
            "vocab_size=32000, hidden_size=512, num_heads=4, num_hidden_layers=6",
            "vocab_size=64, hidden_size=32, num_heads=2, num_hidden_layers=2",
        )
    ],
}
CHECKS = {
    "from retnet import retention, log_decay_schedule": lambda ns: (
        ns["state"] is not None and ns["o2"].shape == ns["v2"].shape
    ),
    "import torch": lambda ns: ns["logits"].shape[:2] == ns["ids"].shape,
}
SKIP: dict[str, str] = {}


def python_blocks(text: str) -> list[str]:
    """The bodies of the fenced ```python blocks of ``text``, in order."""
    return [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)]


def _key(block: str) -> str:
    return next(line for line in block.splitlines() if line.strip() and not line.startswith("#"))


BLOCKS = python_blocks(README.read_text())


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 3
    assert set(PREAMBLES) | set(SHRINK) | set(CHECKS) | set(SKIP) <= {_key(b) for b in BLOCKS}, "stale keys"


@pytest.mark.parametrize("block", BLOCKS, ids=[_key(b)[:40] for b in BLOCKS])
def test_readme_block_runs(block, tmp_path, monkeypatch):
    key = _key(block)
    if key in SKIP:
        pytest.skip(SKIP[key])
    for old, new in SHRINK.get(key, []):
        assert old in block, f"README block {key!r} no longer holds {old!r}; update SHRINK"
        block = block.replace(old, new)
    monkeypatch.chdir(tmp_path)  # blocks may save checkpoints
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(PREAMBLES.get(key, "") + block, f"README.md:{key}", "exec"), namespace)
    if key in CHECKS:
        assert CHECKS[key](namespace), f"README block {key!r} does not do what it shows"
