"""Recall probes: MQAR and passkey generators (deterministic, answers checkable by reading the sequence), the
accuracy functions on planted predictions, task training through the comparison's models, the task models' shape
and the learning-rate rule."""

import numpy as np
import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from retnet import RetNetConfig
from retnet.compare.archs import BaselineSettings, build_model, match_parameters
from retnet.compare.mqar import BLANK, MQARTask, evaluate_mqar, make_mqar, mqar_batches, mqar_vocabulary
from retnet.compare.passkey import (
    PASSKEY_INTRO,
    PASSKEY_NEEDLE,
    PASSKEY_QUESTION,
    make_passkey,
    passkey_accuracy,
    passkey_batches,
)
from retnet.compare.probes import accuracy_table, choose_rate
from retnet.compare.task_training import TEST, TRAIN, VALIDATION, count_correct, train_on_task
from retnet.data.tokenizer import ByteTokenizer
from retnet.training.config import OptimSection

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


def brute_force_answers(ids, num_pairs):
    """Read one MQAR sequence like a person: the pairs, then every later key with what it was paired with."""
    ids = ids.tolist()
    pairs = {ids[2 * i]: ids[2 * i + 1] for i in range(num_pairs)}
    return {t: pairs[tok] for t, tok in enumerate(ids) if t >= 2 * num_pairs and tok in pairs}


@pytest.mark.parametrize("seq_len,num_pairs,vocab", [(16, 3, 17), (64, 8, 100), (45, 16, 40)])
def test_mqar_is_deterministic_and_its_targets_are_the_paired_values(seq_len, num_pairs, vocab):
    data = make_mqar(12, seq_len=seq_len, num_pairs=num_pairs, vocab_size=vocab, seed=5)
    again = make_mqar(12, seq_len=seq_len, num_pairs=num_pairs, vocab_size=vocab, seed=5)
    other = make_mqar(12, seq_len=seq_len, num_pairs=num_pairs, vocab_size=vocab, seed=6)
    assert torch.equal(data.input_ids, again.input_ids) and torch.equal(data.targets, again.targets)
    assert not torch.equal(data.input_ids, other.input_ids)
    assert data.input_ids.shape == data.targets.shape == (12, seq_len)
    keys, values = mqar_vocabulary(vocab)
    queries = min(num_pairs, (seq_len - 2 * num_pairs) // 2)
    for ids, targets in zip(data.input_ids, data.targets):
        context = ids[: 2 * num_pairs].tolist()
        assert all(k in keys for k in context[0::2]) and all(v in values for v in context[1::2])
        assert len(set(context[0::2])) == num_pairs  # distinct keys: every query has one answer
        expected = brute_force_answers(ids, num_pairs)
        scored = {t: int(targets[t]) for t in range(seq_len) if targets[t] != -100}
        assert scored == expected and len(scored) == queries
        assert all(int(ids[t + 1]) == v for t, v in scored.items())  # the answer follows its query
        rest = set(range(2 * num_pairs, seq_len)) - set(scored) - {t + 1 for t in scored}
        assert all(int(ids[t]) == BLANK for t in rest)


def test_mqar_bad_arguments():
    with pytest.raises(ValueError, match="num_pairs=9 exceeds the 8 distinct keys"):
        make_mqar(1, seq_len=64, num_pairs=9, vocab_size=17)
    with pytest.raises(ValueError, match="seq_len=8 with num_pairs=4 leaves room for 0 queries"):
        make_mqar(1, seq_len=8, num_pairs=4, vocab_size=17)
    with pytest.raises(ValueError, match="num_queries=5"):
        make_mqar(1, seq_len=64, num_pairs=4, vocab_size=17, num_queries=5)
    with pytest.raises(ValueError, match="vocab_size=2"):
        make_mqar(1, seq_len=8, num_pairs=1, vocab_size=2)
    with pytest.raises(ValueError, match="num_examples=0"):
        make_mqar(0, seq_len=8, num_pairs=1, vocab_size=17)


def test_training_validation_and_test_examples_are_different_streams():
    task = MQARTask(64, 8)
    train_ids = mqar_batches([task], batch_size=16, vocab_size=100, seed=0)(0)[0]
    assert torch.equal(train_ids, make_mqar(16, seq_len=64, num_pairs=8, vocab_size=100, seed=[0, TRAIN, 0]).input_ids)
    streams = [make_mqar(16, seq_len=64, num_pairs=8, vocab_size=100, seed=[0, split, 64, 8, 0]).input_ids
               for split in (TEST, VALIDATION)]  # fmt: skip
    rows = {tuple(r.tolist()) for r in train_ids}
    assert not any(tuple(r.tolist()) in rows for ids in streams for r in ids)
    assert not torch.equal(*streams) and len({TRAIN, TEST, VALIDATION}) == 3


def test_count_correct_on_planted_logits():
    targets = torch.full((2, 5), -100)
    targets[0, 1], targets[0, 3], targets[1, 4] = 7, 2, 5
    logits = torch.zeros(2, 5, 9)
    logits[0, 1, 7] = 1.0  # right
    logits[0, 3, 4] = 1.0  # wrong
    logits[1, 4, 5] = 2.0  # right
    logits[1, 0, 3] = 5.0  # an unscored position does not count
    assert count_correct(logits, targets) == (2, 3)
    with pytest.raises(ValueError, match="must be"):
        count_correct(logits[0], targets)


class _PerfectRecall(nn.Module):
    """Answers every MQAR query from the context (and nothing else): the accuracy is exactly known."""

    def __init__(self, vocab, num_pairs, wrong_after=None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.vocab, self.num_pairs, self.wrong_after = vocab, num_pairs, wrong_after

    def forward(self, ids, form="chunkwise", chunk_size=None, **_):
        logits = torch.zeros(*ids.shape, self.vocab)
        for b, row in enumerate(ids):
            for t, answer in brute_force_answers(row, self.num_pairs).items():
                wrong = self.wrong_after is not None and t >= self.wrong_after
                logits[b, t, (answer + 1) % self.vocab if wrong else answer] = 1.0
        return type("Out", (), {"logits": logits})


def test_evaluate_mqar_reports_the_planted_accuracy():
    tasks = [MQARTask(32, 4)]
    perfect = evaluate_mqar(_PerfectRecall(17, 4), tasks, vocab_size=17, examples=20, batch_size=8)
    assert perfect == [{"seq_len": 32, "num_pairs": 4, "accuracy": 1.0, "queries": 80}]
    # wrong on every query key at position >= 20: the expected accuracy is counted from the same examples
    half = evaluate_mqar(_PerfectRecall(17, 4, wrong_after=20), tasks, vocab_size=17, examples=20, batch_size=8)
    late = sum(
        int(
            (
                (make_mqar(n, seq_len=32, num_pairs=4, vocab_size=17, seed=[0, TEST, 32, 4, s]).targets[:, 20:]) != -100
            ).sum()
        )
        for s, n in ((0, 8), (8, 8), (16, 4))
    )
    assert half[0]["accuracy"] == pytest.approx(1 - late / 80) and 0 < late < 80


def test_mqar_training_learns_above_chance_in_the_comparison_models():
    vocab = 17  # 8 keys, 8 values: chance is 1/8
    base = RetNetConfig(flavour="paper", hidden_size=32, num_hidden_layers=1, num_heads=2, vocab_size=vocab,
                        value_dim=64, ffn_dim=64)  # fmt: skip
    model = build_model(match_parameters(["transformer"], base, BaselineSettings(num_heads=2))["transformer"].config)
    tasks = [MQARTask(12, 2)]
    before = evaluate_mqar(model, tasks, vocab_size=vocab, examples=64)[0]["accuracy"]
    optim = OptimSection(lr=1e-2, warmup_steps=5, schedule="linear", weight_decay=0.0)
    batches = mqar_batches(tasks, batch_size=32, vocab_size=vocab)
    out = train_on_task(model, batches, steps=60, optim=optim, log_every=20)
    after = evaluate_mqar(model, tasks, vocab_size=vocab, examples=64)[0]["accuracy"]
    assert [p["step"] for p in out["loss_curve"]] == [20, 40, 60]
    assert out["loss_curve"][-1]["loss"] < out["loss_curve"][0]["loss"] and out["diverged_at"] is None
    assert after > max(2 / 8, before + 0.1), (before, after)
    # a rate far too high stops at the first non-finite loss instead of training on
    model = build_model(match_parameters(["transformer"], base, BaselineSettings(num_heads=2))["transformer"].config)
    blown = train_on_task(model, batches, steps=20, optim=OptimSection(lr=1e30, warmup_steps=0, weight_decay=0.0))
    assert blown["diverged_at"] is not None and blown["diverged_at"] <= 20 and blown["final_loss"] is None


@pytest.mark.parametrize("arch", ["retnet", "transformer"])
def test_compiled_task_training_matches_eager(arch):
    """Task models train on the comparison's path: compiled blocks (here the aot_eager backend, which traces the
    same graphs without generating code) give the eager losses, with the sequence lengths of a mixed grid."""
    vocab = 17
    base = RetNetConfig(flavour="paper", hidden_size=32, num_hidden_layers=2, num_heads=2, vocab_size=vocab,
                        value_dim=64, ffn_dim=64)  # fmt: skip
    config = match_parameters([arch], base, BaselineSettings(num_heads=2))[arch].config
    batches = mqar_batches([MQARTask(12, 2), MQARTask(16, 4)], batch_size=8, vocab_size=vocab)
    optim = OptimSection(lr=3e-3, warmup_steps=2, weight_decay=0.0)
    curves, graphs = [], []
    for compile in (False, "aot_eager"):
        torch.manual_seed(0)
        torch._dynamo.reset()
        counters.clear()
        model = build_model(config)
        out = train_on_task(model, batches, steps=6, optim=optim, log_every=1, compile=compile)
        curves.append([p["loss"] for p in out["loss_curve"]])
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] == 0 and graphs[1] > 0  # the second run went through the compiler
    assert curves[1] == pytest.approx(curves[0], rel=1e-4)


def test_passkey_sequence_is_exact_and_deterministic():
    tok = ByteTokenizer()
    ex = make_passkey(tok, FILLER, length=400, depth=0.5, seed=3)
    again = make_passkey(tok, FILLER, length=400, depth=0.5, seed=3)
    assert np.array_equal(ex.input_ids, again.input_ids) and ex.passkey == again.passkey
    assert make_passkey(tok, FILLER, length=400, depth=0.5, seed=4).passkey != ex.passkey
    assert len(ex.input_ids) == 400 and 10_000 <= ex.passkey < 100_000
    text = tok.decode(ex.input_ids.tolist())
    needle = PASSKEY_NEEDLE.format(key=ex.passkey)
    assert tok.decode(ex.input_ids[ex.needle_start : ex.needle_start + len(needle)].tolist()) == needle
    assert text.endswith(f"What is the pass key? The pass key is {ex.passkey}")
    assert tok.decode(ex.answer_ids.tolist()) == f" {ex.passkey}" and text.count(str(ex.passkey)) == 3
    # depth moves the needle through the filler: 0 right after the intro, 1 right before the question
    starts = [make_passkey(tok, FILLER, length=400, depth=d, seed=3).needle_start for d in (0.0, 0.5, 1.0)]
    fixed = PASSKEY_INTRO + needle + PASSKEY_QUESTION + f" {ex.passkey}"
    room = 400 - len(fixed.encode())  # filler bytes (byte tokens)
    assert starts == [len(PASSKEY_INTRO) + round(d * room) for d in (0.0, 0.5, 1.0)]
    with pytest.raises(ValueError, match="too short"):
        make_passkey(tok, FILLER, length=50, depth=0.5)
    with pytest.raises(ValueError, match="depth=1.5"):
        make_passkey(tok, FILLER, length=400, depth=1.5)


class _Oracle(nn.Module):
    """Predicts every next token of the passkey sequences it was built from, except those whose needle sits deep."""

    def __init__(self, examples, wrong_depth_from):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.full = {ex.input_ids[:-1].tobytes(): ex for ex in examples}
        self.wrong_depth_from = wrong_depth_from

    def forward(self, ids, form="chunkwise", chunk_size=None, **_):
        ex = self.full[ids[0].numpy().tobytes()]
        nxt = torch.from_numpy(ex.input_ids[1:])
        if ex.needle_start >= self.wrong_depth_from:
            nxt = (nxt + 1) % 256
        return type("Out", (), {"logits": nn.functional.one_hot(nxt, 256).float()[None]})


def test_passkey_accuracy_scores_exactly_the_answer_tokens():
    tok = ByteTokenizer()
    lengths, depths, trials = (300, 500), (0.0, 1.0), 2
    examples = [make_passkey(tok, FILLER, length=n, depth=d, seed=[0, TEST, n, t]) for n in lengths for d in depths
                for t in range(trials)]  # fmt: skip
    rows = passkey_accuracy(_Oracle(examples, wrong_depth_from=10**9), tok, FILLER, lengths=lengths, depths=depths,
                            trials=trials)  # fmt: skip
    assert [r["accuracy"] for r in rows] == [1.0] * 4
    deep = min(ex.needle_start for ex in examples if ex.input_ids.size == 500 and ex.needle_start > 250)
    rows = passkey_accuracy(_Oracle(examples, wrong_depth_from=deep), tok, FILLER, lengths=lengths, depths=depths,
                            trials=trials)  # fmt: skip
    assert [(r["length"], r["depth"], r["accuracy"]) for r in rows] == [
        (300, 0.0, 1.0), (300, 1.0, 1.0), (500, 0.0, 1.0), (500, 1.0, 0.0)
    ]  # fmt: skip
    table = accuracy_table(rows, "length", "depth", "Length")
    assert "| 500 | 100.0% | 0.0% |" in table and table.startswith("| Length | depth 0.0 | depth 1.0 |")


def test_passkey_training_batches_score_only_the_answer_and_are_deterministic():
    tok = ByteTokenizer()
    filler = np.asarray(tok.encode(FILLER * 3), dtype=np.int64)
    batch = passkey_batches(tok, filler, length=300, batch_size=4, seed=2)
    ids, targets = batch(5)
    again_ids, again_targets = batch(5)
    assert torch.equal(ids, again_ids) and torch.equal(targets, again_targets)
    assert not torch.equal(ids, batch(6)[0])
    assert ids.shape == targets.shape == (4, 299)
    starts = []
    for row, target in zip(ids, targets):
        text = tok.decode(row.tolist())
        key = text.split("The pass key is ")[1][:5]  # the needle comes first
        scored = (target != -100).nonzero().flatten()
        answer = tok.decode(target[scored].tolist())
        assert answer == f" {key}" and int(scored[-1]) == 298  # the answer ends the sequence
        # each answer token is predicted one position before it: the inputs after the first scored one are the answer
        assert tok.decode(row[int(scored[0]) + 1 :].tolist()) == answer[:-1]
        starts.append(text.index("The pass key is"))
    assert len(set(starts)) > 1  # depths are drawn per example
    with pytest.raises(ValueError, match="too short"):
        passkey_batches(tok, filler, length=50, batch_size=4)


def test_the_task_rate_rule_reports_the_best_validation_and_the_sweep():
    def result(validation, loss=1.0):
        return {"train": {"final_loss": loss}, "validation": validation, "accuracy": [{"accuracy": validation}]}

    chosen = choose_rate({1e-3: result(0.4), 3e-3: result(0.9, 0.5), 1e-2: result(None, None)})
    assert chosen["lr"] == 3e-3 and chosen["accuracy"] == [{"accuracy": 0.9}]
    assert [(s["lr"], s["validation"]) for s in chosen["sweep"]] == [(1e-3, 0.4), (3e-3, 0.9), (1e-2, None)]
    assert choose_rate({3e-3: result(0.5), 1e-3: result(0.5)})["lr"] == 1e-3  # ties: the smaller rate
    assert choose_rate({1e-3: result(None), 1e-2: result(0.1)})["lr"] == 1e-2  # diverged counts as nothing learned
    assert choose_rate({1e-3: result(None), 1e-2: result(0.0)})["lr"] == 1e-2  # and loses a tie to a trained rate
    assert choose_rate({1e-3: result(None), 1e-2: result(None)})["lr"] == 1e-3


def test_the_report_says_where_a_solved_task_model_stopped(tmp_path):
    from retnet.compare.probes import write_probe_reports

    def result(validation, stopped_at):
        train = {"final_loss": 0.1, "stopped_at": stopped_at}
        return {"train": train, "validation": validation,
                "accuracy": [{"seq_len": 64, "num_pairs": 4, "accuracy": validation}]}  # fmt: skip

    out = {"mqar": {"transformer": choose_rate({1e-3: result(1.0, 1200), 3e-3: result(0.5, None)}),
                    "retnet": choose_rate({1e-3: result(0.2, None)})}}  # fmt: skip
    write_probe_reports(out, tmp_path)
    text = (tmp_path / "probes" / "mqar.md").read_text()
    assert "## Transformer (lr 0.001; validation accuracy by rate: 0.001: 100.0%, 0.003: 50.0%; solved, stopped at" \
           " step 1,200)" in text  # fmt: skip
    assert "## RetNet (lr 0.001; validation accuracy by rate: 0.001: 20.0%)" in text


def test_task_models_share_one_small_shape_matched_across_every_entry():
    from retnet.compare import ENTRIES, load_compare_config
    from retnet.compare.probes import task_models

    c = load_compare_config("medium", None, ["--compare.archs=[" + ",".join(ENTRIES) + "]"])
    models = task_models(c, c.probes.mqar_vocab_size)
    assert set(models) == set(ENTRIES)
    retnet = models["retnet"].config
    assert (retnet.hidden_size, retnet.num_hidden_layers, retnet.num_heads) == (128, 2, 2)
    assert retnet.value_dim == 256 and retnet.ffn_dim == 256 and retnet.vocab_size == 8192  # medium's ratios (2d)
    assert models["transformer"].config.num_heads == 2 and models["transformer"].config.hidden_size == 128
    for name, m in models.items():
        assert abs(m.parameters / models["retnet"].parameters - 1) <= 0.02, name
    with pytest.raises(ValueError, match="task_hidden_size=100 is not a multiple of probes.task_heads=3"):
        load_compare_config("medium", None, ["--probes.task_hidden_size=100", "--probes.task_heads=3"])
    with pytest.raises(ValueError, match="probes.task_lrs"):
        load_compare_config("medium", None, ["--probes.task_lrs=[]"])


def test_a_task_models_key_covers_what_it_computes_and_not_the_other_rates_or_the_workers():
    from retnet.compare import load_compare_config
    from retnet.compare.probes import _task_key, task_models

    def key(*extra, probe="mqar", lr=1e-3):
        c = load_compare_config("medium", None, list(extra))
        model = task_models(c, c.probes.mqar_vocab_size)["retnet"].config
        return _task_key(c, probe, "retnet", model, lr)

    base = key()
    assert base == key("--probes.task_lrs=[1e-3,2e-3]", "--probes.workers=4", "--probes.passkey_steps=7")
    for changed in ("--probes.task_hidden_size=64", "--probes.mqar_steps=10", "--seed=1", "--probes.mqar_pairs=[4]"):
        assert key(changed) != base, changed
    assert key(lr=3e-3) != base and key(probe="passkey") != base
    assert key("--data.seq_len=512", probe="passkey") != key(probe="passkey")  # passkey's filler comes from the data


class _Recorder(nn.Module):
    """Remembers the inputs it is shown; predicts nothing in particular."""

    def __init__(self, vocab):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.vocab, self.seen = vocab, []

    def forward(self, ids, form="chunkwise", chunk_size=None, targets=None, return_logits=True):
        self.seen.append(ids.clone())
        logits = torch.zeros(*ids.shape, self.vocab) + self.weight
        loss = None
        if targets is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return type("Out", (), {"logits": logits, "loss": loss})


def test_evaluation_reads_the_stream_of_its_split():
    tasks = [MQARTask(32, 4)]
    for split in (TEST, VALIDATION):
        model = _Recorder(17)
        evaluate_mqar(model, tasks, vocab_size=17, examples=8, batch_size=8, seed=3, split=split)
        expected = make_mqar(8, seq_len=32, num_pairs=4, vocab_size=17, seed=[3, split, 32, 4, 0]).input_ids
        assert torch.equal(model.seen[0], expected)


def test_task_training_trains_step_s_on_batch_s_once_each():
    calls, made = [], {}

    def batch(step):
        calls.append(step)
        made[step] = make_mqar(2, seq_len=16, num_pairs=2, vocab_size=17, seed=[0, TRAIN, step])
        return made[step].input_ids, made[step].targets

    model = _Recorder(17)
    out = train_on_task(model, batch, steps=5, optim=OptimSection(lr=1e-3, warmup_steps=0), log_every=2)
    assert sorted(calls) == [0, 1, 2, 3, 4]
    assert all(torch.equal(seen, made[s].input_ids) for s, seen in enumerate(model.seen))
    assert [p["step"] for p in out["loss_curve"]] == [2, 4, 5]


def test_task_training_stops_where_the_check_says_and_never_after_the_last_step():
    calls, checks = [], []

    def batch(step):
        calls.append(step)
        data = make_mqar(2, seq_len=16, num_pairs=2, vocab_size=17, seed=[0, TRAIN, step])
        return data.input_ids, data.targets

    def second_check_stops():
        checks.append(len(checks))
        return len(checks) == 2

    optim = OptimSection(lr=1e-3, warmup_steps=0)
    out = train_on_task(_Recorder(17), batch, steps=10, optim=optim, log_every=3, stop=second_check_stops,
                        check_every=2)  # fmt: skip
    assert out["stopped_at"] == 4 and checks == [0, 1] and out["steps"] == 10
    assert [p["step"] for p in out["loss_curve"]] == [3, 4] and out["final_loss"] == out["loss_curve"][-1]["loss"]
    assert sorted(calls)[:5] == [0, 1, 2, 3, 4] and max(calls) <= 5  # the step after the stop is at most prefetched
    checks.clear()
    out = train_on_task(_Recorder(17), batch, steps=4, optim=optim, stop=lambda: checks.append(1) or False,
                        check_every=2)  # fmt: skip
    assert out["stopped_at"] is None and checks == [1]  # checked after step 2, not after the last
    with pytest.raises(ValueError, match="check_every"):
        train_on_task(_Recorder(17), batch, steps=4, optim=optim, stop=lambda: True)


def test_a_task_model_stops_at_the_first_check_its_validation_accuracy_passes():
    from retnet.compare import load_compare_config
    from retnet.compare.probes import _train_and_score, task_models

    overrides = ["--compare.archs=[transformer]", "--probes.mqar_vocab_size=17", "--probes.mqar_seq_lens=[16]",
                 "--probes.mqar_pairs=[2]", "--probes.mqar_steps=40", "--probes.mqar_batch_size=4",
                 "--probes.mqar_examples=8", "--probes.task_hidden_size=16", "--probes.task_layers=1"]  # fmt: skip
    above_zero = load_compare_config("tiny", None, [*overrides, "--probes.task_stop_accuracy=1e-6"])
    never = load_compare_config("tiny", None, [*overrides, "--probes.task_stop_accuracy=null"])
    results = []
    for c in (above_zero, never):
        torch.manual_seed(0)
        results.append(_train_and_score(c, "mqar", build_model(task_models(c, 17)["transformer"].config), 1e-3, None))
    stopped, full = (r["train"] for r in results)
    # checked every 5 % of the 40 steps: the first check with any validation answer right stops it
    assert stopped["stopped_at"] in range(2, 40, 2) and stopped["loss_curve"][-1]["step"] == stopped["stopped_at"]
    assert results[0]["validation"] > 0
    assert full["stopped_at"] is None and full["loss_curve"][-1]["step"] == 40
    with pytest.raises(ValueError, match="task_stop_accuracy"):
        load_compare_config("tiny", None, ["--probes.task_stop_accuracy=1.5"])


def test_a_compiled_task_model_is_scored_without_recompiling():
    """Compiled blocks are for training: validation checks and the test at other lengths, without gradients, run
    eagerly, so scoring compiles nothing (it recompiled every block per test length up to dynamo's limit)."""
    from retnet.compare import load_compare_config
    from retnet.compare.probes import _train_and_score, task_models

    overrides = ["--compare.archs=[transformer]", "--probes.mqar_vocab_size=17", "--probes.mqar_seq_lens=[16,32]",
                 "--probes.mqar_pairs=[2]", "--probes.mqar_steps=4", "--probes.mqar_batch_size=4",
                 "--probes.mqar_examples=8", "--probes.task_hidden_size=16", "--probes.task_layers=1",
                 "--probes.task_stop_accuracy=null", "--compile=true", "--compile_backend=aot_eager"]  # fmt: skip
    config = load_compare_config("tiny", None, overrides)
    model = build_model(task_models(config, 17)["transformer"].config)
    torch._dynamo.reset()
    counters.clear()
    train_on_task(model, mqar_batches(config.probes.mqar_tasks(), batch_size=4, vocab_size=17), steps=2,
                  optim=OptimSection(lr=1e-3, warmup_steps=1), compile="aot_eager")  # fmt: skip
    trained = counters["stats"]["unique_graphs"]
    assert trained > 0
    torch.manual_seed(0)
    model = build_model(task_models(config, 17)["transformer"].config)
    torch._dynamo.reset()
    counters.clear()
    out = _train_and_score(config, "mqar", model, 1e-3, None)
    assert out["train"]["steps"] == 4 and len(out["accuracy"]) == 2  # both test lengths were scored
    assert counters["stats"]["unique_graphs"] == trained  # the training graphs only


def test_a_task_probe_reports_only_when_every_rate_is_in_the_results_file(tmp_path):
    from retnet.compare import load_compare_config
    from retnet.compare.entries import ResultsFile
    from retnet.compare.probes import _task_key, finished_probes, task_models

    c = load_compare_config("medium", None, ["--compare.archs=[retnet]", "--probes.task_lrs=[1e-3,3e-3]"])
    results = ResultsFile(tmp_path / "entries.json")
    model = task_models(c, c.probes.mqar_vocab_size)["retnet"]
    result = {"train": {"final_loss": 1.0}, "validation": 0.5, "accuracy": [{"seq_len": 64, "num_pairs": 4,
                                                                              "accuracy": 0.5}]}  # fmt: skip
    matched = {"retnet": task_models(c, 64)["retnet"]}
    results.add(_task_key(c, "mqar", "retnet", model.config, 1e-3), {"name": "retnet", "role": "probe",
                                                                      "probe": "mqar", "result": result})  # fmt: skip
    assert "mqar" not in finished_probes(c, results, matched, {})
    results.add(_task_key(c, "mqar", "retnet", model.config, 3e-3), {"name": "retnet", "role": "probe",
                                                                      "probe": "mqar", "result": result})  # fmt: skip
    assert finished_probes(c, results, matched, {})["mqar"]["retnet"]["lr"] == 1e-3
