"""The rotation table built once per forward: the logits and gradients of every layer rotating on its own, bit for
bit, in every layout that changes the positions; one table per forward; compiled blocks trace it whole."""

import copy

import pytest
import torch

import retnet.layers.retention as retention_layer
from retnet import RetNetConfig, RetNetForCausalLM
from tests.layers.test_rotation_table import rotation_by_formula


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RetNetForCausalLM(RetNetConfig.from_preset("debug", num_hidden_layers=3, chunk_size=4, backend="torch"))


def _per_layer_rotation(monkeypatch):
    """Each layer rotates by the formula from the positions, as before the shared table."""
    monkeypatch.setattr(RetNetForCausalLM, "_rotation", lambda self, positions: None)
    monkeypatch.setattr(retention_layer, "rotation_table", lambda positions, head_dim, dtype: positions)
    monkeypatch.setattr(retention_layer, "apply_rotation", rotation_by_formula)


def _count_tables(monkeypatch) -> list:
    calls = []
    build = retention_layer.rotation_table

    def counted(*args, **kwargs):
        calls.append(1)
        return build(*args, **kwargs)

    monkeypatch.setattr(retention_layer, "rotation_table", counted)
    return calls


def _layouts():
    """(name, kwargs of the first segment, kwargs of a second segment continuing its states or None)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 256, (2, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    doc = torch.randint(0, 256, (1, 15), generator=g)
    return [
        ("chunkwise", dict(input_ids=ids), None),
        ("parallel", dict(input_ids=ids, form="parallel"), None),
        ("left padding", dict(input_ids=ids, attention_mask=mask), None),
        ("documents", dict(input_ids=doc, cu_seqlens=torch.tensor([0, 6, 15])), None),
        ("state", dict(input_ids=ids[:, :7]), dict(input_ids=ids[:, 7:])),
        ("recurrent", dict(input_ids=ids[:, :3], form="recurrent"), dict(input_ids=ids[:, 3:6], form="recurrent")),
    ]


def _logits_and_grads(model, first, second):
    model.zero_grad(set_to_none=True)
    out = model(**first, output_states=second is not None)
    logits = [out.logits]
    if second is not None:
        logits.append(model(**second, states=out.states).logits)
    sum(x.square().mean() for x in logits).backward()
    return logits, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name, first, second", _layouts(), ids=[layout[0] for layout in _layouts()])
def test_shared_table_equals_per_layer_rotation_bit_for_bit(model, name, first, second, monkeypatch):
    shared = _logits_and_grads(model, first, second)
    with monkeypatch.context() as m:
        _per_layer_rotation(m)
        per_layer = _logits_and_grads(model, first, second)
    for a, b in zip(shared[0], per_layer[0]):
        assert torch.equal(a, b), f"{name}: logits differ by {(a - b).abs().max():.3g}"
    for n, g in per_layer[1].items():
        assert torch.equal(shared[1][n], g), f"{name}: gradient of {n} differs by {(shared[1][n] - g).abs().max():.3g}"


def test_one_table_per_forward(model, monkeypatch):
    calls = _count_tables(monkeypatch)
    ids = torch.randint(0, 256, (2, 9))
    model(ids)
    assert len(calls) == 1, "the chunkwise forward builds one table for all layers"
    calls.clear()
    model(ids, form="recurrent")
    assert len(calls) == 9, "the recurrent form builds one per token for all layers"
    calls.clear()
    model.model(ids, form="chunkwise", chunk_size=4, states=None, offset=None, cu_seqlens=None, output_states=False)
    assert len(calls) == 1, "the trunk alone (the transformers wrapper's path) builds one table"


def test_compiled_blocks_trace_the_table_whole(model):
    """Every block compiled with ``fullgraph=True`` (a graph break fails) takes the table as a tensor input and gives
    eager's logits; no block recompiles for the next layer."""
    from torch._dynamo.utils import counters

    compiled = copy.deepcopy(model)
    torch._dynamo.reset()
    counters.clear()
    for block in compiled.model.layers:
        block.compile(backend="eager", fullgraph=True, dynamic=False)
    ids = torch.randint(0, 256, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    assert torch.equal(compiled(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)
    assert counters["stats"]["unique_graphs"] == 1
