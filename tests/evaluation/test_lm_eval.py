"""The lm-evaluation-harness model ``retnet``: accuracy on a local lm-eval YAML task equals the hand computation
(zero-shot through the command line, one-shot through the Python API with logged prompts), the rolling
log-likelihood equals the perplexity path's sum, and ``generate_until`` stops at its ``until`` strings."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from retnet.cli.__main__ import main as retnet_main  # noqa: E402
from retnet.evaluation import lm_eval_cli  # noqa: E402
from retnet.evaluation.lm_eval_adapter import RetNetLM, cut_at_stops  # noqa: E402
from retnet.training.evaluate import evaluate  # noqa: E402

from .conftest import DOCS, hand_accuracy, hand_logprob, write_jsonl  # noqa: E402

TASK_YAML = """task: copa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """An lm-eval task folder: one YAML task named ``copa`` over a local JSON Lines file of :data:`DOCS`."""
    root = tmp_path_factory.mktemp("lm-eval-task")
    data = write_jsonl(root / "copa.jsonl", DOCS)
    (root / "copa.yaml").write_text(TASK_YAML.format(data=data, cache=root / "hf-cache"))
    return root


class LocalTasksOnly(TaskManager):
    """lm-eval's TaskManager without its built-in task index (thousands of YAML files, about 40 s to read here)."""

    def __init__(self, *args, **kwargs):
        kwargs["include_defaults"] = False
        super().__init__(*args, **kwargs)


def test_command_line_zero_shot_accuracy_equals_the_hand_computation(
    monkeypatch, capsys, tmp_path, task_dir, model_dir, model
):
    monkeypatch.setattr("lm_eval.tasks.TaskManager", LocalTasksOnly)
    lm_eval_cli.main(
        [
            "run", "--model", "retnet", "--model_args", f"pretrained={model_dir},form=chunkwise,chunk_size=3",
            "--tasks", "copa", "--include_path", str(task_dir), "--batch_size", "4",
            "--output_path", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    (path,) = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(path.read_text())["results"]["copa"]
    expected = hand_accuracy(model, [d["context"] for d in DOCS], DOCS)
    assert results["acc,none"] == pytest.approx(expected["acc"], abs=1e-12)
    assert results["acc_norm,none"] == pytest.approx(expected["acc_norm"], abs=1e-12)
    capsys.readouterr()
    # The Table 3 layout reads the file lm-eval wrote.
    assert retnet_main(["eval", "--table3", "--lm-eval-results", str(path)]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    assert row.split("|")[4].strip() == f"{100 * expected['acc']:.1f}"


def test_one_shot_scores_equal_the_hand_computation_of_the_logged_prompts(task_dir, model_dir, model):
    out = simple_evaluate(
        model=RetNetLM(str(model_dir), form="parallel", batch_size=5),
        tasks=["copa"],
        task_manager=LocalTasksOnly(include_path=str(task_dir)),
        num_fewshot=1,
        log_samples=True,
    )
    samples = out["samples"]["copa"]
    assert len(samples) == len(DOCS)
    correct = 0
    for sample in samples:
        contexts = {context for context, _ in sample["arguments"]}
        assert len(contexts) == 1 and next(iter(contexts)).count("\n\n") == 1  # one solved example, then the question
        lls = [hand_logprob(model, context, continuation) for context, continuation in sample["arguments"]]
        assert [ll for ll, _ in sample["filtered_resps"]] == pytest.approx(lls, rel=1e-5, abs=1e-5)
        assert sample["acc"] == float(int(np.argmax(lls)) == sample["target"])
        correct += sample["acc"]
    assert out["results"]["copa"]["acc,none"] == pytest.approx(correct / len(DOCS), abs=1e-12)


def test_loglikelihood_rolling_equals_the_perplexity_sum(model_dir, model):
    lm = RetNetLM(str(model_dir), max_length=16, batch_size=3)
    texts = ["The quick brown fox jumps over the lazy dog. Yes", "Sixteen bytes..."]
    assert [len(t) for t in texts] == [48, 16]  # whole windows of 16, as the perplexity path takes them
    rolling = lm.loglikelihood_rolling([SimpleNamespace(args=(t,)) for t in texts], disable_tqdm=True)
    sep = lm.tokenizer.sep_id
    for text, total in zip(texts, rolling):
        stream = np.array([sep, *text.encode()], dtype=np.int64)  # the document predicted from the separator
        res = evaluate(
            model,
            stream,
            seq_len=16,
            batch_size=2,
            token_bytes=lm.tokenizer.token_bytes(),
            sep_id=sep,
            reset_at_boundaries=False,
        )
        assert res.tokens == len(text)
        assert total == pytest.approx(-res.loss * res.tokens, rel=1e-5)


def test_generate_until_stops_at_the_until_strings(model_dir, model):
    lm = RetNetLM(str(model_dir), batch_size=2)
    prompts = ["Once upon a time", "The cat"]
    greedy, greedy_ids = [], []
    for p in prompts:
        ids = model.generate(torch.tensor([list(p.encode())]), max_new_tokens=40, do_sample=False)[0, len(p) :]
        greedy_ids.append(ids.tolist())
        greedy.append(lm.tokenizer.decode(ids.tolist()))
    # Stop at the first printable ASCII character from the third on (a whole character of the greedy text).
    stops = [next(c for c in text[2:] if c.isascii() and c.isprintable() and not c.isspace()) for text in greedy]
    requests = [
        SimpleNamespace(args=(prompts[0], {"until": ["\x00never", stops[0]], "max_gen_toks": 40})),
        SimpleNamespace(args=(prompts[1], {"until": stops[1], "max_gen_toks": 40})),
        SimpleNamespace(args=(prompts[0], {"until": [], "max_gen_toks": 5})),
    ]
    calls = []
    hook = lm.model.lm_head.register_forward_hook(lambda *_: calls.append(1))
    try:
        first = lm.generate_until(requests[:1], disable_tqdm=True)
    finally:
        hook.remove()
    assert 0 < len(calls) < 40  # decoding stopped at the until string, not at max_gen_toks
    out = lm.generate_until(requests, disable_tqdm=True)
    assert out[0] == first[0]
    assert out[0] == greedy[0][: greedy[0].index(stops[0])] and stops[0] not in out[0]
    assert out[1] == greedy[1][: greedy[1].index(stops[1])] and stops[1] not in out[1]
    assert out[2] == lm.tokenizer.decode(greedy_ids[0][:5])  # no until: max_gen_toks tokens
    with pytest.raises(ValueError, match="unknown generation argument"):
        lm.generate_until([SimpleNamespace(args=("a", {"num_beams": 2}))], disable_tqdm=True)


def test_cut_at_stops_takes_the_earliest():
    assert cut_at_stops("abc\n\nQ: x", ["Q:", "\n\n"]) == "abc"
    assert cut_at_stops("abc", ["z", ""]) == "abc"


def test_model_arguments_are_checked(model_dir):
    with pytest.raises(ValueError, match="form must be one of"):
        RetNetLM(str(model_dir), form="fast")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        RetNetLM(str(model_dir), batch_size="0")
    assert RetNetLM(str(model_dir), batch_size="auto", max_batch_size="7").batch_size == 7
    assert RetNetLM(str(model_dir), batch_size="auto").batch_size == 64
