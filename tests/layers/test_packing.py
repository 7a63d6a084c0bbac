"""Stacked projections for decoding: same outputs, views of one buffer, dropped on a move, saved unshared."""

import pytest
import torch
from torch import nn

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.baselines import MixerLM, MixerLMConfig
from retnet.generation import DecodeEngine
from retnet.layers import FeedForward, MultiScaleRetention
from retnet.layers.packing import pack_linears_
from tests.utils import assert_close


def _linears(*widths, d=16, dtype=torch.float64):
    torch.manual_seed(0)
    return [nn.Linear(d, n, bias=False).to(dtype) for n in widths]


def test_packed_product_equals_the_separate_products_and_shares_the_parameters():
    linears = _linears(8, 8, 24)
    before = [lin.weight.detach().clone() for lin in linears]
    x = torch.randn(3, 1, 16, dtype=torch.float64)
    expected = [lin(x) for lin in linears]
    packed = pack_linears_(linears)
    assert packed.sizes == (8, 8, 24) and packed.weight.shape == (40, 16)
    for lin, w, out, exp in zip(linears, before, packed(x), expected):
        assert torch.equal(lin.weight, w)  # values unchanged
        assert lin.weight.untyped_storage().data_ptr() == packed.weight.untyped_storage().data_ptr()  # a view
        assert_close(out, exp, 1e-13)
    with torch.no_grad():
        linears[2].weight.mul_(2.0)  # an in-place update of a parameter reaches the buffer
    assert_close(packed(x)[2], 2.0 * expected[2], 1e-13)


def test_bad_linears_are_refused():
    with pytest.raises(ValueError, match="bias-free"):
        pack_linears_([nn.Linear(4, 4), nn.Linear(4, 4, bias=False)])
    with pytest.raises(ValueError, match="input width"):
        pack_linears_([nn.Linear(4, 4, bias=False), nn.Linear(5, 4, bias=False)])
    with pytest.raises(ValueError, match="at least one"):
        pack_linears_([])


@pytest.mark.parametrize("glu", [True, False])
def test_ffn_decode_equals_forward(glu):
    torch.manual_seed(0)
    ffn = FeedForward(16, 32, glu=glu).double().eval()
    x = torch.randn(2, 16, dtype=torch.float64)
    expected = ffn(x)
    ffn.pack_decode_weights_()
    assert (ffn._packed_decode is not None) == glu
    assert_close(ffn.decode(x), expected, 1e-13)


def test_moving_a_module_drops_its_packing():
    torch.manual_seed(0)
    msr = MultiScaleRetention(32, 2, value_dim=64).float()
    msr.pack_decode_weights_()
    assert msr._packed_decode is not None
    msr.double()  # new storage for every parameter: the stacked buffer would be stale
    assert msr._packed_decode is None
    state = msr.allocate_decode_state(2, 8, torch.device("cpu"), torch.float64)
    x = torch.randn(2, 32, dtype=torch.float64)
    y_plain = msr.decode_step_(x, state)
    msr.pack_decode_weights_()
    state2 = msr.allocate_decode_state(2, 8, torch.device("cpu"), torch.float64)
    assert_close(msr.decode_step_(x, state2), y_plain, 1e-12)


def _tiny(arch):
    torch.manual_seed(0)
    if arch == "retnet":
        return RetNetForCausalLM(RetNetConfig.from_preset("debug")).double().eval()
    cfg = MixerLMConfig(arch="transformer", vocab_size=256, hidden_size=32, num_hidden_layers=2, ffn_dim=64)
    return MixerLM(cfg).double().eval()


@pytest.mark.parametrize("arch", ["retnet", "transformer"])
def test_engine_logits_do_not_depend_on_packing(arch):
    prompts = [[5, 6, 7, 8], [9, 10]]
    logits = {}
    for pack in (False, True):
        model = _tiny(arch)
        engine = DecodeEngine(model, max_batch=2, max_len=12, pack_weights=pack)
        engine.add(prompts)
        steps = []
        for _ in range(4):
            steps.append(engine.logits.clone())
            engine.step()
        logits[pack] = torch.stack(steps)
        packed = [b for b in engine.parts.blocks if b.mixer._packed_decode is not None]
        assert len(packed) == (len(engine.parts.blocks) if pack else 0)
    assert_close(logits[True], logits[False], 1e-12)


def test_a_model_packed_by_the_engine_saves_and_loads_unchanged(tmp_path):
    model = _tiny("retnet")
    DecodeEngine(model, max_batch=1, max_len=8)  # packs every layer in place
    model.save_pretrained(tmp_path)
    loaded = RetNetForCausalLM.from_pretrained(tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_deep_copy_does_not_decode_with_a_stale_buffer():
    import copy

    torch.manual_seed(0)
    msr = MultiScaleRetention(32, 2, value_dim=64).double()
    msr.pack_decode_weights_()
    twin = copy.deepcopy(msr)  # its parameters are fresh tensors; its stacked buffer a copy of the old values
    with torch.no_grad():
        twin.q_proj.weight.mul_(3.0)
    x = torch.randn(2, 32, dtype=torch.float64)
    state = twin.allocate_decode_state(2, 8, torch.device("cpu"), torch.float64)
    y = twin.decode_step_(x, state)
    twin._packed_decode = None
    state = twin.allocate_decode_state(2, 8, torch.device("cpu"), torch.float64)
    assert_close(y, twin.decode_step_(x, state), 1e-13)  # the updated weights, not the stale copy
