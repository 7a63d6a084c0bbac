"""``retnet eval --tasks`` in the library: accuracy equals the hand computation, in every form and batch size."""

from __future__ import annotations

import pytest
import torch

from retnet.data.tokenizer import ByteTokenizer
from retnet.evaluation import (
    build_context,
    encode_pair,
    evaluate_task,
    evaluate_task_files,
    load_task,
    score_texts,
    score_tokens,
)

from .conftest import DOCS, hand_accuracy, hand_logprob


def test_zero_shot_accuracy_equals_the_hand_computation(model_dir, model, task_files):
    report = evaluate_task_files(str(model_dir), [task_files["copa"]], batch_size=4)
    (result,) = report.tasks
    expected = hand_accuracy(model, [d["context"] for d in DOCS], DOCS)
    assert 0 < expected["acc"] < 1 and expected["acc"] != expected["acc_norm"]  # the task separates the metrics
    assert result.metrics["acc"] == pytest.approx(expected["acc"], abs=1e-12)
    assert result.metrics["acc_norm"] == pytest.approx(expected["acc_norm"], abs=1e-12)
    assert (result.name, result.num_docs, result.num_fewshot) == ("copa", len(DOCS), 0)
    for doc, lls in zip(DOCS, result.logprobs):
        hand = [hand_logprob(model, doc["context"], " " + c) for c in doc["choices"]]
        assert lls == pytest.approx(hand, rel=1e-5, abs=1e-5)


def test_k_shot_accuracy_equals_the_hand_computation_with_the_pool(model_dir, model, task_files):
    task = load_task(task_files["piqa"])
    report = evaluate_task_files(str(model_dir), [task_files["piqa"]], num_fewshot=2, seed=3, batch_size=3)
    prompts = [build_context(task, i, 2, seed=3) for i in range(len(task.docs))]
    assert all(p.count("\n\n") == 2 and p.endswith(d["context"]) for p, d in zip(prompts, DOCS[:4]))
    expected = hand_accuracy(model, prompts, DOCS[:4])
    assert report.tasks[0].metrics["acc"] == pytest.approx(expected["acc"], abs=1e-12)
    assert report.tasks[0].metrics["acc_norm"] == pytest.approx(expected["acc_norm"], abs=1e-12)
    assert report.tasks[0].num_fewshot == 2


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_every_form_and_batch_size_gives_the_same_scores(model, task_files, form):
    task = load_task(task_files["copa"])
    tok = ByteTokenizer()
    one = evaluate_task(model, tok, task, form="parallel", batch_size=1)
    batched = evaluate_task(model, tok, task, form=form, chunk_size=3, batch_size=5)
    assert batched.metrics == one.metrics
    for a, b in zip(batched.logprobs, one.logprobs):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5)


def test_scores_are_greedy_flags_and_counts_of_the_continuation(model):
    context = "Rain falls from"
    ids = list(context.encode())
    with torch.no_grad():
        last = torch.log_softmax(model(torch.tensor([ids]), form="parallel").logits[0, -1].double(), -1)  # (vocab,)
    greedy = [int(last.argmax())]
    other = [(greedy[0] + 1) % 256]
    s_greedy, s_other = score_tokens(model, [(ids, greedy), (ids, other + greedy)])
    assert s_greedy.is_greedy and not s_other.is_greedy
    assert (s_greedy.num_tokens, s_other.num_tokens) == (1, 2)
    assert s_greedy.logprob == pytest.approx(float(last[greedy[0]]), abs=1e-5)


def test_encode_pair_moves_trailing_space_and_uses_the_separator_for_an_empty_context():
    tok = ByteTokenizer()
    assert encode_pair(tok, "ab ", "c") == ([97, 98], [32, 99])
    assert encode_pair(tok, "", "xy") == ([tok.sep_id], [120, 121])
    with pytest.raises(ValueError, match="continuation must be a non-empty string"):
        encode_pair(tok, "a", "")


def test_max_length_drops_the_oldest_context_tokens(model):
    context, continuation = "The cat sat on the", " mat"
    full = score_texts(model, ByteTokenizer(), [(context[-6:], continuation)])[0]
    cut = score_texts(model, ByteTokenizer(), [(context, continuation)], max_length=6 + len(continuation) - 1)[0]
    assert cut.logprob == pytest.approx(full.logprob, abs=1e-5)
    with pytest.raises(ValueError, match="does not fit max_length 2"):
        score_tokens(model, [([1], [2, 3, 4])], max_length=2)


@pytest.mark.parametrize(
    "kwargs, pairs, message",
    [
        ({"form": "fast"}, [([1], [2])], "form must be one of"),
        ({"batch_size": 0}, [([1], [2])], "batch_size must be >= 1"),
        ({}, [([], [2])], "a context needs at least one token"),
        ({}, [([1], [])], "a continuation needs at least one token"),
        ({}, [([1], [999])], "token id 999 outside the model's vocabulary"),
    ],
)
def test_bad_scoring_input_fails_clearly(model, kwargs, pairs, message):
    with pytest.raises(ValueError, match=message):
        score_tokens(model, pairs, **kwargs)


def test_task_files_with_one_name_fail_before_loading_the_model(tmp_path, task_files):
    with pytest.raises(ValueError, match="share the name"):
        evaluate_task_files(str(tmp_path / "no-model"), [task_files["copa"], task_files["copa"]])
    with pytest.raises(ValueError, match="num_fewshot 9"):
        evaluate_task_files(str(tmp_path / "no-model"), [task_files["copa"]], num_fewshot=9)
