"""The shared causal-LM base: every architecture on it, its checkpoints, its loss, the mixer protocol, layering."""

import ast
import inspect
import json
from pathlib import Path

import pytest
import torch

import retnet
from retnet import RetNetConfig
from retnet.baselines import ARCHS, MixerLM, MixerLMConfig
from retnet.baselines.model import build_mixer
from retnet.generation import GenerationMixin
from retnet.layers import MultiScaleRetention
from retnet.model import CausalLM, CausalLMOutput, RetNetOutput
from retnet.model import RetNetForCausalLM as CoreRetNet
from retnet.model.loss import next_token_targets
from retnet.model.mixer import MIXER_ARGUMENTS
from tests.utils import assert_close

PACKAGE = Path(retnet.__file__).parent


def baseline_config(arch: str, **overrides) -> MixerLMConfig:
    kwargs = dict(
        arch=arch, vocab_size=40, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_heads=2, h3_head_dim=4,
        ssm_state_size=8, max_position_embeddings=64,
    )  # fmt: skip
    return MixerLMConfig(**{**kwargs, **overrides})


def retnet_config(flavour: str, **overrides) -> RetNetConfig:
    return RetNetConfig.from_preset("debug", flavour=flavour, vocab_size=40, **overrides)


# Every architecture on the base: RetNet's two flavours and each baseline.
ARCHITECTURES = {
    "retnet-torchscale": (retnet.RetNetForCausalLM, lambda **kw: retnet_config("torchscale", **kw)),
    "retnet-paper": (retnet.RetNetForCausalLM, lambda **kw: retnet_config("paper", **kw)),
    **{arch: (MixerLM, lambda arch=arch, **kw: baseline_config(arch, **kw)) for arch in ARCHS},
}


def build(name: str, **overrides) -> CausalLM:
    cls, config = ARCHITECTURES[name]
    return cls(config(**overrides))


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_round_trips_through_the_verified_loader(tmp_path, name, tie):
    model = build(name, tie_word_embeddings=tie)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "checksums.json").read_text())["model.safetensors"]
    loaded = type(model).from_pretrained(tmp_path)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert list(loaded.state_dict()) == list(model.state_dict())
    for (key, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), key
    assert (loaded.lm_head.weight is loaded.trunk.embed_tokens.weight) == tie
    ids = torch.randint(0, 40, (2, 9))
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("name", ["hyena", "transformer", "retnet-paper"])
def test_a_corrupt_checkpoint_is_refused(tmp_path, name):
    model = build(name)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last tensor: the file still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        type(model).from_pretrained(tmp_path)


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    build("rwkv").save_pretrained(tmp_path / "rwkv")
    build("retnet-torchscale").save_pretrained(tmp_path / "retnet")
    with pytest.raises(ValueError, match="unknown RetNetConfig field"):
        retnet.RetNetForCausalLM.from_pretrained(tmp_path / "rwkv")
    with pytest.raises(ValueError, match="unknown MixerLMConfig field"):
        MixerLM.from_pretrained(tmp_path / "retnet")
    cfg = json.loads((tmp_path / "rwkv" / "config.json").read_text())
    (tmp_path / "rwkv" / "config.json").write_text(json.dumps({**cfg, "arch": "h3"}))
    with pytest.raises(ValueError, match="does not fit its config"):
        MixerLM.from_pretrained(tmp_path / "rwkv")


@pytest.mark.parametrize("name", ["retnet-torchscale", "transformer", "rwkv"])
def test_loss_method_is_the_shifted_cross_entropy(name):
    model = build(name)
    ids = torch.randint(0, 40, (2, 12))
    labels = ids.clone()
    labels[0, 7:] = -100
    out = model(ids, labels=labels, output_states=True)
    logits = out.logits.float()
    keep = labels[:, 1:] != -100
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
    expected = -log_probs.gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0][keep].mean()
    assert_close(out.loss, expected, 1e-6, "loss")
    hidden, _ = model._hidden(ids, "chunkwise", 64, None, None, None, False)
    targets = next_token_targets(labels, None, ids.shape)
    assert torch.equal(model.loss(hidden, targets), out.loss)  # computing the head inside gives the same bits
    with pytest.raises(ValueError, match="shape of input_ids"):
        model.loss(hidden, targets[:, 1:])


def test_state_dict_names_are_unchanged():
    layer0 = ["retention_layer_norm.weight", "retention.q_proj.weight", "retention.k_proj.weight",
              "retention.v_proj.weight", "retention.g_proj.weight", "retention.out_proj.weight",
              "final_layer_norm.weight", "ffn.fc1.weight", "ffn.gate.weight", "ffn.fc2.weight"]  # fmt: skip
    names = [k for k in build("retnet-torchscale").state_dict() if "layers.1." not in k]
    assert names == ["model.embed_tokens.weight", *("model.layers.0." + n for n in layer0), "model.layer_norm.weight",
                     "lm_head.weight"]  # fmt: skip
    layer0 = ["mixer_norm.weight", "mixer_norm.bias", "mixer.q_proj.weight", "mixer.k_proj.weight",
              "mixer.v_proj.weight", "mixer.out_proj.weight", "ffn_norm.weight", "ffn_norm.bias", "ffn.fc1.weight",
              "ffn.fc2.weight"]  # fmt: skip
    names = [k for k in build("transformer").state_dict() if "layers.1." not in k]
    assert names == ["embed_tokens.weight", *("layers.0." + n for n in layer0), "layer_norm.weight",
                     "layer_norm.bias", "lm_head.weight"]  # fmt: skip


def test_every_mixer_follows_the_protocol():
    mixers = [MultiScaleRetention(32, 2, 64)] + [build_mixer(baseline_config(arch), 0) for arch in ARCHS]
    for mixer in mixers:
        params = inspect.signature(mixer.forward).parameters
        missing = [a for a in MIXER_ARGUMENTS if a not in params or params[a].kind is not params[a].KEYWORD_ONLY]
        assert not missing, f"{type(mixer).__name__}.forward lacks keyword arguments {missing}"
        x = torch.randn(2, 5, 32)
        kwargs = dict(chunk_size=4, state=None, offset=None, cu_seqlens=None, positions=None)
        y, state = mixer(x, form="parallel", output_state=True, **kwargs)
        assert y.shape == x.shape and state is not None
        assert mixer(x, form="chunkwise", output_state=False, **kwargs)[1] is None
        y_rec, _ = mixer(x, form="recurrent", output_state=False, **kwargs)
        assert_close(y_rec, y, 1e-4, f"{type(mixer).__name__} recurrent")


def test_baselines_refuse_what_they_cannot_do():
    model = build("h3")
    ids = torch.randint(0, 40, (1, 6))
    with pytest.raises(ValueError, match="cu_seqlens"):
        model(ids, cu_seqlens=torch.tensor([0, 3, 6]))
    assert torch.equal(model(ids, attention_mask=torch.ones_like(ids)).logits, model(ids).logits)
    with pytest.raises(ValueError, match="offset"):
        model.layers[0].mixer(torch.randn(1, 6, 32), offset=torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="one state per layer"):
        model(ids, states=[None])
    with pytest.raises(TypeError, match="MixerLMConfig"):
        MixerLM(retnet_config("paper"))
    with pytest.raises(TypeError, match="RetNetConfig"):
        retnet.RetNetForCausalLM(baseline_config("h3"))


def test_public_classes_compose_generation_with_the_model():
    assert issubclass(retnet.RetNetForCausalLM, CoreRetNet) and issubclass(retnet.RetNetForCausalLM, GenerationMixin)
    assert issubclass(MixerLM, CausalLM) and issubclass(MixerLM, GenerationMixin)
    assert not hasattr(CoreRetNet, "generate") and not hasattr(CausalLM, "stream_generate")
    assert RetNetOutput is CausalLMOutput
    model = retnet.RetNetForCausalLM(retnet_config("torchscale")).eval()
    prompt = torch.randint(0, 40, (1, 4))
    assert torch.equal(
        model.generate(prompt, max_new_tokens=3), retnet.generation.generate(model, prompt, max_new_tokens=3)
    )
    steps = list(model.stream_generate(prompt, max_new_tokens=3))
    assert len(steps) == 3 and all(s.shape == (1,) for s in steps)


def _imports(path: Path) -> list[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved), lazy imports included."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names += [target] + [f"{target}.{alias.name}" for alias in node.names]
    return names


def test_dependencies_point_one_way():
    for path in sorted((PACKAGE / "model").glob("*.py")):
        bad = [n for n in _imports(path) if n.startswith(("retnet.generation", "retnet.baselines", "retnet.training"))]
        assert not bad, f"{path.name} imports {bad}: retnet.model must not depend on generation, baselines, training"
    retnet_specific = ("retnet.model.modeling", "retnet.model.torchscale", "retnet.model.config",
                       "retnet.model.RetNet", "retnet.RetNet", "retnet.generation.models")  # fmt: skip
    for path in sorted((PACKAGE / "baselines").glob("*.py")):
        bad = [n for n in _imports(path) if n.startswith(retnet_specific)]
        assert not bad, f"baselines/{path.name} imports RetNet's own classes {bad}"
    assert "retnet.generation.generate" in _imports(PACKAGE / "generation" / "mixin.py")
