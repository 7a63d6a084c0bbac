"""The CPU ``tiny`` comparison reads only the small corpora (no 1.2 GB Linux source download)."""

from pathlib import Path

from retnet.compare import load_compare_config

TINY_YAML = Path(__file__).parents[2] / "configs" / "compare" / "tiny.yaml"

SMALL_CORPORA = {"shakespeare", "sotu", "python-docs"}  # each about 5-11 MB (retnet data list)


def test_tiny_preset_and_yaml_need_only_the_small_corpora():
    for config in (load_compare_config("tiny"), load_compare_config("small", TINY_YAML)):
        needed = {config.data.corpus, *config.compare.out_of_domain}
        assert needed <= SMALL_CORPORA and config.compare.out_of_domain, needed
    assert "linux" in load_compare_config("small").compare.out_of_domain  # the larger presets keep it
