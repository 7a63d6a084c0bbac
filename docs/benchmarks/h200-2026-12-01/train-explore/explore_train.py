"""One retnet training row (benchmarks/train.py's timing) under one variant.

``OUT=dir python explore_train.py VARIANT T TOKENS`` from the repository root; VARIANT joins with "+" any of
``mem<budget>`` (activation_memory_budget), ``keep`` (the forward keeps its per-chunk states), ``chunk128``."""

import argparse
import contextlib
import importlib
import json
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
import train as btrain

from retnet.ops.retention.triton import retention_tuning

tn = importlib.import_module("retnet.ops.retention.triton.tuning")

variant, T, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = contextlib.nullcontext()
budget = 1.0
for part in variant.split("+"):
    if part.startswith("mem"):
        budget = float(part[3:])
    if part == "keep":
        ctx = retention_tuning(keep_states="always")
if variant.startswith("chunk128"):
    tn.CHUNK = 128
    if variant == "chunk128mix":
        ctx = retention_tuning(
            blocks={"output_fwd": (64, 64, 8, 2), "dqk_bwd": (64, 64, 8, 2), "dv_bwd": (64, 64, 8, 2)}
        )
args = argparse.Namespace(
    activation_memory_budget=budget,
    preset="1.3b",
    precision="bf16",
    activation_checkpointing="none",
    warmup=3,
    steps=6,
    profile="retnet" if variant.endswith("prof") else None,
    compile_cpu=False,
)
device = torch.device("cuda")
cfg = btrain.retnet_config("1.3b")
with ctx:
    row = btrain.time_training("retnet", cfg, T, tokens, args, device)
row["variant"] = variant
prof = row.pop("profile", None)
print(json.dumps(row), flush=True)
with open(os.path.join(os.environ["OUT"], "train_rows.jsonl"), "a") as f:
    f.write(json.dumps(row) + "\n")
if prof:
    with open(os.path.join(os.environ["OUT"], f"profile-{variant}-T{T}.json"), "w") as f:
        json.dump(prof, f, indent=1)
