"""The fused RetNet decode step on a GPU: its batch-1 speed against the default step, and its launch sweep.

``OUT=dir python docs/benchmarks/h200-2026-12-03/fused-step/sweep_fused.py [--quick]`` from the repository root.
At the ``1.3b`` preset (bf16 weights, engine with a CUDA graph): tokens/s of the default step (compiled with
coordinate-descent tuning, the previous best) at batches 1, 2 and 4, and of the fused step with its default
launches; then a coordinate sweep over each product's launch (rows per program, columns per load, warps, stages;
the other products at their best so far), the best launches at batches 1, 2 and 4, a per-kernel profile of the
fused step at batch 1, and the 6.7B preset at batch 1 (both steps). Tokens/s are also given as a fraction of the
weight-bandwidth floor (B tokens per step moving the weight and state bytes once at the copy bandwidth measured in
the run, as ``benchmarks/decode.py`` counts it).
Writes ``sweep.json`` and ``profile-fused-B1.txt``.

``--refine``: a second pass from the defaults of ``FusedLaunches`` (the first pass's best): narrower column loads
for the wide products, the FFN output's neighbours, the retention step's launch (``retention_tuning(step_launch=
...)``), and batch 2 with fewer rows per program against the compiled default step. Writes ``refine.json``.
"""

import dataclasses
import itertools
import json
import os
import sys
import time
from pathlib import Path

import torch
import triton

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from decode import copy_bandwidth, weight_bytes  # noqa: E402

from retnet import RetNetConfig, RetNetForCausalLM  # noqa: E402
from retnet.generation import DecodeEngine, FusedLaunches  # noqa: E402
from retnet.ops.decode.launch import MatvecLaunch  # noqa: E402

STEPS = 300


def build(preset: str) -> RetNetForCausalLM:
    with torch.device("cuda"):
        model = RetNetForCausalLM(RetNetConfig.from_preset(preset))
    return model.to(torch.bfloat16).eval()


def tokens_per_s(model, B: int, **engine_args) -> tuple[float, DecodeEngine]:
    engine = DecodeEngine(model, max_batch=B, max_len=STEPS + 16, **engine_args)
    engine.add([[1, 2, 3]] * B, max_new_tokens=STEPS + 8)
    for _ in range(5):
        engine.step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(STEPS):
        engine.step()
    torch.cuda.synchronize()
    return B * STEPS / (time.perf_counter() - t0), engine


def floor_tokens_per_s(model, engine, bandwidth: float) -> float:
    """Tokens/s if a step only moved the weights and the state once at the copy bandwidth (B tokens a step)."""
    return engine.max_batch * bandwidth / (weight_bytes(model) + engine.state_bytes())


CANDIDATES = {
    "qkvg": [MatvecLaunch(r, c, w, 3) for r, c, w in itertools.product((2, 4, 8), (512, 1024, 2048), (4, 8))],
    "ffn_in": [MatvecLaunch(r, c, w, 3) for r, c, w in itertools.product((2, 4, 8), (512, 1024, 2048), (4, 8))],
    "output": [MatvecLaunch(r, 128, w, s) for r, w, s in itertools.product((2, 4, 8, 16), (4, 8), (1, 2))],
    "ffn_out": [MatvecLaunch(r, c, w, 2) for r, c, w in itertools.product((2, 4, 8), (256, 512, 1024), (4, 8))],
    "head": [MatvecLaunch(r, c, w, 3) for r, c, w in itertools.product((4, 8, 16), (1024, 2048), (4, 8))],
}
COMPILED = {"fused": False, "compile": True, "compile_options": {"coordinate_descent_tuning": True}}


REFINE = {
    "qkvg": [MatvecLaunch(r, c, 4, 3) for r, c in itertools.product((4, 8, 16), (128, 256))],
    "ffn_in": [MatvecLaunch(r, c, 4, 3) for r, c in itertools.product((2, 4), (128, 256))],
    "ffn_out": [MatvecLaunch(r, c, w, 2) for r, c, w in itertools.product((2, 4), (1024, 2048), (4, 8))],
}
STEP_LAUNCHES = [(bv, w) for bv in (16, 32, 64) for w in (2, 4)]


def refine(out: Path) -> None:
    from retnet.ops.retention.triton.tuning import retention_tuning

    bandwidth = copy_bandwidth(torch.device("cuda"))
    meta = {"torch": torch.__version__, "triton": triton.__version__, "argv": sys.argv,
            "gpu": torch.cuda.get_device_name(), "copy_bandwidth_bytes_per_s": bandwidth}  # fmt: skip
    results = {"meta": meta, "rows": []}
    model = build("1.3b")

    def record(name: str, value: float, engine, **extra) -> None:
        floor = floor_tokens_per_s(model, engine, bandwidth)
        results["rows"].append({"name": name, "tokens_per_s": value, "fraction_of_floor": value / floor, **extra})
        print(f"{name:40s} {value:9.1f} tokens/s  {value / floor:6.1%} of floor {extra}", flush=True)
        (out / "refine.json").write_text(json.dumps(results, indent=1))

    best = FusedLaunches()
    value, engine = tokens_per_s(model, 1, fused=True)
    record("B1 fused, defaults", value, engine)
    best_value = value
    for product, candidates in REFINE.items():
        for launch in candidates:
            trial = dataclasses.replace(best, **{product: launch})
            value, engine = tokens_per_s(model, 1, fused=trial)
            record(f"refine {product}", value, engine, launch=dataclasses.asdict(launch))
            if value > best_value:
                best, best_value = trial, value
    for bv, warps in STEP_LAUNCHES:
        with retention_tuning(step_launch=(bv, warps)):
            value, engine = tokens_per_s(model, 1, fused=best)
        record("refine step", value, engine, step_launch=[bv, warps])
    results["best_launches"] = dataclasses.asdict(best)
    for B, rows in ((2, 2), (2, 4), (2, 8)):
        fewer = [getattr(best, f.name) for f in dataclasses.fields(best)]
        trial = FusedLaunches(*(dataclasses.replace(launch, rows=max(2, launch.rows // rows)) for launch in fewer))
        value, engine = tokens_per_s(model, B, fused=trial)
        record(f"B{B} fused, rows / {rows}", value, engine, launches=dataclasses.asdict(trial))
    value, engine = tokens_per_s(model, 2, fused=best)
    record("B2 fused, best", value, engine)
    value, engine = tokens_per_s(model, 2, **COMPILED)
    record("B2 default step, compiled (coordinate descent)", value, engine)


def main() -> None:
    out = Path(os.environ.get("OUT", "."))
    if "--refine" in sys.argv:
        return refine(out)
    quick = "--quick" in sys.argv
    bandwidth = copy_bandwidth(torch.device("cuda"))
    results = {
        "meta": {"torch": torch.__version__, "triton": triton.__version__, "gpu": torch.cuda.get_device_name(),
                 "argv": sys.argv, "copy_bandwidth_bytes_per_s": bandwidth, "steps": STEPS},
        "rows": [],
    }  # fmt: skip

    def record(name: str, value: float, floor: float, **extra) -> None:
        row = {"name": name, "tokens_per_s": value, "fraction_of_floor": value / floor, **extra}
        results["rows"].append(row)
        print(f"{name:48s} {value:9.1f} tokens/s  {value / floor:6.1%} of floor {extra}", flush=True)
        (out / "sweep.json").write_text(json.dumps(results, indent=1))

    model = build("1.3b")
    value, engine = tokens_per_s(model, 1, fused=True)
    floor = floor_tokens_per_s(model, engine, bandwidth)
    results["meta"]["floor_1.3b_B1"] = floor
    record("1.3b B1 fused, default launches", value, floor)
    del engine
    if not quick:
        for B in (1, 2, 4):
            value, engine = tokens_per_s(model, B, **COMPILED)
            record(f"1.3b B{B} default step, compiled (coordinate descent)", value, floor * B)
            del engine
    best = FusedLaunches()
    best_value = results["rows"][0]["tokens_per_s"]
    torch._dynamo.reset()
    for product, candidates in CANDIDATES.items():
        for launch in candidates[: 2 if quick else None]:
            trial = dataclasses.replace(best, **{product: launch})
            try:
                value, engine = tokens_per_s(model, 1, fused=trial)
                del engine
            except Exception as e:  # noqa: BLE001 - a launch the compiler refuses is recorded, not fatal
                results["rows"].append({"name": f"sweep {product}", "launch": dataclasses.asdict(launch),
                                        "error": repr(e)[:300]})  # fmt: skip
                continue
            record(f"sweep {product}", value, floor, launch=dataclasses.asdict(launch))
            if value > best_value:
                best, best_value = trial, value
    results["best_launches"] = dataclasses.asdict(best)
    print("best launches", results["best_launches"], flush=True)
    for B in (1, 2, 4):
        value, engine = tokens_per_s(model, B, fused=best)
        record(f"1.3b B{B} fused, best launches", value, floor_tokens_per_s(model, engine, bandwidth))
        if B == 1:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(20):
                    engine.step()
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=30)
            (out / "profile-fused-B1.txt").write_text(f"# 20 graph replays at batch 1, 1.3b\n\n{table}\n")
        del engine
    del model
    torch.cuda.empty_cache()
    if not quick:
        model = build("6.7b")
        value, engine = tokens_per_s(model, 1, fused=best)
        floor = floor_tokens_per_s(model, engine, bandwidth)
        record("6.7b B1 fused, best launches", value, floor)
        del engine
        value, engine = tokens_per_s(model, 1, **COMPILED)
        record("6.7b B1 default step, compiled (coordinate descent)", value, floor)


if __name__ == "__main__":
    main()
