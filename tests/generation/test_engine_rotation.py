"""The decoding engine builds the rotation table once per step (and per prefill piece) for all layers, from the
slots' positions on the device, and decodes bit for bit what layers rotating on their own decode."""

import torch

import retnet.generation.engine as engine_module
import retnet.layers.retention as retention_layer
from retnet import RetNetConfig, RetNetForCausalLM
from retnet.generation import DecodeEngine, SamplingConfig
from tests.layers.test_rotation_table import rotation_by_formula


def _decode(model, prompts):
    engine = DecodeEngine(
        model, max_batch=3, max_len=16, prefill_chunk=3, sampling=SamplingConfig(do_sample=True, top_k=50)
    )
    engine.add(prompts, seeds=[3, 4])
    logits, tokens = [engine.logits.clone()], []
    for i in range(5):
        if i == 2:
            engine.add([[9, 8]], seeds=[5])  # a slot filled while the others decode
        tokens.append(engine.step().clone())
        logits.append(engine.logits.clone())
    return torch.stack(tokens), torch.stack(logits)


def test_engine_builds_one_table_per_step_and_decodes_like_per_layer_rotation(monkeypatch):
    torch.manual_seed(0)
    model = RetNetForCausalLM(RetNetConfig.from_preset("debug", num_hidden_layers=3, chunk_size=4)).eval()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [42]]  # 3 prefill pieces and 1
    calls = []
    build = retention_layer.rotation_table

    def counted(*args, **kwargs):
        calls.append(1)
        return build(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(retention_layer, "rotation_table", counted)
        engine = DecodeEngine(model, max_batch=2, max_len=16, prefill_chunk=3)
        calls.clear()  # construction runs no step off CUDA
        engine.add(prompts)
        assert len(calls) == 3 + 1, "one table per prefill piece for all layers"
        calls.clear()
        engine.step()
        engine.step()
        assert len(calls) == 2, "one table per step for all layers"
    shared = _decode(model, prompts)
    with monkeypatch.context() as m:  # every layer rotates by the formula from the positions, as before the table
        m.setattr(engine_module, "_rotation_builder", lambda parts: None)
        m.setattr(retention_layer, "rotation_table", lambda positions, head_dim, dtype: positions)
        m.setattr(retention_layer, "apply_rotation", rotation_by_formula)
        per_layer = _decode(model, prompts)
    assert torch.equal(shared[0], per_layer[0])
    assert torch.equal(shared[1], per_layer[1]), f"logits differ by {(shared[1] - per_layer[1]).abs().max():.3g}"
