"""``retnet generate``: prompts from a file, several samples, stop strings, JSON lines and per-sample seeds."""

from __future__ import annotations

import io
import json

import pytest
import torch

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.cli.__main__ import main
from retnet.cli.generate import unescape
from retnet.data import ByteTokenizer
from retnet.training.artifacts import load_trained
from retnet.training.text_samples import StopText, generate_samples, sample_seeds

TOKENS = ["--max-new-tokens", "12"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An exported debug-sized model with random weights and the byte tokenizer."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    RetNetForCausalLM(RetNetConfig.from_preset("debug", vocab_size=257)).save_pretrained(folder)
    ByteTokenizer().save(folder / "tokenizer")
    return folder


@pytest.fixture(scope="module")
def trained(model_dir):
    return load_trained(model_dir)


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("JULIET.\n\nHAMLET.\nJULIET.\n")
    return path


def json_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_file_samples_json_fields_order_and_seeds(model_dir, prompts_file, capsys):
    argv = ["generate", str(model_dir), "--file", str(prompts_file), "--num-samples", "2", "--seed", "7", "--json"]
    assert main([*argv, *TOKENS, "--batch-size", "3"]) == 0
    rows = json_lines(capsys)
    expected = [(prompt, p, j) for p, prompt in enumerate(["JULIET.", "HAMLET.", "JULIET."]) for j in range(2)]
    assert [(r["prompt"], r["prompt_index"], r["sample_index"]) for r in rows] == expected  # blank lines skipped
    assert [r["seed"] for r in rows] == [7, 8, 9, 10, 11, 12]
    assert all(r["tokens"] == 12 and r["stop_reason"] == "max_new_tokens" for r in rows)
    assert len({r["text"] for r in rows}) == 6  # the same prompt twice still gets its own continuations
    assert main([*argv, *TOKENS, "--batch-size", "1"]) == 0
    assert json_lines(capsys) == rows  # a sample does not depend on the batch it ran in
    assert main(["generate", str(model_dir), "JULIET.", "--seed", "11", "--json", *TOKENS]) == 0
    assert json_lines(capsys)[0]["text"] == rows[4]["text"]  # the reported seed repeats a sample alone


def test_interactive_prompts_get_their_own_seeds(model_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("JULIET.\nHAMLET.\n"))
    assert main(["generate", str(model_dir), "-i", "--seed", "1", "--json", *TOKENS]) == 0
    rows = json_lines(capsys)
    assert [r["seed"] for r in rows] == [1, 2] and [r["prompt_index"] for r in rows] == [0, 1]
    assert rows[0]["text"] != rows[1]["text"]
    monkeypatch.setattr("sys.stdin", io.StringIO("JULIET.\nHAMLET.\n"))
    assert main(["generate", str(model_dir), "--file", "-", "--seed", "1", "--json", *TOKENS]) == 0
    assert json_lines(capsys) == rows  # line i gets the same seed whether read interactively or from a file


def test_stop_string_cuts_the_text_and_ends_generation_early(model_dir, capsys):
    base = ["generate", str(model_dir), "the king", "--greedy", "--json", "--max-new-tokens", "40"]
    assert main(base) == 0
    full = json_lines(capsys)[0]
    text = full["text"]
    start = next(
        i for i in range(4, len(text) - 2) if "\ufffd" not in text[i : i + 2] and text[i : i + 2] not in text[:i]
    )
    stop = text[start : start + 2]
    assert main([*base, "--stop", stop, "--stop", "never seen"]) == 0
    cut = json_lines(capsys)[0]
    assert cut["text"] == text[:start] and cut["stop_reason"] == "stop_string"
    assert cut["tokens"] < full["tokens"] == 40  # generation ended at the stop string
    assert len(text[: start + 2].encode()) >= cut["tokens"]


def test_text_output_streams_one_prompt_and_heads_many(model_dir, prompts_file, capsys):
    assert main(["generate", str(model_dir), "JULIET.", "--seed", "3", *TOKENS]) == 0
    single = capsys.readouterr().out
    assert main(["generate", str(model_dir), "JULIET.", "--seed", "3", "--json", *TOKENS]) == 0
    assert single == "JULIET." + json_lines(capsys)[0]["text"] + "\n"
    assert main(["generate", str(model_dir), "--file", str(prompts_file), "--seed", "3", *TOKENS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "--- prompt 0, sample 0 (seed 3, max_new_tokens)" and lines[1].startswith("JULIET.")


def test_stop_text_releases_only_what_no_stop_string_can_claim():
    stream = StopText(["\n\n", "END"])
    assert stream.push("ab") == ""  # the last two characters could begin "END"
    assert stream.push("cdE") == "abc"
    assert stream.push("N") == "d"
    assert stream.push("Dxyz") == "" and stream.stopped and stream.text == "abcd"
    assert stream.push("more") == "" and stream.finish() == ""
    other = StopText([])
    assert other.push("abc") == "abc" and other.finish() == ""
    held = StopText(["\n\n"])
    assert held.push("a\n") == "a" and held.finish() == "\n" and held.text == "a\n"


def test_seeds_are_distinct_and_checked():
    seeds = sample_seeds(2**32 - 2, 3, 2)
    assert seeds == [[2**32 - 2, 2**32 - 1], [0, 1], [2, 3]]
    assert sample_seeds(5, 1, 2, first_prompt=4) == [[13, 14]]
    flat = [s for row in sample_seeds(123, 50, 7) for s in row]
    assert len(set(flat)) == len(flat)
    for bad in (-1, 2**32, 1.5, True):
        with pytest.raises(ValueError, match="seed must be an int"):
            sample_seeds(bad, 1, 1)
    with pytest.raises(ValueError, match="num_samples"):
        sample_seeds(0, 1, 0)


def test_bad_arguments_raise_naming_them(trained):
    with pytest.raises(ValueError, match="stop strings"):
        generate_samples(trained, ["a"], stop=[""])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate_samples(trained, ["a", ""])
    with pytest.raises(ValueError, match="no prompts"):
        generate_samples(trained, [])
    with pytest.raises(TypeError, match="one string"):
        generate_samples(trained, "abc")
    with pytest.raises(ValueError, match="batch_size"):
        generate_samples(trained, ["a"], batch_size=0)
    assert [s.text for s in generate_samples(trained, ["a", "b"], max_new_tokens=0, seed=0)] == ["", ""]


def test_cli_errors_are_one_line(model_dir, tmp_path, capsys):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    for argv, message in (
        (["--file", str(blank)], "holds no prompt"),
        (["--file", str(tmp_path / "none.txt")], "No such file"),
        (["x", "--file", str(blank)], "--file replaces the PROMPT"),
        (["x", "--num-samples", "0"], "--num-samples must be >= 1"),
        (["x", "--seed", "-3"], "seed must be an int in [0, 2**32)"),
    ):
        assert main(["generate", str(model_dir), *argv]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("retnet generate: error: ") and message in err, err


def test_unescape():
    assert unescape(r"a\nb\tc\\n") == "a\nb\tc\\n"
    assert unescape("plain") == "plain"


def test_models_without_the_engine_protocol_decode_alone(trained, monkeypatch):
    def no_engine(model):
        raise TypeError("no static decoding state")

    monkeypatch.setattr("retnet.training.text_samples.decoder_parts", no_engine)
    monkeypatch.setattr("retnet.training.text_samples.DecodeEngine", None)  # never reached
    options = dict(num_samples=2, seed=4, max_new_tokens=10)
    first = list(generate_samples(trained, ["JULIET.", "HAMLET."], **options))
    assert [s.seed for s in first] == [4, 5, 6, 7] and len({s.text for s in first}) == 4
    assert list(generate_samples(trained, ["JULIET.", "HAMLET."], **options)) == first
    greedy = next(generate_samples(trained, ["JULIET."], greedy=True, max_new_tokens=20))
    stop = greedy.text[3:5]
    cut = next(generate_samples(trained, ["JULIET."], greedy=True, max_new_tokens=20, stop=[stop]))
    assert cut.text == greedy.text[: greedy.text.index(stop)] and cut.stop_reason == "stop_string"
