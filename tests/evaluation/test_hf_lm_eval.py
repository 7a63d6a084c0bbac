"""lm-eval's own ``hf`` model on a directory written by ``retnet convert hf`` (loaded with ``trust_remote_code``, no
network): the same log-likelihoods and accuracy as lm-eval's ``retnet`` model on that directory and as
``retnet eval --tasks``, on the local YAML task of ``test_lm_eval.py``; the same rolling log-likelihoods and greedy
``generate_until`` text."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from lm_eval import simple_evaluate  # noqa: E402

from retnet.cli.__main__ import main as retnet_main  # noqa: E402
from retnet.evaluation import evaluate_task_files, lm_eval_cli  # noqa: E402
from retnet.evaluation.lm_eval_adapter import RetNetLM  # noqa: E402
from retnet.hf import convert_to_hf  # noqa: E402

from .conftest import DOCS, hand_accuracy, write_jsonl  # noqa: E402
from .test_lm_eval import TASK_YAML, LocalTasksOnly  # noqa: E402


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-eval-hf-task")
    data = write_jsonl(root / "copa.jsonl", DOCS)
    (root / "copa.yaml").write_text(TASK_YAML.format(data=data, cache=root / "hf-cache"))
    return root


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, model_dir):
    """The exported model of ``model_dir`` as a transformers directory, tokenizer files included."""
    directory = tmp_path_factory.mktemp("lm-eval-hf") / "retnet-lm-eval-hf"
    convert_to_hf(model_dir, directory)
    return directory


def _logged_logprobs(samples: list[dict]) -> dict[int, list[float]]:
    """Document index -> the log-likelihood of each of its choices, from lm-eval's logged samples (the samples file
    holds them as strings)."""
    return {s["doc_id"]: [float(resp[0]) for resp in s["filtered_resps"]] for s in samples}


def test_hf_model_equals_the_retnet_model_and_retnet_eval(
    monkeypatch, capsys, tmp_path, task_dir, task_files, hf_dir, model
):
    monkeypatch.setattr("lm_eval.tasks.TaskManager", LocalTasksOnly)
    # lm-eval's command line, as `lm_eval run --model hf` runs it; the retnet model is registered in this process too.
    lm_eval_cli.main(
        [
            "run", "--model", "hf", "--model_args", f"pretrained={hf_dir},trust_remote_code=True",
            "--tasks", "copa", "--include_path", str(task_dir), "--batch_size", "4", "--device", "cpu",
            "--log_samples", "--output_path", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    (results_path,) = (tmp_path / "out").rglob("results_*.json")
    (samples_path,) = (tmp_path / "out").rglob("samples_copa_*.jsonl")
    hf_results = json.loads(results_path.read_text())["results"]["copa"]
    hf_lls = _logged_logprobs([json.loads(line) for line in samples_path.read_text().splitlines()])
    capsys.readouterr()

    # lm-eval's retnet model on the same transformers directory, through lm-eval's Python API.
    out = simple_evaluate(
        model="retnet",
        model_args=f"pretrained={hf_dir},form=chunkwise,batch_size=3",
        tasks=["copa"],
        task_manager=LocalTasksOnly(include_path=str(task_dir)),
        log_samples=True,
    )
    retnet_lls = _logged_logprobs(out["samples"]["copa"])
    # retnet eval --tasks on the same documents (a JSON Lines task file of DOCS), the model read from that directory.
    report = evaluate_task_files(str(hf_dir), [task_files["copa"]], form="parallel", batch_size=5)
    (task,) = report.tasks

    assert sorted(hf_lls) == sorted(retnet_lls) == list(range(len(DOCS)))
    for i, lls in enumerate(task.logprobs):
        assert hf_lls[i] == pytest.approx(lls, rel=1e-5, abs=1e-5)
        assert retnet_lls[i] == pytest.approx(lls, rel=1e-5, abs=1e-5)
    expected = hand_accuracy(model, [d["context"] for d in DOCS], DOCS)
    assert expected["acc"] != expected["acc_norm"]  # the two metrics are told apart
    for results in (hf_results, out["results"]["copa"]):
        assert results["acc,none"] == pytest.approx(expected["acc"], abs=1e-12)
        assert results["acc_norm,none"] == pytest.approx(expected["acc_norm"], abs=1e-12)
    assert task.metrics["acc"] == pytest.approx(expected["acc"], abs=1e-12)
    assert task.metrics["acc_norm"] == pytest.approx(expected["acc_norm"], abs=1e-12)

    # The Table 3 layout reads the hf model's results file as it reads the retnet model's.
    assert retnet_main(["eval", "--table3", "--lm-eval-results", str(results_path)]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    assert row.split("|")[4].strip() == f"{100 * expected['acc']:.1f}"


def test_hf_model_rolling_log_likelihoods_and_greedy_text_equal_the_retnet_model(hf_dir):
    from lm_eval.models.huggingface import HFLM

    hf = HFLM(pretrained=str(hf_dir), trust_remote_code=True, batch_size=2, device="cpu")
    native = RetNetLM(str(hf_dir), batch_size=2)
    texts = [SimpleNamespace(args=(t,)) for t in ("Sixteen bytes...", "The quick brown fox jumps over the lazy dog.")]
    expected = native.loglikelihood_rolling(texts, disable_tqdm=True)
    assert hf.loglikelihood_rolling(texts, disable_tqdm=True) == pytest.approx(expected, rel=1e-5)
    gen = {"until": ["\n\n"], "max_gen_toks": 8, "do_sample": False}
    prompts = [SimpleNamespace(args=(p, dict(gen))) for p in ("Once upon a time", "The cat")]
    text = native.generate_until(prompts, disable_tqdm=True)
    assert all(text) and hf.generate_until(prompts, disable_tqdm=True) == text
