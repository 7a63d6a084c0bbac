"""The JSONL task format, few-shot prompts and the metrics, on hand-made inputs."""

from __future__ import annotations

import math

import pytest

from retnet.evaluation import build_context, build_requests, document_metrics, load_task, mean_and_stderr
from retnet.evaluation.tasks import Doc, Task

from .conftest import DOCS, POOL, write_jsonl


def test_load_task_reads_header_docs_and_fewshot_pool(tmp_path):
    header = {"task": {"name": "mine", "target_delimiter": ": ", "fewshot_delimiter": "\n"}}
    task = load_task(write_jsonl(tmp_path / "file.jsonl", [header, DOCS[0], POOL[0], DOCS[1]]))
    assert task.name == "mine"
    assert (task.target_delimiter, task.fewshot_delimiter) == (": ", "\n")
    assert task.docs == (
        Doc("The sky is", ("blue", "a very green thing", "loud"), 0),
        Doc("Two plus two equals", ("four", "fish"), 0),
    )
    assert task.fewshot_pool == (Doc("Fire is", ("hot", "cold"), 0),)
    plain = load_task(write_jsonl(tmp_path / "copa.jsonl", DOCS))
    assert plain.name == "copa" and len(plain.docs) == len(DOCS) and plain.target_delimiter == " "


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"context": "a", "choices": ["x", "y"], "gold": 2}'], "copa.jsonl:1: gold must be an index"),
        (['{"context": "a", "choices": ["x"], "gold": 0}'], "at least two strings"),
        (['{"context": "a", "choices": ["x", "y"]}'], "missing key(s) ['gold']"),
        (['{"context": "a", "choices": ["x", "y"], "gold": 0, "label": 1}'], "unknown key(s) ['label']"),
        (['{"context": "a", "choices": ["x", "y"], "gold": true}'], "gold must be an index"),
        (['{"context": 3, "choices": ["x", "y"], "gold": 0}'], "context must be a string"),
        (['{"context": "a", "choices": ["x", "y"], "gold": 0, "split": "dev"}'], "split must be one of"),
        (['{"context": "a", "choices": ["x", "y"], "gold": 0}', "", "{oops"], "copa.jsonl:3: not valid JSON"),
        (['{"context": "a", "choices": ["x", "y"], "gold": 0}', '{"task": {}}'], "header must be the first line"),
        (['{"task": {"name": "t", "delim": " "}}'], "unknown header key(s) ['delim']"),
        (['{"context": "a", "choices": ["x", "y"], "gold": 0, "split": "fewshot"}'], "no document to evaluate"),
    ],
)
def test_malformed_task_files_fail_naming_the_line(tmp_path, lines, message):
    path = tmp_path / "copa.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as err:
        load_task(path)
    assert message in str(err.value)


def test_missing_task_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="task file not found"):
        load_task(tmp_path / "none.jsonl")


def _task(docs, pool=()):
    as_doc = lambda d: Doc(d["context"], tuple(d["choices"]), d["gold"])
    return Task("t", tuple(map(as_doc, docs)), tuple(map(as_doc, pool)))


def test_zero_shot_requests_are_context_and_delimited_choices():
    task = _task(DOCS[:2])
    reqs = build_requests(task)
    assert [(r.context, r.continuation, r.doc, r.choice) for r in reqs] == [
        ("The sky is", " blue", 0, 0),
        ("The sky is", " a very green thing", 0, 1),
        ("The sky is", " loud", 0, 2),
        ("Two plus two equals", " four", 1, 0),
        ("Two plus two equals", " fish", 1, 1),
    ]


def test_k_shot_prompt_is_seeded_excludes_the_question_and_uses_the_pool():
    task = _task(DOCS)
    solved = {f"{d['context']} {d['choices'][d['gold']]}" for d in DOCS}
    for i in range(len(DOCS)):
        prompt = build_context(task, i, num_fewshot=3, seed=5)
        *shots, question = prompt.split("\n\n")
        assert question == DOCS[i]["context"]
        assert len(shots) == len(set(shots)) == 3 and set(shots) <= solved
        assert f"{DOCS[i]['context']} {DOCS[i]['choices'][DOCS[i]['gold']]}" not in shots
        assert build_context(task, i, 3, seed=5) == prompt  # the draw depends on (seed, index) only
    seeds = {build_context(task, 0, 3, seed=s) for s in range(6)}
    assert len(seeds) > 1
    pooled = _task(DOCS[:2], POOL)
    shots = build_context(pooled, 1, num_fewshot=3, seed=0).split("\n\n")[:-1]
    assert sorted(shots) == ["Fire is hot", "Night is dark", "Snow is white"]


def test_too_many_shots_or_negative_shots_fail():
    with pytest.raises(ValueError, match="num_fewshot 7 is more than the 6"):
        build_requests(_task(DOCS), num_fewshot=7)
    with pytest.raises(ValueError, match="num_fewshot must be >= 0"):
        build_requests(_task(DOCS), num_fewshot=-1)


def test_document_metrics_acc_norm_by_characters_and_bytes():
    # ll / chars: -3/3 = -1.0 vs -4.4/4 = -1.1 -> choice 0; ll / bytes: -3/3 vs -4.4/5 = -0.88 -> choice 1.
    m = document_metrics([-3.0, -4.4], ["abc", "café"], gold=1)
    assert m == {"acc": 0, "acc_norm": 0, "acc_bytes": 1}
    assert document_metrics([-1.0, -1.0], ["a", "b"], gold=0)["acc"] == 1  # ties: the first choice
    with pytest.raises(ValueError, match="2 log-likelihoods for 3 choices"):
        document_metrics([-1.0, -2.0], ["a", "b", "c"], 0)


def test_standard_error_is_the_sample_standard_deviation_over_root_n():
    mean, err = mean_and_stderr([1, 0, 0, 1, 1])
    assert mean == 0.6
    assert err == pytest.approx(math.sqrt((3 * 0.4**2 + 2 * 0.6**2) / 4 / 5), rel=1e-12)
    assert mean_and_stderr([1]) == (1.0, None)
    with pytest.raises(ValueError):
        mean_and_stderr([])
