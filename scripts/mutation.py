"""Mutation testing of the core: plant one realistic single-line bug at a time and see whether the tests notice.

Each mutant replaces one exact piece of one line in ``retnet/ops``, ``retnet/layers``, ``retnet/generation``,
``retnet/training/checkpoint.py`` or the comparison's recall probes (an operator swapped, an index off by one, a
term or a branch dropped). The package and the tests are copied to a temporary folder once; every mutant is
written into that copy, its tests run there in a fresh ``pytest -x`` process with a time limit, and the file is
restored, so the working tree is never modified (not even when the job is killed). A mutant is *killed* when a
test fails (or the run times out), and *survives* when its tests pass. The score is killed / mutants.

Each mutant names the tests it runs (the tests of the code it changes: a test selection, as mutation tools do),
so that all of them run in about an hour on a busy 2-core machine, rather than the whole suite per mutant. See
``docs/testing.md`` for the last score and its survivors.

Usage::

    python scripts/mutation.py --list
    python scripts/mutation.py --out mutation.json                      # every mutant
    python scripts/mutation.py --only T1,D4 --out some.json             # some mutants
    python scripts/mutation.py --survivors-of before.json --within tests/ops/test_new.py --out after.json
    python scripts/mutation.py --tests tests/ops --out ops.json         # one test set for every mutant
    python scripts/mutation.py --resume part.json --out all.json        # continue an interrupted job
    python scripts/mutation.py --ignore tests/ops/test_triton_loops.py  # leave some tests out (a "before" score)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Test sets per area of the code (each a list of pytest arguments, paths relative to the repository root).
OPS_TESTS = [
    "tests/ops/test_retention_reference.py",
    "tests/ops/test_nonfinite_causality.py",
    "tests/ops/test_retention_oracle.py",
    "tests/layers",
]
# The kernels' value checks against the reference (the other kernel tests compare the kernels with themselves:
# int64 with int32 offsets, tuned with untuned launches, compiled with eager, which a consistent bug passes).
KERNEL_TESTS = [
    "tests/ops/test_triton_retention.py::test_chunkwise_matches_reference",
    "tests/ops/test_triton_retention.py::test_segmented_scan_matches_reference",
    "tests/ops/test_triton_retention.py::test_recurrent_step_matches_reference",
    "tests/ops/test_triton_loops.py",
    "tests/ops/test_retention_oracle.py::test_triton_matches_the_oracle",
]
COMPILE_TESTS = [
    "tests/ops/test_compile_cpu.py",
    "tests/ops/test_triton_tuning.py::test_compiled_op_under_a_tuning_matches_eager",
]
LAYER_TESTS = [
    "tests/layers",
    "tests/model/test_model.py",
    "tests/model/test_model_oracle.py",
    "tests/generation/test_decode_logits.py",
]
GENERATION_TESTS = ["tests/generation"]
PROBE_TESTS = [
    "tests/compare/test_probes.py",
    "tests/compare/test_medium_preset.py::test_ood_paths_reach_the_evaluation_and_probes_run_from_the_command_line",
]
CHECKPOINT_TESTS = [
    "tests/training/test_exact_resume.py",
    "tests/training/test_checkpoint_safety.py",
    "tests/training/test_train.py::test_loss_decreases_and_artifacts",  # counts the checkpoints kept
]


@dataclass(frozen=True)
class Mutant:
    """One planted bug: in ``path``, the one occurrence of ``old`` becomes ``new``.

    Attributes:
        id: short name (``D1``, ``T3``, ...).
        path: file relative to the repository root.
        old: an exact piece of one line, occurring once in the file.
        new: its replacement.
        what: the bug in words.
        tests: pytest arguments (paths) that should catch it.
    """

    id: str
    path: str
    old: str
    new: str
    what: str
    tests: tuple[str, ...]


def _m(id, path, old, new, what, tests):
    return Mutant(id, path, old, new, what, tuple(tests))


DECAY = "retnet/ops/retention/decay.py"
REF = "retnet/ops/retention/reference.py"
DISPATCH = "retnet/ops/retention/dispatch.py"
PACKING = "retnet/ops/retention/packing.py"
STATE = "retnet/ops/retention/state.py"
FWD = "retnet/ops/retention/triton/forward.py"
BWD = "retnet/ops/retention/triton/backward.py"
TILES = "retnet/ops/retention/triton/tiles.py"
STEP = "retnet/ops/retention/triton/step.py"
MSR = "retnet/layers/retention.py"
NORM = "retnet/layers/norm.py"
POSITION = "retnet/layers/position.py"
FFN = "retnet/layers/ffn.py"
SAMPLING = "retnet/generation/sampling.py"
GENERATE = "retnet/generation/generate.py"
ENGINE = "retnet/generation/engine.py"
CKPT = "retnet/training/checkpoint.py"
MQAR = "retnet/compare/mqar.py"
PASSKEY = "retnet/compare/passkey.py"
TASKS = "retnet/compare/task_training.py"
PROBES = "retnet/compare/probes.py"

MUTANTS = [
    # ---- decay schedules and the decay-row normaliser
    _m("D1", DECAY, "torch.full_like(heads, 1.0 / 128.0)", "torch.full_like(heads, 1.0 / 64.0)",
       "the single schedule's γ is 63/64 instead of 127/128", OPS_TESTS),
    _m("D2", DECAY, "torch.pow(2.0, -5.0 - heads)", "torch.pow(2.0, -6.0 - heads)",
       "the torchscale schedule starts at 1 − 2^−6", OPS_TESTS),
    _m("D3", DECAY, "math.log(1 / 32), math.log(1 / 512)", "math.log(1 / 32), math.log(1 / 256)",
       "the paper schedule ends at 1 − 1/256", OPS_TESTS),
    _m("D4", DECAY, "return torch.where(no_decay, n1.expand_as(ratio), ratio)", "return ratio",
       "the γ = 1 branch of c_n dropped (PyTorch)", OPS_TESTS),
    _m("D5", DECAY, "[:, None, :] + 1  # (B, 1, T)", "[:, None, :]  # (B, 1, T)",
       "c_n sums to n − 1 (off by one)", OPS_TESTS),
    _m("D6", DECAY, "    causal = rel >= 0\n", "    causal = rel > 0\n",
       "the decay mask drops its diagonal", OPS_TESTS),
    _m("D7", DECAY, "return torch.exp(log_decay.view(-1, *([1] * e.dim())) * e)",
       "return torch.exp(log_decay.view(-1, *([1] * e.dim())) * (e + 1))",
       "every decay power one too high", OPS_TESTS),
    _m("D8", DECAY, "return torch.log1p(-one_minus_gamma).to(dtype=dtype",
       "return torch.log1p(-one_minus_gamma).float().to(dtype=dtype",
       "float64 log γ widened from float32", OPS_TESTS),
    # ---- the PyTorch forms
    _m("R1", REF, "denom = torch.maximum(s_BHT.abs(), sqrt_c).detach()", "denom = torch.maximum(s_BHT.abs(), sqrt_c)",
       "the normaliser's denominator is not detached (gradients change, values do not)", OPS_TESTS),
    _m("R2", REF, "denom = torch.maximum(s_BHT.abs(), sqrt_c).detach()",
       "denom = torch.maximum(s_BHT, sqrt_c).detach()",
       "|s_n| without the absolute value", OPS_TESTS),
    _m("R3", REF, "decay_powers(lg, torch.arange(1, T + 1, device=q.device))",
       "decay_powers(lg, torch.arange(0, T, device=q.device))",
       "parallel form: the initial state decays by γ^n instead of γ^(n+1)", OPS_TESTS),
    _m("R4", REF, "zeta_exp = lengths[:, None] - 1 - j[None, :]", "zeta_exp = lengths[:, None] - j[None, :]",
       "chunkwise ζ one power too high", OPS_TESTS),
    _m("R5", REF, "lengths[-1] = T - (N - 1) * C", "lengths[-1] = C",
       "chunkwise: a short last chunk decays as a full one", OPS_TESTS),
    _m("R6", REF, "valid = (positions >= 0)[:, None, :, None]", "valid = (positions > 0)[:, None, :, None]",
       "position 0 treated as left padding", OPS_TESTS),
    _m("R7", REF, "z = gamma[None, :, None] * z + k_BHTK[:, :, t]", "z = z + k_BHTK[:, :, t]",
       "recurrent form: the key sum does not decay", OPS_TESTS),
    _m("R8", REF, "decay_powers(lg, torch.full((), T, device=q.device))",
       "decay_powers(lg, torch.full((), T - 1, device=q.device))",
       "parallel form: the final state decays the initial one by γ^(T−1)", OPS_TESTS),
    _m("R9", REF, "return torch.where(causal_mask(T, q.device), (q @ k.transpose(-1, -2)) * D, 0.0)",
       "return (q @ k.transpose(-1, -2)) * D",
       "scores masked by multiplying with D's zeros (a future NaN reaches earlier rows)", OPS_TESTS),
    _m("R10", REF, "s_BHT = scores_BHTT.sum(-1) + (q_xi @ z0[..., None]).squeeze(-1)",
       "s_BHT = scores_BHTT.sum(-1)",
       "parallel form: the score normaliser ignores the initial key sum", OPS_TESTS),
    # ---- dispatch, packing, state
    _m("P1", DISPATCH, "off = 0 if offset is None else offset", "off = 0",
       "the offset is ignored without a state", OPS_TESTS),
    _m("P2", DISPATCH, "order = torch.argsort(torch.cat(doc_index))", "order = torch.cat(doc_index)",
       "packed documents: final states put back with the inverse permutation", OPS_TESTS),
    _m("P3", PACKING, "(-pads).to(device)))", "(1 - pads).to(device)))",
       "packed documents start at position 1", OPS_TESTS),
    _m("P4", STATE, "return RetentionState(self.S[index], self.z[index], self.position[index])",
       "return RetentionState(self.S[index], self.z[index], self.position)",
       "index_select keeps every row's position", OPS_TESTS + GENERATION_TESTS),
    # ---- Triton kernels (run under the interpreter on CPU)
    _m("T1", FWD, "b_qz += tl.sum(b_qf.to(tl.float32) * b_z[None, :], axis=1)",
       "b_qz = tl.sum(b_qf.to(tl.float32) * b_z[None, :], axis=1)",
       "output kernel: only the last K block of the q·z normaliser term", KERNEL_TESTS),
    _m("T2", FWD, "b_o += tl.dot(b_q, b_h, input_precision=IP)", "b_o = tl.dot(b_q, b_h, input_precision=IP)",
       "output kernel: only the last K block of Q S", KERNEL_TESTS),
    _m("T3", FWD, "b_A += tl.dot(b_q, b_kt, input_precision=IP)", "b_A = tl.dot(b_q, b_kt, input_precision=IP)",
       "output kernel: only the last K block of Q Kᵀ", KERNEL_TESTS),
    _m("T4", BWD, "b_dA += tl.dot(b_do, b_vt, input_precision=IP)", "b_dA = tl.dot(b_do, b_vt, input_precision=IP)",
       "dq/dk kernel: only the last V block of dO Vᵀ", KERNEL_TESTS),
    _m("T5", BWD, "b_dq += tl.dot(b_do, b_ht, input_precision=IP)", "b_dq = tl.dot(b_do, b_ht, input_precision=IP)",
       "dq/dk kernel: only the last V block of dO Sᵀ", KERNEL_TESTS),
    _m("T6", BWD, "b_dk += tl.dot(b_v, b_dht, input_precision=IP)", "b_dk = tl.dot(b_v, b_dht, input_precision=IP)",
       "dq/dk kernel: only the last V block of V dSᵀ", KERNEL_TESTS),
    _m("T7", BWD, "b_dv += tl.dot(b_k, b_dh, input_precision=IP)", "b_dv = tl.dot(b_k, b_dh, input_precision=IP)",
       "dv kernel: only the last K block of K dS", KERNEL_TESTS),
    _m("T8", BWD, "b_At += tl.dot(b_k, b_qt, input_precision=IP)", "b_At = tl.dot(b_k, b_qt, input_precision=IP)",
       "dv kernel: only the last K block of K Qᵀ", KERNEL_TESTS),
    _m("T9", BWD, "b_dAt += tl.dot(b_v, b_dot, input_precision=IP)", "b_dAt = tl.dot(b_v, b_dot, input_precision=IP)",
       "dq/dk kernel: only the last V block of V dOᵀ", KERNEL_TESTS),
    _m("T10", TILES, "c = tl.where(lg == 0.0, n1, c)", "c = c",
       "kernels: the γ = 1 branch of c_n dropped", KERNEL_TESTS),
    _m("T11", FWD, "g_j = tl.exp(lg * ((i_s - 1 - j) * SEG_NT * BT))", "g_j = tl.exp(lg * ((i_s - j) * SEG_NT * BT))",
       "segmented scan: earlier segments decayed one segment too many", KERNEL_TESTS),
    _m("T12", FWD, "g_s = tl.exp(lg * (i_s * SEG_NT * BT))", "g_s = tl.exp(lg * (i_s * SEG_NT))",
       "segmented scan: the initial state decayed by chunks, not tokens", KERNEL_TESTS),
    _m("T13", BWD, "g_f = tl.exp(lg * tl.maximum(T - t_end * BT, 0))",
       "g_f = tl.exp(lg * tl.maximum(T - i_s * SEG_NT * BT, 0))",
       "segmented reverse scan: the final state's gradient decayed from the segment's start", KERNEL_TESTS),
    _m("T14", BWD, "g_j = tl.exp(lg * ((j - i_s - 1) * SEG_NT * BT))", "g_j = tl.exp(lg * ((j - i_s) * SEG_NT * BT))",
       "segmented reverse scan: later segments decayed one segment too many", KERNEL_TESTS),
    _m("T15", TILES, "b_valid = b_in & (n >= 0)", "b_valid = b_in & (n > 0)",
       "kernels: position 0 treated as left padding", KERNEL_TESTS),
    _m("T16", TILES, "tl.exp(lg * tl.maximum(b_len - 1.0 - f_i, 0.0))", "tl.exp(lg * tl.maximum(b_len - f_i, 0.0))",
       "kernels: ζ one power too high", KERNEL_TESTS),
    _m("T17", TILES, "b_xi = tl.exp(lg * (f_i + 1.0))", "b_xi = tl.exp(lg * f_i)",
       "kernels: ξ one power too low", KERNEL_TESTS),
    _m("T18", STEP, "b_z = b_z * g + b_k", "b_z = b_z + b_k",
       "decode step kernel: the key sum does not decay", KERNEL_TESTS),
    _m("T19", TILES, "return tl.where((diff >= 0.0) & b_valid[:, None]",
       "return tl.where((diff > 0.0) & b_valid[:, None]",
       "kernels: the transposed decay mask drops its diagonal (backward only)", KERNEL_TESTS),
    _m("T20", TILES, "return x + tl.cast(i_b, tl.int64) * T * (H * D) + i_h * D",
       "return x + tl.cast(i_b, tl.int64) * T * (H * D)",
       "int64 offsets: the head offset dropped",
       [*KERNEL_TESTS, "tests/ops/test_triton_retention.py::test_int64_offsets_give_the_same_results"]),
    _m("T21", FWD, "b_r = row_scale(b_qz * b_xi + tl.sum(b_A, axis=1)", "b_r = row_scale(b_qz + tl.sum(b_A, axis=1)",
       "output kernel: the incoming key sum's term not decayed by ξ", KERNEL_TESTS),
    # ---- what only torch.compile sees
    _m("K1", "retnet/ops/retention/triton/op.py", "rden = q.new_empty(B, H, T, dtype=torch.float32)",
       "rden = q.new_empty(B, T, H, dtype=torch.float32)",
       "the forward op's fake implementation gives the row factors another layout", COMPILE_TESTS),
    _m("K2", "retnet/ops/retention/triton/tuning.py", "@torch.compiler.assume_constant_result\ndef tuning_ints",
       "def tuning_ints", "the tuning read is traced instead of kept as a constant", COMPILE_TESTS),
    # ---- layers
    _m("L1", NORM, "of = of - of.mean(-1, keepdim=True)", "of = of",
       "GroupNorm without mean subtraction", LAYER_TESTS),
    _m("L2", NORM, "y = of * torch.rsqrt(of.pow(2).mean(-1, keepdim=True) + self.eps)",
       "y = of * torch.rsqrt(of.pow(2).sum(-1, keepdim=True) + self.eps)",
       "head norm over the sum of squares instead of the mean", LAYER_TESTS),
    _m("L3", MSR, "k = (self.k_proj(x) * self.scaling).view(B, T, H, K)", "k = self.k_proj(x).view(B, T, H, K)",
       "k not scaled by K^−½", LAYER_TESTS),
    _m("L4", MSR, "o = nn.functional.silu(self.g_proj(x)) * o\n        return self.out_proj(o), new_state",
       "o = torch.sigmoid(self.g_proj(x)) * o\n        return self.out_proj(o), new_state",
       "sigmoid gate instead of swish (forward)", LAYER_TESTS),
    _m("L5", POSITION, "exponents = torch.linspace(0.0, 1.0, head_dim // 2, dtype=torch.float64, device=device)",
       "exponents = torch.arange(head_dim // 2, dtype=torch.float64, device=device) * 2 / head_dim",
       "RoPE's 2i/K frequencies", LAYER_TESTS),
    _m("L6", POSITION, "torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1)",
       "torch.stack((a * cos + b * sin, b * cos - a * sin), dim=-1)",
       "rotation the other way round", LAYER_TESTS),
    _m("L7", MSR, "        first = state.position\n", "        first = state.position - 1\n",
       "a continued segment rotated one position early", LAYER_TESTS),
    _m("L8", MSR, "doc = torch.bucketize(steps, starts, right=True) - 1",
       "doc = torch.bucketize(steps, starts) - 1",
       "packed documents: positions counted from the wrong boundary", LAYER_TESTS),
    _m("L9", MSR, "valid = (position >= 0)[:, None, None]  # (B, 1, 1)", "valid = (position > 0)[:, None, None]",
       "PyTorch decode step: position 0 treated as left padding", LAYER_TESTS),
    _m("L10", FFN, "h = h * self.gate(x)", "h = h + self.gate(x)",
       "GLU adds the gate instead of multiplying", LAYER_TESTS),
    # ---- generation
    _m("G1", SAMPLING, "torch.where(logits > 0, logits / penalty, logits * penalty)",
       "torch.where(logits > 0, logits * penalty, logits / penalty)",
       "repetition penalty favours seen tokens", GENERATION_TESTS),
    _m("G2", SAMPLING, "real = torch.ones_like(ids) if mask is None else (mask != 0).to(torch.long)",
       "real = torch.ones_like(ids)",
       "left padding counted as seen by the repetition penalty", GENERATION_TESTS),
    _m("G3", SAMPLING, "mass_before = probs.cumsum(-1) - probs", "mass_before = probs.cumsum(-1)",
       "top-p drops the token that crosses p", GENERATION_TESTS),
    _m("G4", SAMPLING, "logits = filter_logits(logits / config.temperature",
       "logits = filter_logits(logits * config.temperature",
       "temperature multiplies", GENERATION_TESTS),
    _m("G5", GENERATE, "            seen.scatter_(1, token[:, None], True)\n", "            pass\n",
       "eager loop: generated tokens never marked as seen", GENERATION_TESTS),
    _m("G6", GENERATE, "finished |= torch.isin(token, eos_tensor)", "finished = torch.isin(token, eos_tensor)",
       "a finished row is un-finished by its next token", GENERATION_TESTS),
    _m("G7", GENERATE, "mask[i, T - r.numel() :] = 1", "mask[i, T - r.numel() + 1 :] = 1",
       "left_pad masks each prompt's first token", GENERATION_TESTS),
    _m("G8", ENGINE, "    buffers.counts.add_(1)\n", "\n",
       "engine: every token drawn with the same noise", GENERATION_TESTS),
    _m("G9", ENGINE, "self.seen[index] = self.seen[index].scatter(1, ids, True)", "pass",
       "engine: the prompt's tokens not seen by the repetition penalty", GENERATION_TESTS),
    # ---- checkpoints
    _m("C1", CKPT, "        set_rng_state(json.loads(rng_json.read_text()))\n",
       "        json.loads(rng_json.read_text())\n",
       "resume without restoring the RNG state", CHECKPOINT_TESTS),
    _m("C2", CKPT, 'unlisted = [rel for rel in _required_files(path) if rel not in files]', "unlisted = []",
       "a manifest that omits a file it should list is accepted", CHECKPOINT_TESTS),
    _m("C3", CKPT, "for old in list_checkpoints(root.parent)[:-keep]:",
       "for old in list_checkpoints(root.parent)[: -keep - 1]:",
       "one checkpoint too many kept", CHECKPOINT_TESTS),
    _m("C4", CKPT, "for path in reversed(list_checkpoints(run_dir)):", "for path in list_checkpoints(run_dir):",
       "the oldest valid checkpoint is taken as the latest", CHECKPOINT_TESTS),
    _m("C5", CKPT, "if sha256_file(f) != digest:", "if sha256_file(f) != digest and False:",
       "checksums not compared", CHECKPOINT_TESTS),
    # ---- recall probes (task models)
    _m("Q1", MQAR, "targets[rows, pos] = values[rows, asked]", "targets[rows, pos + 1] = values[rows, asked]",
       "MQAR answers scored one position late", PROBE_TESTS),
    _m("Q2", MQAR, "seed=[seed, split, task.seq_len, task.num_pairs, start]",
       "seed=[seed, TEST, task.seq_len, task.num_pairs, start]",
       "MQAR validation examples are the test examples", PROBE_TESTS),
    _m("Q3", PASSKEY, "np.random.default_rng([seed, TRAIN, step, i, 1])",
       "np.random.default_rng([seed, TRAIN, step, 0, 1])",
       "every passkey training example of a step at the same depth", PROBE_TESTS),
    _m("Q4", PASSKEY, "targets[i, ex.answer_start - 1 :] = ex.answer_ids",
       "targets[i, ex.answer_start - 2 : -1] = ex.answer_ids", "passkey answers scored one position early",
       PROBE_TESTS),
    _m("Q5", TASKS, "upcoming = prefetch.submit(draw, step + 1)", "upcoming = prefetch.submit(draw, step)",
       "the prefetched batch is the current step's again", PROBE_TESTS),
    _m("Q6", PROBES, "best = max(rates, key=", "best = min(rates, key=", "the worst rate reported", PROBE_TESTS),
    _m("Q7", PROBES, '"seed": config.seed,', '"seed": 0,', "a task model's key ignores the seed", PROBE_TESTS),
    _m("Q8", PROBES, "if all(r is not None for r in records.values()):",
       "if any(r is not None for r in records.values()):", "a task probe reported from part of its sweep",
       PROBE_TESTS),
]  # fmt: skip


@dataclass
class Result:
    """What one mutant's test run gave."""

    id: str
    path: str
    what: str
    status: str  # "killed", "survived", "timeout" (counted as killed) or "error" (the mutant could not be planted)
    seconds: float
    tests: list[str]
    killed_by: str | None = None


def plant(text: str, mutant: Mutant) -> str:
    """``text`` with the mutant's one replacement.

    Raises:
        ValueError: ``old`` does not occur exactly once (the source moved on; update the mutant).
    """
    count = text.count(mutant.old)
    if count != 1:
        raise ValueError(f"mutant {mutant.id}: {mutant.old!r} occurs {count} times in {mutant.path} (expected 1)")
    return text.replace(mutant.old, mutant.new)


def copy_tree(dest: Path) -> None:
    """Copy what the tests need (package, tests, scripts, docs, project files) into ``dest``, without caches."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("retnet", "tests", "scripts", "docs", "configs", "benchmarks"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md", "CITATION.cff"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)


def restrict(tests: list[str], within: list[str]) -> list[str]:
    """The part of a mutant's test selection that lies in ``within`` (files or folders): a selected file or test
    inside one of them, or one of them inside a selected folder."""
    out = []
    for test in tests:
        base = test.split("::")[0].rstrip("/")
        for w in within:
            w = w.rstrip("/")
            if base == w or base.startswith(w + "/"):
                out.append(test)
            elif w.startswith(base + "/"):
                out.append(w)
    return list(dict.fromkeys(out))


def _first_failure(output: str) -> str | None:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].split(" - ")[0]
    return None


def run_mutant(
    mutant: Mutant, work: Path, tests: list[str], timeout: float, python: str, ignore: list[str] = ()
) -> Result:
    """Plant ``mutant`` in the copy at ``work``, run ``tests`` there (minus ``ignore``), restore the file."""
    target = work / mutant.path
    original = target.read_text()
    start = time.monotonic()
    try:
        mutated = plant(original, mutant)
    except ValueError as err:
        return Result(mutant.id, mutant.path, mutant.what, "error", 0.0, tests, str(err))
    target.write_text(mutated)
    env = dict(os.environ, PYTHONPATH=str(work), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore", *tests]
    cmd += [f"--ignore={path}" for path in ignore]
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        passed = proc.returncode == 0
        status, killer = ("survived", None) if passed else ("killed", _first_failure(proc.stdout + proc.stderr))
        if proc.returncode not in (0, 1):  # collection errors, crashes: the mutant broke the import
            killer = killer or f"pytest exit code {proc.returncode}"
    except subprocess.TimeoutExpired:
        status, killer = "timeout", f"no result within {timeout:.0f} s"
    finally:
        target.write_text(original)
    return Result(mutant.id, mutant.path, mutant.what, status, round(time.monotonic() - start, 1), tests, killer)


def summary(results: list[Result]) -> dict:
    """Score (killed or timed out over planted mutants) and the survivors' ids."""
    planted = [r for r in results if r.status != "error"]
    killed = [r for r in planted if r.status in ("killed", "timeout")]
    return {
        "mutants": len(planted),
        "killed": len(killed),
        "score": round(len(killed) / len(planted), 3) if planted else None,
        "survivors": [r.id for r in planted if r.status == "survived"],
        "errors": [r.id for r in results if r.status == "error"],
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--only", help="comma-separated mutant ids to run")
    parser.add_argument("--survivors-of", type=Path, help="run only the survivors of an earlier result file")
    parser.add_argument("--tests", nargs="+", help="run these tests for every mutant instead of each mutant's own")
    parser.add_argument("--extra-tests", nargs="+", default=[], help="tests added to each mutant's own")
    parser.add_argument("--ignore", nargs="+", default=[], help="test files left out of every run")
    parser.add_argument("--within", nargs="+", help="run only the part of each mutant's tests inside these paths")
    parser.add_argument("--resume", type=Path, help="keep this file's results; run the mutants it lacks (or timed out)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant (default 900)")
    parser.add_argument("--out", type=Path, default=Path("mutation.json"), help="result file (JSON)")
    args = parser.parse_args(argv)

    mutants = MUTANTS
    if args.list:
        for m in mutants:
            print(f"{m.id:4} {m.path}: {m.what}")
        return 0
    previous: list[dict] = []
    if args.resume is not None:
        previous = json.loads(args.resume.read_text())["results"]
        done = {r["id"] for r in previous if r["status"] in ("killed", "survived")}
        previous = [r for r in previous if r["id"] in done]
        mutants = [m for m in mutants if m.id not in done]
    if args.survivors_of is not None:
        previous = json.loads(args.survivors_of.read_text())["results"]
        keep = {r["id"] for r in previous if r["status"] == "survived"}
        mutants = [m for m in mutants if m.id in keep]
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {m.id for m in MUTANTS}
        if unknown:
            parser.error(f"unknown mutant ids: {sorted(unknown)}")
        mutants = [m for m in mutants if m.id in wanted]

    # A SIGTERM unwinds like Ctrl-C, so that the temporary copy is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="retnet-mutation-") as tmp:
        work = Path(tmp)
        copy_tree(work)
        for i, mutant in enumerate(mutants, 1):
            tests = list(args.tests) if args.tests else [*mutant.tests, *args.extra_tests]
            tests = [t for t in dict.fromkeys(tests) if (work / t.split("::")[0]).exists()]
            tests = [t for t in tests if t.split("::")[0] not in args.ignore]
            if args.within:
                tests = restrict(tests, args.within)
                if not tests:  # none of its tests is among these: an earlier result stands
                    print(f"[{i}/{len(mutants)}] {mutant.id:4} skipped (none of its tests in --within)", flush=True)
                    continue
            result = run_mutant(mutant, work, tests, args.timeout, sys.executable, args.ignore)
            results.append(result)
            print(f"[{i}/{len(mutants)}] {result.id:4} {result.status:8} {result.seconds:6.1f} s  {result.what}"
                  + (f"  <- {result.killed_by}" if result.killed_by else ""), flush=True)  # fmt: skip
            args.out.write_text(json.dumps({"results": [asdict(r) for r in results]}, indent=1))
    if previous:  # the earlier run's results stand (killed mutants stay killed): combine into one score
        rerun = {r.id for r in results}
        merged = [Result(**r) for r in previous if r["id"] not in rerun] + results
        order = {m.id: i for i, m in enumerate(MUTANTS)}
        results = sorted(merged, key=lambda r: order.get(r.id, len(order)))
    report = {"summary": summary(results), "results": [asdict(r) for r in results]}
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
