"""docs/hf.md runs as written (at small sizes): its shell commands through the CLI, its Python blocks in order, in a
scratch folder holding a run at the path the guide uses."""

import re
import shlex
from pathlib import Path

import torch

from retnet.cli.__main__ import main
from retnet.data.tokenizer import ByteTokenizer

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "hf.md"
SHRINK = [
    ("max_steps=100", "max_steps=2"),
    ("max_new_tokens=100", "max_new_tokens=5"),
    ("max_new_tokens=40", "max_new_tokens=4"),
    ("--max-new-tokens 100", "--max-new-tokens 5"),
]


def _blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(python|bash)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_guide_runs(tmp_path, monkeypatch, native):
    monkeypatch.chdir(tmp_path)
    native.save_pretrained(tmp_path / "runs" / "shakespeare" / "model")
    ByteTokenizer().save(tmp_path / "runs" / "shakespeare" / "tokenizer")
    seq = torch.arange(16) % 5
    namespace = {"dataset": [{"input_ids": seq, "labels": seq}] * 4}
    blocks = _blocks(GUIDE.read_text())
    assert [kind for kind, _ in blocks].count("bash") == 2 and len(blocks) >= 6
    for kind, body in blocks:
        for old, new in SHRINK:
            body = body.replace(old, new)
        if kind == "bash":
            for line in body.splitlines():
                args = shlex.split(line, comments=True)
                assert args[0] == "retnet" and main(args[1:]) == 0, line
        else:
            exec(compile(body, str(GUIDE), "exec"), namespace)
    assert (tmp_path / "shakespeare-native" / "tokenizer").is_dir() and (tmp_path / "ft").is_dir()
    assert namespace["beams"].shape == (3, len("ROMEO:") + 4)
