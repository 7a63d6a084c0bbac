"""The fused decode step with and without programmatic dependent launch, and its launches re-swept with it.

``OUT=dir python docs/benchmarks/h200-2026-12-03/fused-step/dependent_launch.py [--layout-only]`` from the
repository root, on a GPU of compute capability ≥ 9.0. At the ``1.3b`` preset (bf16 weights, engine with a CUDA
graph), batch 1: the fused step with ``FusedLaunches(dependent=False)`` and ``dependent=True``, alternated three
times; then a coordinate sweep of each product's launch with dependent launch on (the others at their best so far);
the best launches at batches 1 and 2 with a per-kernel profile at batch 1; the 6.7B preset at batch 1 with and
without. Tokens/s also as a fraction of the weight-bandwidth floor (``sweep_fused.py``'s count).
Writes ``dependent.json`` and ``profile-dependent-B1.txt``.

``--second-pass``: from the first pass's best launches (its ``dependent.json``): a few more program shapes around
the best, the retention step's launch, then the best at batches 1 and 2 and at 6.7B; writes ``second-pass.json``
and ``profile-second-pass-B1.txt``. (The committed ``second-pass.json`` also has rows ``prefetch …`` first: an L2
prefetch of each program's next columns before the wait, which gained nothing beyond noise and was removed.)

``--batches``: the fused step with its defaults against the default step compiled with coordinate-descent tuning
(the faster default step) at batches 1, 2 and 4; writes ``batches.json``.

``--layout-only``: batch 1 at 1.3B with the default launches and dependent launch off, then a few launches of the
output projection (for another kernel layout: run from a checkout of it); writes ``layout.json``.
"""

import contextlib
import dataclasses
import itertools
import json
import os
import sys
from pathlib import Path

import torch
import triton

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sweep_fused import build, copy_bandwidth, floor_tokens_per_s, tokens_per_s  # noqa: E402

from retnet.generation import FusedLaunches  # noqa: E402
from retnet.ops.decode.launch import MatvecLaunch  # noqa: E402

CANDIDATES = {
    "qkvg": [MatvecLaunch(r, c, 4, 3) for r, c in itertools.product((4, 8, 16), (256, 512, 1024))],
    "ffn_in": [MatvecLaunch(r, c, 4, 3) for r, c in itertools.product((2, 4, 8), (512, 1024))],
    "output": [MatvecLaunch(r, 128, w, s) for r, w, s in itertools.product((4, 8, 16), (4, 8), (1, 2))],
    "ffn_out": [MatvecLaunch(r, c, w, 2) for r, c, w in itertools.product((2, 4, 8), (512, 1024), (4, 8))],
    "head": [MatvecLaunch(r, c, 4, 3) for r, c in itertools.product((8, 16), (1024, 2048))],
}
SHAPES = {
    "qkvg": [(16, 128, 4), (32, 128, 4), (32, 256, 4), (16, 256, 8)],
    "ffn_in": [(8, 2048, 4), (16, 1024, 4), (16, 512, 4), (8, 1024, 8)],
    "output": [(8, 128, 8), (4, 128, 8), (16, 128, 16)],
    "ffn_out": [(4, 2048, 8), (2, 2048, 8), (4, 1024, 16), (8, 2048, 8)],
    "head": [(8, 1024, 8), (4, 1024, 4)],
}
STEP_LAUNCHES = [(bv, w) for bv in (16, 32, 64) for w in (2, 4)]
LAYOUT_OUTPUT = [MatvecLaunch(r, c, w, s) for r, c, w, s in itertools.product((2, 4, 8), (512, 1024), (4, 8), (2,))]


class Recorder:
    def __init__(self, path: Path):
        self.path = path
        bandwidth = copy_bandwidth(torch.device("cuda"))
        self.bandwidth = bandwidth
        self.results = {
            "meta": {"torch": torch.__version__, "triton": triton.__version__, "gpu": torch.cuda.get_device_name(),
                     "argv": sys.argv, "copy_bandwidth_bytes_per_s": bandwidth},
            "rows": [],
        }  # fmt: skip

    def run(self, name: str, model, B: int, launches: FusedLaunches, **extra) -> tuple[float, object]:
        value, engine = tokens_per_s(model, B, fused=launches)
        floor = floor_tokens_per_s(model, engine, self.bandwidth)
        row = {"name": name, "batch": B, "tokens_per_s": value, "fraction_of_floor": value / floor,
               "launches": dataclasses.asdict(launches), **extra}  # fmt: skip
        self.results["rows"].append(row)
        print(f"{name:44s} B{B} {value:9.1f} tokens/s  {value / floor:6.1%} of floor {extra}", flush=True)
        self.path.write_text(json.dumps(self.results, indent=1))
        return value, engine


def profile(engine, path: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            engine.step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=20)
    path.write_text(f"# 20 graph replays at batch 1, 1.3b, dependent launch\n\n{table}\n")


def best_with_and_without(rec: Recorder, model, best: FusedLaunches, profile_path: Path) -> None:
    """``best`` with and without dependent launch at batches 1 and 2 (profiling batch 1 with it), then at 6.7B."""
    for B in (1, 2):
        for dependent in (False, True):
            _, engine = rec.run(
                f"best, dependent {dependent}", model, B, dataclasses.replace(best, dependent=dependent)
            )
            if B == 1 and dependent:
                profile(engine, profile_path)
            del engine
    large = build("6.7b")  # beside the 1.3B weights, which the caller still holds (2.6 GB)
    for dependent in (False, True):
        rec.run(f"6.7b best, dependent {dependent}", large, 1, dataclasses.replace(best, dependent=dependent))


def second_pass(out: Path) -> None:
    from retnet.ops.retention.triton.tuning import retention_tuning

    first = json.loads((HERE / "dependent.json").read_text())["best_launches"]
    best = FusedLaunches(**{k: MatvecLaunch(**v) if isinstance(v, dict) else v for k, v in first.items()})
    rec = Recorder(out / "second-pass.json")
    model = build("1.3b")
    best_value = max(rec.run("first pass's best", model, 1, best)[0] for _ in range(2))

    def trial(name: str, launches: FusedLaunches, **extra) -> None:
        nonlocal best, best_value
        value, _ = rec.run(name, model, 1, launches, **extra)
        if value > best_value:
            best, best_value = launches, value

    for product, shapes in SHAPES.items():
        for rows, cols, warps in shapes:
            launch = dataclasses.replace(getattr(best, product), rows=rows, cols=cols, warps=warps)
            trial(f"shape {product}", dataclasses.replace(best, **{product: launch}), launch=dataclasses.asdict(launch))
    step = None
    for bv, warps in STEP_LAUNCHES:
        with retention_tuning(step_launch=(bv, warps)):
            value, _ = rec.run("retention step launch", model, 1, best, step_launch=[bv, warps])
        if value > best_value:
            step, best_value = (bv, warps), value
    rec.results["best_launches"] = dataclasses.asdict(best)
    rec.results["best_step_launch"] = step
    print("best launches", rec.results["best_launches"], "step launch", step, flush=True)
    with retention_tuning(step_launch=step) if step else contextlib.nullcontext():
        best_with_and_without(rec, model, best, out / "profile-second-pass-B1.txt")


def batches(out: Path) -> None:
    from sweep_fused import COMPILED

    rec = Recorder(out / "batches.json")
    model = build("1.3b")
    for B in (1, 2, 4):
        rec.run("fused, defaults", model, B, FusedLaunches())
        value, engine = tokens_per_s(model, B, **COMPILED)
        floor = floor_tokens_per_s(model, engine, rec.bandwidth)
        rec.results["rows"].append({"name": "default step, compiled", "batch": B, "tokens_per_s": value,
                                    "fraction_of_floor": value / floor})  # fmt: skip
        print(f"{'default step, compiled':44s} B{B} {value:9.1f} tokens/s  {value / floor:6.1%} of floor", flush=True)
        rec.path.write_text(json.dumps(rec.results, indent=1))
        del engine
        torch._dynamo.reset()


def layout_only(out: Path) -> None:
    rec = Recorder(out / "layout.json")
    model = build("1.3b")
    serial = {"dependent": False} if "dependent" in {f.name for f in dataclasses.fields(FusedLaunches)} else {}
    base = FusedLaunches(**serial)
    rec.run("defaults, serial", model, 1, base)
    for launch in LAYOUT_OUTPUT:
        rec.run("output", model, 1, dataclasses.replace(base, output=launch), launch=dataclasses.asdict(launch))


def main() -> None:
    out = Path(os.environ.get("OUT", "."))
    if "--layout-only" in sys.argv:
        return layout_only(out)
    if "--batches" in sys.argv:
        return batches(out)
    if "--second-pass" in sys.argv:
        return second_pass(out)
    rec = Recorder(out / "dependent.json")
    model = build("1.3b")
    for _ in range(3):
        for dependent in (False, True):
            rec.run(f"defaults, dependent {dependent}", model, 1, FusedLaunches(dependent=dependent))
    best = FusedLaunches(dependent=True)
    best_value = max(r["tokens_per_s"] for r in rec.results["rows"] if r["launches"]["dependent"])
    for product, candidates in CANDIDATES.items():
        for launch in candidates:
            trial = dataclasses.replace(best, **{product: launch})
            value, _ = rec.run(f"sweep {product}", model, 1, trial, launch=dataclasses.asdict(launch))
            if value > best_value:
                best, best_value = trial, value
    rec.results["best_launches"] = dataclasses.asdict(best)
    print("best launches", rec.results["best_launches"], flush=True)
    best_with_and_without(rec, model, best, out / "profile-dependent-B1.txt")


if __name__ == "__main__":
    main()
