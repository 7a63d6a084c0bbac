"""Hugging Face directories: what each saved directory holds beyond the weights, and conversion both ways.

A directory written by :meth:`RetNetHFForCausalLM.save_pretrained` holds ``config.json`` (with ``auto_map``),
``model.safetensors``, ``generation_config.json``, two entry points for ``trust_remote_code``
(``configuration_retnet.py`` and ``modeling_retnet.py``: three lines each that import the classes from the installed
retnet package, so stock tools load the directory without importing retnet first, and the network code exists
once), a model card ``README.md`` and, when converted from a run, the tokenizer files of ``AutoTokenizer``.

:func:`native_to_hf` saves a native model as such a directory and :func:`convert_to_hf` does it for a retnet run,
checkpoint or model folder; :func:`load_hf_trained` and :func:`convert_from_hf` go back. Weights are copied bit for
bit both ways, in the dtype they were saved in.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from ..data.tokenizer import Tokenizer, save_tokenizer
from ..generation import RetNetForCausalLM
from ..training.artifacts import Trained, load_trained
from .configuration import CONFIG_MODULE, MODELING_MODULE, RetNetHFConfig
from .directory import is_hf_directory
from .tokenization import from_hf_tokenizer, to_hf_tokenizer

CARD_NAME = "README.md"
_ENTRY_POINTS = {
    CONFIG_MODULE: ("RetNetHFConfig", "retnet.hf.configuration"),
    MODELING_MODULE: ("RetNetHFForCausalLM", "retnet.hf.modeling"),
}


def entry_point_source(module: str) -> str:
    """The text of one ``trust_remote_code`` entry point (``configuration_retnet`` or ``modeling_retnet``)."""
    name, source = _ENTRY_POINTS[module]
    return (
        f'"""Entry point for transformers\' trust_remote_code: {name} from the installed retnet package '
        '(pip install \'retnet[hf]\')."""\n\n'
        f"from {source} import {name}\n\n"
        f'__all__ = ["{name}"]\n'
    )


def write_directory_extras(model, directory) -> None:
    """Write the ``trust_remote_code`` entry points and the model card into a saved directory."""
    directory = Path(directory)
    for module in _ENTRY_POINTS:
        (directory / f"{module}.py").write_text(entry_point_source(module))
    (directory / CARD_NAME).write_text(model_card(model))


def model_card(model) -> str:
    """A ``README.md`` for a saved directory: the architecture, how it was trained (when known) and its
    evaluation numbers (when recorded)."""
    config: RetNetHFConfig = model.config
    native = config.to_retnet_config()
    params = model.retnet.num_parameters()
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [retnet, retentive-network]",
        "---",
        "",
        "# RetNet language model",
        "",
        "A Retentive Network (Sun et al. 2023, arXiv 2307.08621) saved by the `retnet` package. Load it with",
        "`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)` (needs `pip install 'retnet[hf]'`).",
        "",
        "## Configuration",
        "",
        "| field | value |",
        "|---|---|",
        f"| parameters | {params:,} |",
    ]
    for name in ("flavour", "num_hidden_layers", "hidden_size", "num_heads", "value_dim", "ffn_dim", "vocab_size"):
        lines.append(f"| {name} | {getattr(native, name)} |")
    lines.append(f"| q/k head dim K, value head dim V | {native.head_dim}, {native.head_value_dim} |")
    lines.append(f"| tied embeddings | {native.tie_word_embeddings} |")
    training = getattr(config, "retnet_training", None) or {}
    lines += ["", "## Training", ""]
    if training.get("data") or training.get("tokens") is not None:
        for key, label in (("data", "data"), ("tokenizer", "tokenizer"), ("steps", "steps"), ("tokens", "tokens")):
            if training.get(key) is not None:
                value = f"{training[key]:,}" if isinstance(training[key], int) else training[key]
                lines.append(f"- {label}: {value}")
    else:
        lines.append("Not recorded.")
    evaluation = training.get("evaluation") or {}
    lines += ["", "## Evaluation", ""]
    if evaluation:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4g} |" for key, value in evaluation.items()]
    else:
        lines.append("No evaluation numbers recorded.")
    return "\n".join(lines) + "\n"


def training_summary(source: Path) -> dict:
    """What a run recorded about its training, for the model card: data, tokenizer, steps, tokens, last validation.

    Looks in ``source`` (a run, checkpoint or exported-model folder) and up to two folders above it (a checkpoint
    sits in ``<run>/checkpoints/``, an export in ``<run>/model``); keys without a record are left out.
    """
    source = Path(source).resolve()
    folders = [source, source.parent, source.parent.parent]

    def first(name: str) -> Path | None:
        return next((f / name for f in folders if (f / name).is_file()), None)

    summary: dict = {}
    config = first("train_config.yaml")
    if config is not None:
        data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
        if data.get("corpus") or data.get("dataset"):
            summary["data"] = data.get("dataset") or data.get("corpus")
        if data.get("tokenizer"):
            summary["tokenizer"] = data["tokenizer"]
    trainer = first("trainer.json")
    if trainer is None:  # an exported model: the run's latest checkpoint knows the step and tokens
        runs = [f for f in folders if (f / "checkpoints").is_dir()]
        steps = sorted((runs[0] / "checkpoints").glob("step_*/trainer.json")) if runs else []
        trainer = steps[-1] if steps else None
    if trainer is not None:
        state = json.loads(trainer.read_text())
        summary.update({k: state[v] for k, v in (("steps", "step"), ("tokens", "tokens_seen")) if v in state})
    metrics = first("metrics.jsonl")
    if metrics is not None:
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        val = [r for r in records if r.get("kind") == "val"]
        if val:
            last = val[-1]
            summary["evaluation"] = {
                f"validation {k} (step {last['step']})": float(v)
                for k, v in last.items()
                if k not in ("kind", "step") and isinstance(v, (int, float))
            }
    return summary


def native_to_hf(model: RetNetForCausalLM, directory, *, tokenizer: Tokenizer | None = None, training=None):
    """Save a native model as a Hugging Face directory (weights bit for bit) and return the wrapped model.

    Args:
        model: the native model (its parameters are shared by the returned wrapper).
        directory: the output folder.
        tokenizer: also save it as ``PreTrainedTokenizerFast`` files, and make its separator the end-of-sequence
            and padding id of ``generation_config.json``.
        training: the model card's training record (:func:`training_summary`).
    """
    from .modeling import RetNetHFForCausalLM

    hf = RetNetHFForCausalLM.from_native(model)
    if training:
        hf.config.retnet_training = training
    if tokenizer is not None:
        hf.generation_config.eos_token_id = tokenizer.sep_id
        hf.generation_config.pad_token_id = tokenizer.sep_id
    hf.save_pretrained(directory)
    if tokenizer is not None:
        to_hf_tokenizer(tokenizer).save_pretrained(directory)
    return hf


def convert_to_hf(
    source, directory, *, trust_checkpoint: bool = False, allow_unverified: bool = False
) -> RetNetForCausalLM:
    """``retnet convert hf``: a retnet run, checkpoint or model folder to a Hugging Face directory.

    Raises:
        FileNotFoundError / ValueError: as :func:`retnet.training.artifacts.load_trained`; ValueError: ``source`` is
            a Hugging Face directory already.
    """
    if is_hf_directory(source):
        raise ValueError(f"{source} is a transformers directory already (to a retnet model folder: --to native)")
    trained = load_trained(source, trust_checkpoint=trust_checkpoint, allow_unverified=allow_unverified)
    native_to_hf(trained.model, directory, tokenizer=trained.tokenizer, training=training_summary(trained.source))
    return trained.model


def load_hf_trained(directory, device: torch.device | str = "cpu", *, require_tokenizer: bool = True) -> Trained:
    """The native model and retnet tokenizer of a Hugging Face directory (what :func:`load_trained` returns for one).

    The tokenizer is read from the directory, else from the folder above it (a ``Trainer`` checkpoint inside its
    output folder).

    Args:
        directory: the Hugging Face directory.
        device: where to put the model.
        require_tokenizer: False returns ``tokenizer=None`` when there are no tokenizer files.

    Raises:
        FileNotFoundError: not a RetNet Hugging Face directory, or (with ``require_tokenizer``) no tokenizer files.
        ValueError: a tokenizer whose size differs from the model's vocabulary.
    """
    from transformers import PreTrainedTokenizerFast

    from .modeling import RetNetHFForCausalLM

    directory = Path(directory)
    if not is_hf_directory(directory):
        raise FileNotFoundError(f"{directory} is not a RetNet Hugging Face directory (config.json, model_type retnet)")
    tok_dir = next((d for d in (directory, directory.parent) if (d / "tokenizer.json").is_file()), None)
    if tok_dir is None and require_tokenizer:
        raise FileNotFoundError(f"no tokenizer.json in {directory} or its parent")
    model = RetNetHFForCausalLM.from_pretrained(str(directory)).retnet
    tokenizer = None
    if tok_dir is not None:
        # The fast-tokenizer class itself, not AutoTokenizer: that would read config.json and ask about remote code.
        tokenizer = from_hf_tokenizer(PreTrainedTokenizerFast.from_pretrained(str(tok_dir)))
        if tokenizer.vocab_size != model.config.vocab_size:
            raise ValueError(
                f"tokenizer in {tok_dir} has {tokenizer.vocab_size} tokens, the model {model.config.vocab_size}"
            )
    return Trained(model.to(device).eval(), tokenizer, directory)


def convert_from_hf(source, directory) -> RetNetForCausalLM:
    """``retnet convert native``: a Hugging Face directory to a retnet model folder (``save_pretrained`` layout with
    ``tokenizer/`` inside), which ``retnet generate`` / ``retnet eval`` and ``RetNetForCausalLM.from_pretrained``
    read.

    A directory without tokenizer files gives a model folder without ``tokenizer/``.

    Raises:
        FileNotFoundError / ValueError: as :func:`load_hf_trained`.
    """
    trained = load_hf_trained(source, require_tokenizer=False)
    directory = Path(directory)
    trained.model.save_pretrained(directory)
    if trained.tokenizer is not None:
        save_tokenizer(trained.tokenizer, directory / "tokenizer")
    return trained.model


__all__ = [
    "convert_from_hf",
    "convert_to_hf",
    "entry_point_source",
    "load_hf_trained",
    "model_card",
    "native_to_hf",
    "training_summary",
    "write_directory_extras",
]
