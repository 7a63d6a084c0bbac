"""A self-check anyone can run: one model, three forms, one function; then O(1)-per-token generation."""

from __future__ import annotations

import time

import torch

from ..model import RetNetConfig
from .models import RetNetForCausalLM


def forms_demo(preset: str = "tiny", length: int = 200, seed: int = 0) -> list[str]:
    """Run a random-init model of ``preset`` (byte vocabulary) in every form; return report lines."""
    torch.manual_seed(seed)
    config = RetNetConfig.from_preset(preset, vocab_size=256)
    model = RetNetForCausalLM(config).double().eval()
    ids = torch.randint(0, 256, (2, length))
    lines = [f"model: preset {preset!r}, {model.num_parameters():,} parameters, float64, T = {length}"]
    with torch.no_grad():
        ref = model(ids, form="parallel").logits
        for form, kw in (("chunkwise", {"chunk_size": 64}), ("chunkwise", {"chunk_size": 7}), ("recurrent", {})):
            t0 = time.perf_counter()
            logits = model(ids, form=form, **kw).logits
            err = ((logits - ref).norm() / ref.norm()).item()
            lines.append(
                f"{form:>9} {kw!s:>18}: relative difference to parallel {err:.1e} ({time.perf_counter() - t0:.2f} s)"
            )
        prompt = list(b"To be, or not to be")
        out = model.generate([prompt], max_new_tokens=24)
    text = bytes(out[0, len(prompt) :].tolist()).decode("latin-1")
    lines.append(f"greedy continuation of an untrained model: {text!r}")
    return lines
