"""``retnet train`` on CPU: its thread count, the expected-time line, and an end-of-run sample that is text."""

from __future__ import annotations

import contextlib
import io
import logging

import pytest
import torch

from retnet.cli import train as train_cli
from retnet.cli.__main__ import main
from retnet.data import ByteTokenizer, PreparedDataset
from retnet.training import load_config
from retnet.training.artifacts import prompt_from_text
from retnet.training.trainer import format_minutes

from ..training.corpus import make_corpus, to_argv

TINY = {
    "steps": 12,
    "batch_size": 4,
    "eval_every": 0,
    "eval_batches": 1,
    "log_every": 4,
    "tensorboard": False,
    "threads": 1,
    "sample_tokens": 40,
    "model": {"preset": "debug"},
    "data": {"seq_len": 32},
    "checkpoint": {"every": 0},
}


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_choose_threads_order():
    assert train_cli.choose_threads(3, {"OMP_NUM_THREADS": "1"}, cpus=8) == (3, "threads")
    assert train_cli.choose_threads(0, {"OMP_NUM_THREADS": "2"}, cpus=8) == (2, "OMP_NUM_THREADS")
    assert train_cli.choose_threads(0, {"OMP_NUM_THREADS": "4,2"}, cpus=8) == (4, "OMP_NUM_THREADS")
    assert train_cli.choose_threads(0, {}, cpus=6) == (6, "CPU affinity")
    assert train_cli.choose_threads(0, {"OMP_NUM_THREADS": " "}, cpus=2) == (2, "CPU affinity")
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="OMP_NUM_THREADS"):
            train_cli.choose_threads(0, {"OMP_NUM_THREADS": bad}, cpus=2)


def test_usable_cpus_is_the_affinity_mask():
    assert 1 <= train_cli.usable_cpus() <= (torch.multiprocessing.cpu_count() or 1)


def test_busy_hint():
    assert train_cli.busy_hint(2, cpus=2, load=1.0) is not None and "--threads=1" in train_cli.busy_hint(2, 2, 1.0)
    assert train_cli.busy_hint(2, cpus=2, load=0.1) is None  # idle machine
    assert train_cli.busy_hint(1, cpus=2, load=3.0) is None  # one thread cannot oversubscribe
    assert train_cli.busy_hint(4, cpus=16, load=2.0) is None  # room to spare


def test_set_threads_respects_the_environment(monkeypatch, restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert train_cli.set_threads(0) == 1 and torch.get_num_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(train_cli, "busy_cpus", lambda: 0.0)  # an idle machine
    assert train_cli.set_threads(0) == train_cli.usable_cpus() == torch.get_num_threads()
    assert train_cli.set_threads(1) == 1 and torch.get_num_threads() == 1


def test_a_busy_machine_gets_only_its_free_cpus(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(train_cli, "usable_cpus", lambda: 4)
    monkeypatch.setattr(train_cli, "busy_cpus", lambda: 2.7)  # another job keeps about three CPUs busy
    assert train_cli.set_threads(0) == 1 == torch.get_num_threads()
    monkeypatch.setattr(train_cli, "busy_cpus", lambda: 1.2)
    assert train_cli.set_threads(0) == 3
    monkeypatch.setattr(train_cli, "busy_cpus", lambda: None)  # not measurable: every CPU, with the load hint
    assert train_cli.set_threads(0) == 4
    assert train_cli.set_threads(2) == 2  # an explicit choice is kept
    assert [train_cli.free_cpu_threads(2, b) for b in (0.0, 0.4, 0.6, 1.7, 5.0)] == [2, 2, 1, 1, 1]


def test_busy_cpus_from_proc_stat(tmp_path):
    stat = tmp_path / "stat"

    def write(ticks):  # per CPU: (busy user ticks, idle ticks)
        rows = [f"cpu{i} {u} 0 0 {idle} 0 0 0 0 0 0" for i, (u, idle) in enumerate(ticks)]
        stat.write_text("cpu  1 2 3 4 5 6 7 8 0 0\n" + "\n".join(rows) + "\nintr 1 2\n")

    write([(100, 100), (100, 100), (0, 0)])
    assert train_cli.read_cpu_times({0, 1}, str(stat)) == {0: (100, 200), 1: (100, 200)}
    states = iter([[(100, 100), (100, 100)], [(175, 125), (100, 200)]])  # CPU 0: 75 % busy, CPU 1: idle

    def read(cpus):
        write(next(states))
        return train_cli.read_cpu_times({0, 1}, str(stat))

    assert train_cli.busy_cpus(interval=0.0, read=read) == pytest.approx(0.75)
    assert train_cli.read_cpu_times({0}, str(tmp_path / "missing")) is None


def test_threads_setting_is_validated():
    assert load_config([], {"threads": 2}).threads == 2
    with pytest.raises(ValueError, match="threads"):
        load_config([], {"threads": -1})


def test_prompt_from_text():
    tok = ByteTokenizer()
    ids = tok.encode("\n   \n  First Citizen:  \nBefore we proceed")
    assert prompt_from_text(ids, tok) == "First Citizen:"
    assert prompt_from_text(ids, tok, max_chars=5) == "First"
    assert prompt_from_text([*tok.encode(" \n"), tok.sep_id, *tok.encode("ACT 2.\nx")], tok) == "ACT 2."
    assert prompt_from_text(tok.encode(" \n\t"), tok) == "\n"
    assert prompt_from_text(tok.encode("caf") + [0xC3], tok) == "caf"  # a character cut in half is dropped
    with pytest.raises(ValueError, match="max_chars"):
        prompt_from_text(ids, tok, max_chars=0)


def test_format_minutes():
    assert [format_minutes(s) for s in (24, 210, 1578)] == ["0.4", "3.5", "26"]


def test_tiny_run_sample_and_expected_time(tmp_path, caplog, restore_threads):
    corpus = make_corpus(tmp_path / "corpus", docs=8, words=120)
    assert main(["data", "prepare", str(corpus), str(tmp_path / "ds"), "--val-fraction", "0.25"]) == 0
    out = io.StringIO()
    args = ["train", *to_argv(TINY), f"--run_dir={tmp_path / 'run'}", f"--data.dataset={tmp_path / 'ds'}"]
    with caplog.at_level(logging.INFO), contextlib.redirect_stdout(out):
        assert main(args) == 0
    assert torch.get_num_threads() == 1
    messages = [r.getMessage() for r in caplog.records]
    assert "1 CPU thread (from threads)" in messages
    assert any("min for the run at this speed" in m and m.split(" about ")[1][0].isdigit() for m in messages)

    data = PreparedDataset(tmp_path / "ds")
    val_text = data.tokenizer.decode(data.tokens("val")[:512])
    first_line = next(line.strip() for line in val_text.splitlines() if line.strip())
    sample = out.getvalue().split("\nsample:\n", 1)[1]
    assert sample.startswith(first_line), sample
    continuation = sample[len(first_line) :]
    assert continuation.strip(), f"blank continuation {continuation!r}"
