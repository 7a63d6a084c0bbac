"""``retnet eval``: --tasks with --json (the schema), text and Table 3 output, the progress bar, perplexity --json,
and one-line errors for options that do not go together."""

from __future__ import annotations

import json

import pytest

from retnet.cli.__main__ import main
from retnet.evaluation.table3 import TABLE3

from .conftest import DOCS, hand_accuracy

METRIC_KEYS = {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "acc_bytes", "acc_bytes_stderr"}


def _run(capsys, argv):
    assert main(argv) == 0
    return capsys.readouterr()


def test_tasks_json_schema_and_values(capsys, model_dir, model, task_files):
    argv = ["eval", str(model_dir), "--tasks", task_files["copa"], task_files["piqa"], "--form", "parallel"]
    out = _run(capsys, [*argv, "--json", "--batch-size", "5"])
    doc = json.loads(out.out)
    assert set(doc) == {"model", "form", "num_fewshot", "seed", "tasks"}
    assert (doc["model"], doc["form"], doc["num_fewshot"], doc["seed"]) == (str(model_dir), "parallel", 0, 0)
    assert list(doc["tasks"]) == ["copa", "piqa"]
    for name, n in (("copa", len(DOCS)), ("piqa", 4)):
        task = doc["tasks"][name]
        assert set(task) == {"path", "num_docs", "num_fewshot"} | METRIC_KEYS
        assert (task["path"], task["num_docs"], task["num_fewshot"]) == (task_files[name], n, 0)
        assert all(isinstance(task[k], float) for k in METRIC_KEYS)
    expected = hand_accuracy(model, [d["context"] for d in DOCS], DOCS)
    assert doc["tasks"]["copa"]["acc"] == pytest.approx(expected["acc"], abs=1e-12)
    assert doc["tasks"]["copa"]["acc_norm"] == pytest.approx(expected["acc_norm"], abs=1e-12)
    # The progress bar goes to stderr and counts every choice (7 docs of copa and 4 of piqa).
    choices = sum(len(d["choices"]) for d in DOCS) + sum(len(d["choices"]) for d in DOCS[:4])
    assert f"{choices}/{choices}" in out.err and "choices" in out.err
    quiet = _run(capsys, [*argv, "--no-progress"])
    assert quiet.err == ""
    lines = quiet.out.splitlines()
    assert lines[0].split() == ["task", "docs", "shots", "acc", "acc_norm"]
    copa = doc["tasks"]["copa"]
    assert lines[1].split() == [
        "copa", "7", "0", f"{copa['acc']:.4f}", "±", f"{copa['acc_stderr']:.4f}",
        f"{copa['acc_norm']:.4f}", "±", f"{copa['acc_norm_stderr']:.4f}",
    ]  # fmt: skip


def test_tasks_table3_layout(capsys, model_dir, task_files):
    argv = ["eval", str(model_dir), "--tasks", task_files["copa"], "--num-fewshot", "2", "--no-progress"]
    doc = json.loads(_run(capsys, [*argv, "--json", "--table3"]).out)
    assert doc["num_fewshot"] == 2 and doc["table3"] == {"COPA": doc["tasks"]["copa"]["acc"]}
    text = _run(capsys, [*argv, "--table3"]).out.splitlines()
    assert [c.strip() for c in text[0].strip("|").split("|")] == ["", *(c.heading for c in TABLE3), "Avg"]
    cells = [c.strip() for c in text[2].strip("|").split("|")]
    copa = f"{100 * doc['tasks']['copa']['acc']:.1f}"
    assert cells == [
        f"{model_dir} 2-shot",
        "–",
        "–",
        copa,
        "–",
        "–",
        "–",
        "–",
        f"{100 * doc['tasks']['copa']['acc']:.2f}*",
    ]


def test_table3_from_lm_eval_results(capsys, tmp_path):
    def results(shots, values):
        return {
            "results": {name: {"alias": name, "acc,none": v, "acc_stderr,none": 0.01} for name, v in values.items()}
            | {"hellaswag": {"acc,none": 0.5, "acc_norm,none": values["hellaswag"]}},
            "n-shot": {name: shots for name in values},
            "config": {"model": "retnet", "model_args": "pretrained=runs/a,form=chunkwise"},
        }

    names = ["hellaswag", "boolq", "copa", "piqa", "wsc273", "winogrande", "xstorycloze_en"]
    zero = dict(zip(names, [0.607, 0.622, 0.77, 0.754, 0.772, 0.581, 0.76]))
    four = dict(zip(names[:3], [0.605, 0.601, 0.78])) | {"lambada_openai": 0.3}
    (tmp_path / "zero.json").write_text(json.dumps(results(0, zero)))
    (tmp_path / "four.json").write_text(json.dumps(results(4, four)))
    argv = ["eval", "--table3", "--lm-eval-results", str(tmp_path / "zero.json"), str(tmp_path / "four.json")]
    assert _run(capsys, argv).out == (
        "|               |   HS | BoolQ | COPA | PIQA | Winograd | Winogrande |   SC |    Avg |\n"
        "|---------------|-----:|------:|-----:|-----:|---------:|-----------:|-----:|-------:|\n"
        "| runs/a 0-shot | 60.7 |  62.2 | 77.0 | 75.4 |     77.2 |       58.1 | 76.0 |  69.51 |\n"
        "| runs/a 4-shot | 60.5 |  60.1 | 78.0 |    – |        – |          – |    – | 66.20* |\n"
        "\n"
        "runs/a 4-shot: not in Table 3: lambada_openai\n"
        "* average over the tasks present\n"
        "HS: acc_norm; the others: acc (percent)\n"
    )
    doc = json.loads(_run(capsys, [*argv, "--json"]).out)
    assert doc["table3"]["runs/a 0-shot"]["Winograd"] == 0.772 and set(doc["table3"]["runs/a 4-shot"]) == {
        "HS",
        "BoolQ",
        "COPA",
    }


def test_perplexity_json_and_progress_bar(capsys, model_dir, tmp_path):
    text = tmp_path / "doc.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 4)
    argv = ["eval", str(model_dir), "--text", str(text), "--seq-len", "16", "--batch-size", "2"]
    out = _run(capsys, [*argv, "--json"])
    doc = json.loads(out.out)
    assert set(doc) == {"model", "form", "loss", "perplexity", "bits_per_byte", "tokens", "bytes"}
    assert doc["tokens"] == 176 and doc["bytes"] == 176 and doc["form"] == "chunkwise"  # 11 windows of 16
    assert doc["perplexity"] == pytest.approx(2.718281828459045 ** doc["loss"], rel=1e-9)
    assert "6/6" in out.err and "batches" in out.err  # 11 windows in batches of 2
    plain = _run(capsys, [*argv, "--no-progress"])
    assert plain.err == "" and plain.out.startswith(f"loss {doc['loss']:.4f}  perplexity {doc['perplexity']:.3f}")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lm-eval-results", "r.json"], "--lm-eval-results is read by --table3"),
        (["--table3"], "--table3 needs --tasks"),
        (["--num-fewshot", "2"], "--num-fewshot and --max-length apply to --tasks"),
        (["--tasks", "a.jsonl", "--text", "b.txt"], "not allowed with argument"),
    ],
)
def test_options_that_do_not_go_together(capsys, model_dir, extra, message):
    code = main(["eval", str(model_dir), *extra]) if "--text" not in extra else None
    if code is None:  # argparse's mutually exclusive group exits with its own usage error
        with pytest.raises(SystemExit):
            main(["eval", str(model_dir), *extra])
        assert message in capsys.readouterr().err
        return
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("retnet eval: error: ") and message in err and len(err.splitlines()) == 1


def test_missing_model_and_task_file(capsys, model_dir, tmp_path):
    assert main(["eval", "--tasks", "a.jsonl"]) == 1
    assert "give a MODEL" in capsys.readouterr().err
    assert main(["eval", str(model_dir), "--tasks", str(tmp_path / "none.jsonl")]) == 1
    assert "task file not found" in capsys.readouterr().err
