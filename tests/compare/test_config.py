"""The comparison config: presets and configs/compare/*.yaml in the ``retnet train`` layout, one entry's TrainConfig."""

import json
from pathlib import Path

import pytest

from retnet.compare import CompareConfig, load_compare_config
from retnet.compare.config import save_config
from retnet.compare.presets import COMPARE_PRESETS
from retnet.training import TrainConfig, load_config
from retnet.training.build import model_config
from retnet.utils import config_loader

CONFIGS = Path(__file__).parents[2] / "configs" / "compare"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_repo_compare_configs_load_and_restate_their_preset(path):
    config = load_compare_config("tiny", path)
    assert isinstance(config, CompareConfig) and config.compare.preset == path.stem
    assert config == load_compare_config(path.stem)


def test_every_preset_has_a_yaml_file():
    assert sorted(COMPARE_PRESETS) == sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def test_preset_sizes_are_the_documented_ones():
    tiny, small, paper = (load_compare_config(name) for name in ("tiny", "small", "200m"))
    assert (tiny.tokens, small.tokens, paper.tokens) == (512_000, 4_194_304, 5_000_000_000 // 524_288 * 524_288)
    retnet = model_config(paper.model, 32000)
    assert (retnet.hidden_size, retnet.num_hidden_layers, retnet.num_heads, retnet.value_dim, retnet.ffn_dim) == (
        1024, 16, 4, 2048, 2048
    )  # fmt: skip
    assert retnet.flavour == "paper" and paper.micro_batch_size == 8 and paper.precision == "bf16"
    tiny_retnet = model_config(tiny.model, 256)
    assert (tiny_retnet.hidden_size, tiny_retnet.value_dim, tiny_retnet.ffn_dim) == (128, 256, 256)


def test_overrides_use_the_train_syntax_and_the_yaml_preset_wins(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("compare: {preset: small, archs: [retnet, h3]}\noptim: {lr: 1.0e-3}\n")
    config = load_compare_config("tiny", path, ["--optim.lr=5e-4", "--steps", "3", "--compare.out_of_domain=a,b"])
    assert config.compare.preset == "small" and config.compare.out_dir == "runs/compare-small"
    assert config.optim.lr == 5e-4 and config.steps == 3 and config.batch_size == 64
    assert config.compare.archs == ["retnet", "h3"] and config.compare.out_of_domain == ["a", "b"]
    assert load_compare_config("tiny", None, {"compare": {"preset": "200m"}}).compare.preset == "200m"


def test_entry_train_config_is_the_recipe_with_its_folder_and_dataset(tmp_path):
    config = load_compare_config("tiny", None, ["--optim.lr=1e-3", "--micro_batch_size=4"])
    entry = config.train_config(tmp_path / "h3" / "train", tmp_path / "data")
    assert type(entry) is TrainConfig
    assert entry.run_dir == str(tmp_path / "h3" / "train") and entry.name == "h3"
    assert entry.data.dataset == str(tmp_path / "data") and config.data.dataset == ""
    assert entry.optim == config.optim and entry.micro_batch_size == 4 and entry.steps == config.steps
    assert entry.data.reset_at_boundaries is False and entry.eval_every == 0 and entry.sample_tokens == 0
    entry.save(tmp_path / "train_config.yaml")  # what the trainer writes; `retnet train` reads it back
    assert load_config([tmp_path / "train_config.yaml"]) == entry


def test_saved_config_round_trips(tmp_path):
    config = load_compare_config("small", None, ["--compare.archs=[retnet]", "--baseline.hyena_order=3"])
    save_config(config, tmp_path / "c.json")
    assert config_loader.build(CompareConfig, json.loads((tmp_path / "c.json").read_text())) == config
