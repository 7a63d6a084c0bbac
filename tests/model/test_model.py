"""The language model: form equivalence, causality, config, presets, checkpoints, torchscale interop."""

import json

import pytest
import torch

from retnet import PRESETS, RetNetConfig, RetNetForCausalLM
from retnet.model.presets import PAPER_SIZES
from retnet.model.serialization import load_pretrained
from retnet.model.torchscale import config_to_torchscale, state_dict_to_torchscale
from tests.model.official_forward import official_logits
from tests.utils import assert_close


def make_model(dtype=torch.float64, **overrides):
    return RetNetForCausalLM(RetNetConfig.from_preset("debug", **overrides)).to(dtype)


@pytest.mark.parametrize("flavour", ["torchscale", "paper"])
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_three_forms_give_the_same_logits(flavour, dtype, rtol):
    model = make_model(dtype, flavour=flavour)
    ids = torch.randint(0, 256, (2, 37))
    ref = model(ids, form="parallel").logits
    for form, kw in (("chunkwise", dict(chunk_size=8)), ("chunkwise", dict(chunk_size=64)), ("recurrent", {})):
        assert_close(model(ids, form=form, **kw).logits, ref, rtol, f"{form} {kw}")


def test_states_continue_exactly_and_gradients_agree():
    model = make_model()
    ids = torch.randint(0, 256, (2, 20))
    ref = model(ids, form="parallel").logits
    first = model(ids[:, :12], form="chunkwise", chunk_size=5, output_states=True)
    second = model(ids[:, 12:], form="recurrent", states=first.states)
    assert_close(torch.cat([first.logits, second.logits], 1), ref, 1e-9, "continued logits")
    grads = {}
    for form in ("parallel", "chunkwise"):
        model.zero_grad()
        model(ids, form=form, labels=ids, chunk_size=6).loss.backward()
        grads[form] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert_close(grads["chunkwise"], grads["parallel"], 1e-9, "parameter gradients")


def test_packed_documents_equal_separate_rows():
    model = make_model()
    ids = torch.randint(0, 256, (1, 30))
    cu = torch.tensor([0, 11, 30])
    packed = model(ids, cu_seqlens=cu, chunk_size=4).logits
    for form in ("parallel", "recurrent"):
        assert_close(model(ids, form=form, cu_seqlens=cu).logits, packed, 1e-9, f"packed {form}")
    for a, b in ((0, 11), (11, 30)):
        assert_close(packed[:, a:b], model(ids[:, a:b], form="parallel").logits, 1e-9, "document")


def test_bf16_model_does_not_leak_future_tokens():
    model = make_model(torch.bfloat16, num_heads=2, decay_schedule="paper")
    ids = torch.randint(0, 256, (1, 50))
    changed = ids.clone()
    changed[0, 30:] = (changed[0, 30:] + 1) % 256
    for form in ("parallel", "chunkwise"):
        a = model(ids, form=form, chunk_size=16).logits
        b = model(changed, form=form, chunk_size=16).logits
        assert torch.equal(a[:, :30], b[:, :30]), form
        assert not torch.equal(a[:, 30:], b[:, 30:])


def test_loss_ignores_minus_100():
    model = make_model(torch.float32)
    ids = torch.randint(0, 256, (2, 10))
    labels = ids.clone()
    labels[:, 5:] = -100
    out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :4].flatten(0, 1), ids[:, 1:5].flatten())
    assert_close(out.loss, expected, 1e-6, "loss")


@pytest.mark.parametrize("name", ["1.3b", "2.7b", "6.7b", "1.3b-paper", "2.7b-paper", "6.7b-paper", "200m"])
def test_paper_preset_sizes(name):
    with torch.device("meta"):
        model = RetNetForCausalLM(RetNetConfig.from_preset(name))
    size = PAPER_SIZES[name.removesuffix("-paper")]
    count = model.num_parameters(exclude_embeddings=name == "200m")
    assert abs(count / size - 1) < 0.05, f"{name}: {count / 1e9:.3f}B vs {size / 1e9}B"


def test_config_round_trip_and_validation(tmp_path):
    cfg = RetNetConfig.from_preset("tiny", flavour="paper", eos_token_id=3)
    cfg.save(tmp_path / "c.json")
    assert RetNetConfig.load(tmp_path / "c.json") == cfg
    assert cfg.norm == "layernorm" and cfg.head_norm == "groupnorm" and not cfg.ffn_glu
    with pytest.raises(ValueError, match="valid presets"):
        RetNetConfig.from_preset("1.3B")
    with pytest.raises(ValueError, match="unknown RetNetConfig field"):
        RetNetConfig.from_dict({**cfg.to_dict(), "hidden": 3})
    bad = [
        dict(num_heads=3),
        dict(flavour="official"),
        dict(norm_eps=0),
        dict(vocab_size=0),
        dict(activation="tanh"),
        dict(eos_token_id=999),
        dict(dropout=1.5),
    ]
    for kw in bad:
        with pytest.raises(ValueError):
            RetNetConfig.from_preset("debug", **kw)
    assert set(PRESETS) >= {"debug", "tiny", "small", "200m", "1.3b", "2.7b", "6.7b"}


def test_bad_input_ids():
    model = make_model()
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        model(torch.tensor([[1, 256]]))
    with pytest.raises(ValueError, match="at least one token"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="unknown form"):
        model(torch.zeros(1, 3, dtype=torch.long), form="rnn")
    with pytest.raises(ValueError, match="chunk_size"):
        model(torch.zeros(1, 3, dtype=torch.long), chunk_size=0)
    with pytest.raises(ValueError, match="left padding"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 0, 1]]))


def test_save_load_is_bit_exact(tmp_path):
    for tie in (False, True):
        model = make_model(torch.float32, tie_word_embeddings=tie)
        model.save_pretrained(tmp_path / str(tie))
        loaded = RetNetForCausalLM.from_pretrained(tmp_path / str(tie))
        for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(a, b), n
        if tie:
            assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
        assert not list((tmp_path / str(tie)).glob("*.tmp"))


def test_corrupt_checkpoints_give_clear_errors(tmp_path):
    model = make_model(torch.float32)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="checksum"):
        RetNetForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "checksums.json").unlink()
    with pytest.raises(ValueError, match="no checksum .* --allow-unverified"):
        RetNetForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="cannot read"):
        load_pretrained(RetNetForCausalLM, tmp_path, allow_unverified=True)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["hidden_size"] = 128
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape"):
        RetNetForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        RetNetForCausalLM.from_pretrained(tmp_path / "nowhere")


def _official_state_dict(args):
    """An official-format state dict with random weights, built from the official config keys alone."""
    d, v, f, L = (args[k] for k in ("decoder_embed_dim", "decoder_value_embed_dim", "decoder_ffn_embed_dim",
                                    "decoder_layers"))  # fmt: skip
    g = torch.Generator().manual_seed(0)
    rnd = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64) * shape[-1] ** -0.5
    sd = {"embed_tokens.weight": rnd(args["vocab_size"], d), "layer_norm.weight": 1 + 0.1 * rnd(d)}
    for i in range(L):
        p = f"layers.{i}."
        sd.update({
            p + "retention.q_proj.weight": rnd(d, d), p + "retention.k_proj.weight": rnd(d, d),
            p + "retention.v_proj.weight": rnd(v, d), p + "retention.g_proj.weight": rnd(v, d),
            p + "retention.out_proj.weight": rnd(d, v), p + "retention_layer_norm.weight": 1 + 0.1 * rnd(d),
            p + "ffn.fc1.weight": rnd(f, d), p + "ffn.gate.weight": rnd(f, d), p + "ffn.fc2.weight": rnd(d, f),
            p + "final_layer_norm.weight": 1 + 0.1 * rnd(d),
        })  # fmt: skip
    sd["output_projection.weight"] = rnd(args["vocab_size"], d)
    sd["retnet_rel_pos.angle"] = torch.zeros(4)  # official buffers are recomputed, not loaded
    return sd


@pytest.mark.parametrize("activation", ["swish", "gelu"])
def test_official_state_dict_loads_and_computes_the_official_function(activation):
    args = dict(vocab_size=100, decoder_embed_dim=32, decoder_value_embed_dim=48, decoder_retention_heads=2,
                decoder_ffn_embed_dim=40, decoder_layers=2, activation_fn=activation, no_scale_embedding=False,
                layernorm_eps=1e-12, unrelated_key="ignored")  # fmt: skip
    sd = _official_state_dict(args)
    config = RetNetConfig.from_torchscale(args)
    model = RetNetForCausalLM.from_torchscale(sd, config).double()
    ids = torch.randint(0, 100, (2, 25))
    expected = official_logits(sd, args, ids)
    # docs/spec.md §3 note: the normalisers differ only by per-row scalars that the head norm removes as eps -> 0.
    for form in ("parallel", "chunkwise", "recurrent"):
        assert_close(model(ids, form=form, chunk_size=8).logits, expected, 1e-8, f"official {form}")
    # Round trip through the official names keeps the outputs.
    back = RetNetForCausalLM.from_torchscale(state_dict_to_torchscale(model), config_to_torchscale(config)).double()
    assert_close(back(ids).logits, model(ids).logits, 0.0, "round trip")


def test_from_torchscale_defaults_and_errors():
    cfg = RetNetConfig.from_torchscale({"vocab_size": 1000, "decoder_retention_heads": 4})
    assert (cfg.hidden_size, cfg.value_dim, cfg.num_heads, cfg.ffn_dim, cfg.num_hidden_layers) == (
        768,
        1280,
        4,
        1280,
        12,
    )
    assert cfg.activation == "gelu" and not cfg.scale_embedding and cfg.norm_eps == 1e-6
    with pytest.raises(ValueError, match="vocab_size"):
        RetNetConfig.from_torchscale({})
    with pytest.raises(ValueError, match="divisible"):  # the official defaults alone: 1280 values over 3 heads
        RetNetConfig.from_torchscale({"vocab_size": 1000})
    with pytest.raises(ValueError, match="activation"):
        RetNetConfig.from_torchscale({"vocab_size": 10, "activation_fn": "tanh"})
    with pytest.raises(ValueError, match="deepnorm"):
        RetNetConfig.from_torchscale({"vocab_size": 10, "deepnorm": True})
    args = dict(vocab_size=100, decoder_embed_dim=32, decoder_value_embed_dim=48, decoder_retention_heads=2,
                decoder_ffn_embed_dim=40, decoder_layers=2)  # fmt: skip
    sd = _official_state_dict(args)
    del sd["layers.1.ffn.gate.weight"]
    with pytest.raises(ValueError, match="missing"):
        RetNetForCausalLM.from_torchscale(sd, args)
