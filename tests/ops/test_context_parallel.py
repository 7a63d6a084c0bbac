"""Context-parallel retention over gloo equals the single-process op (float64, 1e-10): outputs, final states and
gradients, for random shapes, uneven slices, offsets, left padding, initial states and packed documents crossing
rank boundaries; on 2 and 4 processes (one spawn of 4 ranks: the 2-rank cases run on a subgroup)."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import random
import re
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from retnet.ops.retention import RetentionState, context_parallel, log_decay_schedule, retention
from retnet.ops.retention.context_parallel import ContextParallelGroup, _slice_summary, slice_bounds
from tests.utils import assert_close

pytestmark = pytest.mark.distributed

WORLD = 4
ROOT = Path(__file__).resolve().parents[2]
TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 1e-2}  # against float64; gradients get twice
# Low-precision cases against the float64 op on the same (rounded) inputs, run on ranks 2 and 3 while ranks 0 and 1
# run the 2-rank float64 cases: float32 through the Triton kernels (CPU interpreter), bfloat16 with documents (its
# float32 summary has an odd number of bytes / 4 before the carry, which the exchange buffer must keep aligned).
LOW_PRECISION = [
    {"seed": 50, "size": 2, "B": 1, "T": 10, "H": 2, "K": 8, "V": 8, "form": "chunkwise", "chunk_size": None,
     "offset": 5, "state": False, "cu_seqlens": None, "lengths": [4, 6], "dtype": torch.float32, "backend": "triton"},
    {"seed": 51, "size": 2, "B": 1, "T": 17, "H": 3, "K": 4, "V": 3, "form": "chunkwise", "chunk_size": 4,
     "offset": None, "state": False, "cu_seqlens": [0, 5, 12, 17], "lengths": [9, 8], "dtype": torch.bfloat16},
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _case(seed: int, size: int, packed: bool = False) -> dict:
    """A random problem: shapes, chunk size, uneven slice lengths; form and offset / state kind cycle with the seed."""
    rng = random.Random(seed)
    T = rng.randint(3 * size, 8 * size)
    case = {
        "seed": seed, "size": size, "B": 1 if packed else rng.randint(1, 2), "T": T, "H": rng.randint(1, 3),
        "K": rng.randint(2, 6), "V": rng.randint(1, 5), "form": ["chunkwise", "parallel", "recurrent"][seed % 3],
        "chunk_size": rng.choice([2, 3, 4, 8]), "offset": None, "state": False, "cu_seqlens": None,
    }  # fmt: skip
    cuts = sorted(rng.sample(range(1, T), size - 1))  # uneven slices of at least one token
    case["lengths"] = [b - a for a, b in zip([0, *cuts], [*cuts, T])]
    if packed:
        # documents that start exactly at a slice boundary, inside slices, and (few of them) span several slices
        starts = {0, cuts[-1], *rng.sample(range(1, T), rng.randint(1, 4) if seed % 4 else 0)}
        case["cu_seqlens"] = sorted(starts) + [T]
        return case
    kind = ("none", "int", "tensor", "state")[seed % 4]
    if kind == "int":
        case["offset"] = rng.randint(1, 50)
    elif kind == "tensor":  # left padding: row 0 pads past the first slice, the others start at small offsets
        case["B"] = 2
        case["offset"] = [-(case["lengths"][0] + 1), rng.randint(-2, 3)]
    elif kind == "state":
        case["state"] = True
    return case


def _inputs(case: dict):
    g = torch.Generator().manual_seed(case["seed"])
    B, T, H, K, V = (case[x] for x in "BTHKV")
    q = torch.randn(B, T, H, K, generator=g, dtype=torch.float64)
    k = torch.randn(B, T, H, K, generator=g, dtype=torch.float64) * K**-0.5
    v = torch.randn(B, T, H, V, generator=g, dtype=torch.float64)
    w = torch.randn(B, T, H, V, generator=g, dtype=torch.float64)  # weights of the loss Σ w ⊙ o
    state = None
    if case["state"]:
        S = torch.randn(B, H, K, V, generator=g, dtype=torch.float64)
        z = torch.randn(B, H, K, generator=g, dtype=torch.float64).abs()
        state = RetentionState(S, z, torch.tensor([3, 11][:B]))
    dtype = case.get("dtype", torch.float64)  # the float64 reference sees the same rounded inputs
    q, k, v = (x.to(dtype).double() for x in (q, k, v))
    return q, k, v, w, state


def _offset(case):
    off = case["offset"]
    return torch.tensor(off) if isinstance(off, list) else off


def _single(case, log_decay):
    q, k, v, w, state = _inputs(case)
    for x in (q, k, v):
        x.requires_grad_(True)
    if state is not None:
        state.S.requires_grad_(True)
    cu = None if case["cu_seqlens"] is None else torch.tensor(case["cu_seqlens"])
    o, final = retention(
        q, k, v, log_decay, form=case["form"], chunk_size=case["chunk_size"], initial_state=state,
        output_final_state=True, offset=_offset(case), cu_seqlens=cu,
    )  # fmt: skip
    wS = torch.randn(final.S.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ((o * w).sum() + (final.S * wS).sum()).backward()
    grads = [x.grad for x in (q, k, v)] + [None if state is None else state.S.grad]
    return o.detach(), final, wS, grads


def _context_parallel(case, log_decay, group, rank):
    q, k, v, w, state = _inputs(case)
    a = sum(case["lengths"][:rank])
    T_r = case["lengths"][rank]
    sl = slice(a, a + T_r)
    dtype = case.get("dtype", torch.float64)
    q_r, k_r, v_r = (x[:, sl].to(dtype).requires_grad_(True) for x in (q, k, v))
    if state is not None:
        state.S.requires_grad_(True)
    cp = ContextParallelGroup(group, a, T_r, case["T"])
    cu = None if case["cu_seqlens"] is None else torch.tensor(case["cu_seqlens"])
    log_decay = log_decay.to(torch.float64 if dtype == torch.float64 else torch.float32)
    o, final = retention(
        q_r, k_r, v_r, log_decay, form=case["form"], chunk_size=case["chunk_size"], initial_state=state,
        output_final_state=True, offset=_offset(case), cu_seqlens=cu, cp_group=cp,
        backend=case.get("backend", "auto"),
    )  # fmt: skip
    return o, final, (q_r, k_r, v_r), state, w[:, sl], a, T_r


def _check_case(case, log_decay, group, rank):
    o_ref, final_ref, wS, grads_ref = _single(case, log_decay)
    o, final, leaves, state, w_r, a, T_r = _context_parallel(case, log_decay, group, rank)
    name = f"case {case}, rank {rank}"
    tol = TOL[case.get("dtype", torch.float64)]
    assert_close(o.detach(), o_ref[:, a : a + T_r], tol, f"output, {name}")
    # Rows of the final state that finish a whole-sequence row: every row on the last rank without documents; with
    # documents, the piece on this rank that holds a document's last token.
    loss = (o.double() * w_r).sum()
    if case["cu_seqlens"] is None:
        last = rank == case["size"] - 1
        if last:
            assert_close(final.S, final_ref.S, tol, f"final S, {name}")
            assert_close(final.z, final_ref.z, tol, f"final z, {name}")
            assert torch.equal(final.position, final_ref.position), name
            loss = loss + (final.S.double() * wS).sum()
    else:
        bounds = case["cu_seqlens"]
        local_starts = sorted({0, *(b - a for b in bounds[:-1] if a < b < a + T_r)})
        assert final.S.shape[0] == len(local_starts), name
        for piece in range(len(local_starts)):
            end = (local_starts + [T_r])[piece + 1] + a  # global end of the piece
            if end in bounds:  # the piece ends its document
                d = bounds.index(end) - 1
                assert_close(final.S[piece], final_ref.S[d], tol, f"final S of document {d}, {name}")
                assert_close(final.z[piece], final_ref.z[d], tol, f"final z of document {d}, {name}")
                assert int(final.position[piece]) == int(final_ref.position[d]), name
                loss = loss + (final.S[piece].double() * wS[d]).sum()
    loss.backward()
    for label, leaf, g_ref in zip("qkv", leaves, grads_ref):
        assert_close(leaf.grad, g_ref[:, a : a + T_r], 2 * tol, f"d{label}, {name}")
    if state is not None:
        assert_close(state.S.grad, grads_ref[3], 2 * tol, f"d initial S, {name}")


def _expect_value_error(fn, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fn()


def _run_benchmark(out: str) -> None:
    """``benchmarks/context_parallel.py`` at tiny sizes in this process group (rank 0 writes ``out``)."""
    spec = importlib.util.spec_from_file_location("bench_context_parallel", ROOT / "benchmarks" / "context_parallel.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--device", "cpu", "--dtype", "fp32", "--lengths", "8", "13", "--heads", "2", "--key-dim", "4",
                "--value-dim", "3", "--warmup", "1", "--steps", "1", "--out", out])  # fmt: skip


def _worker(rank: int, port: int, bench_out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        log_decay = log_decay_schedule(3, "torchscale", dtype=torch.float64)
        if rank < 2:
            cases = [_case(seed, 2, packed=seed >= 10) for seed in range(1, 14, 2)]
        else:
            cases = LOW_PRECISION
        for case in cases:
            _check_case(case, log_decay[: case["H"]].clone(), pairs[rank // 2], rank % 2)
        for seed in range(0, 14, 2):
            case = _case(seed, 4, packed=seed >= 10)
            _check_case(case, log_decay[: case["H"]].clone(), None, rank)
        # One rank: the split path alone equals the op.
        solo = dist.new_group([rank], use_local_synchronization=True)
        case = _case(100, 1)
        case["lengths"] = [case["T"]]
        _check_case(case, log_decay[: case["H"]].clone(), solo, 0)
        # The layout travels with every call's summaries but is read back and checked once per layout.
        checked = []
        check = context_parallel._check_layout
        context_parallel._check_layout = lambda metas: (checked.append(metas), check(metas))[-1]
        try:
            context_parallel._CHECKED_LAYOUTS.clear()
            case = _case(0, 4)
            for _ in range(3):
                _check_case(case, log_decay[: case["H"]].clone(), None, rank)
        finally:
            context_parallel._check_layout = check
        assert len(checked) == 1 and len(checked[0]) == WORLD, checked
        # Slices that do not tile the sequence fail on every rank, before any wrong number is returned.
        q = torch.randn(1, 3, 3, 4, dtype=torch.float64)
        bad = ContextParallelGroup(None, 3 * rank + (rank == 2), 3, 12 + 1)
        _expect_value_error(lambda: retention(q, q, q, log_decay, cp_group=bad), "contiguous in rank order")
        short = ContextParallelGroup(None, 3 * rank, 3, 13)
        _expect_value_error(lambda: retention(q, q, q, log_decay, cp_group=short), "cover 12 tokens")
        _run_benchmark(bench_out)
    finally:
        dist.destroy_process_group()


def test_context_parallel_equals_single_process(tmp_path):
    # forkserver: the ranks are forked from one fresh process that imported torch once (not four imports, and not
    # a fork of this process's threads)
    multiprocessing.set_forkserver_preload(["torch", "retnet.ops.retention", __name__])
    out = tmp_path / "bench"
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True, start_method="forkserver")
    # The benchmark's smoke run: the plain op (from no state and from a state), the summary alone, and 1, 2 and 4
    # ranks at each length, written as JSON, tables and plot.
    results = json.loads((out / "results.json").read_text())
    rows = [(r["T"], r["kind"], r["ranks"]) for r in results["rows"]]
    assert rows == [
        row
        for T in (8, 13)
        for row in [(T, "single", 0), (T, "single_state", 0), (T, "summary", 1), *((T, "split", n) for n in (1, 2, 4))]
    ]
    assert all(r["tokens_per_s"] > 0 and r["ms"] > 0 for r in results["rows"])
    assert results["environment"]["world_size"] == WORLD and results["environment"]["torch"]
    table = (out / "results.md").read_text()
    assert "| 13 | 4 |" in table and "| 13 | summary alone |" in table
    assert "| summary / plain op |" in table and re.search(r"\n\| 13 \| [\d.]+ \| [\d.]+ \| [\d.]+× \|", table)
    assert (out / "context_parallel.png").is_file()


def test_slice_bounds_split_evenly_and_cover_the_sequence():
    for total, n in [(10, 4), (7, 7), (9, 2), (5, 1)]:
        parts = [slice_bounds(total, n, r) for r in range(n)]
        assert [s for s, _ in parts] == [sum(length for _, length in parts[:r]) for r in range(n)]
        assert sum(length for _, length in parts) == total
        assert max(length for _, length in parts) - min(length for _, length in parts) <= 1
    with pytest.raises(ValueError, match="cannot split 3 tokens over 4"):
        slice_bounds(3, 4, 0)
    with pytest.raises(ValueError, match="rank must be in"):
        slice_bounds(8, 4, 4)


def test_slice_summary_stays_float32_under_autocast():
    """The summary is a state: under bf16 autocast its matrix product must not run (and round) in bf16."""
    k, v = torch.randn(1, 40, 2, 8), torch.randn(1, 40, 2, 8)
    lg, positions = log_decay_schedule(2), torch.arange(40)[None]
    exact = _slice_summary(k, v, lg, positions, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = _slice_summary(k, v, lg, positions, 3)
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, exact)


def test_bad_arguments_fail_before_any_collective():
    q = torch.randn(1, 4, 2, 4)
    log_decay = log_decay_schedule(2)
    with pytest.raises(TypeError, match="cp_group must be a ContextParallelGroup"):
        retention(q, q, q, log_decay, cp_group=object())
    with pytest.raises(ValueError, match="q holds 4 tokens but cp_group says"):
        retention(q, q, q, log_decay, cp_group=ContextParallelGroup(None, 0, 3, 8))
    with pytest.raises(ValueError, match=r"slice \[6, 9\) must be non-empty and lie in"):
        ContextParallelGroup(None, 6, 3, 8)
    with pytest.raises(TypeError, match="ContextParallelGroup.start must be an int"):
        ContextParallelGroup(None, 1.0, 3, 8)
    state = RetentionState.zeros(1, 2, 4, 4)
    cp = ContextParallelGroup(None, 0, 4, 8)
    with pytest.raises(ValueError, match="initial_state cannot be combined with cu_seqlens"):
        retention(q, q, q, log_decay, cp_group=cp, initial_state=state, cu_seqlens=torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="cu_seqlens must rise strictly from 0 to the sequence's total_length 8"):
        retention(q, q, q, log_decay, cp_group=cp, cu_seqlens=torch.tensor([0, 4]))
