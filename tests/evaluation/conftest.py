"""Fixtures: a small random byte-level model saved as an exported model folder, and small local tasks.

Accuracies are checked against log-likelihoods computed here by hand, from one parallel forward pass of the
unpadded sequence, independently of the batched scoring under test.
"""

from __future__ import annotations

import json

import pytest
import torch

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.data.tokenizer import ByteTokenizer

# Seven questions; choices of unequal lengths (so acc and acc_norm can differ), one non-ASCII choice.
DOCS = [
    {"context": "The sky is", "choices": ["blue", "a very green thing", "loud"], "gold": 0},
    {"context": "Two plus two equals", "choices": ["four", "fish"], "gold": 0},
    {"context": "She opened the door because", "choices": ["someone knocked.", "it rained.", "no"], "gold": 1},
    {"context": "Water boils at", "choices": ["100 degrees", "minus ten", "noon", "café"], "gold": 0},
    {"context": "Q: colour of grass?\nA:", "choices": ["green", "purple and orange"], "gold": 1},
    {"context": "The cat sat on the", "choices": ["mat", "moon", "idea"], "gold": 2},
    {"context": "Rain falls from", "choices": ["clouds", "stones"], "gold": 0},
]
POOL = [
    {"context": "Fire is", "choices": ["hot", "cold"], "gold": 0, "split": "fewshot"},
    {"context": "Snow is", "choices": ["white", "black"], "gold": 0, "split": "fewshot"},
    {"context": "Night is", "choices": ["dark", "bright"], "gold": 0, "split": "fewshot"},
]


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    torch.manual_seed(1235)  # a model whose acc and acc_norm differ on DOCS
    model = RetNetForCausalLM(RetNetConfig.from_preset("debug", vocab_size=257, chunk_size=4))
    root = tmp_path_factory.mktemp("eval-model")
    model.save_pretrained(root)
    ByteTokenizer().save(root / "tokenizer")
    return root


@pytest.fixture(scope="session")
def model(model_dir):
    from retnet.training.artifacts import load_trained

    return load_trained(model_dir).model


@pytest.fixture(scope="session")
def task_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-tasks")
    return {
        "copa": write_jsonl(root / "copa.jsonl", DOCS),
        "piqa": write_jsonl(root / "piqa.jsonl", [{"task": {"name": "piqa"}}, *DOCS[:4], *POOL]),
    }


@torch.no_grad()
def hand_logprob(model, context: str, continuation: str) -> float:
    """log p(continuation | context) for the byte tokenizer: one parallel pass over the unpadded sequence."""
    ids = list((context + continuation).encode("utf-8"))
    n = len(continuation.encode("utf-8"))
    logits = model(torch.tensor([ids[:-1]]), form="parallel").logits[0].double()  # (T, vocab)
    logprobs = torch.log_softmax(logits, dim=-1)[-n:]
    return float(sum(logprobs[i, t] for i, t in enumerate(ids[-n:])))


def hand_accuracy(model, prompts: list[str], docs: list[dict], delimiter: str = " ") -> dict[str, float]:
    """acc and acc_norm (by characters) from :func:`hand_logprob`, first choice on ties."""
    acc = acc_norm = 0
    for prompt, doc in zip(prompts, docs):
        lls = [hand_logprob(model, prompt, delimiter + c) for c in doc["choices"]]
        norm = [ll / len(c) for ll, c in zip(lls, doc["choices"])]
        acc += lls.index(max(lls)) == doc["gold"]
        acc_norm += norm.index(max(norm)) == doc["gold"]
    return {"acc": acc / len(docs), "acc_norm": acc_norm / len(docs)}
