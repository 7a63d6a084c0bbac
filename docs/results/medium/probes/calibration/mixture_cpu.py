"""Does the training mixture decide the MQAR plateau? A CPU check (``mixture-*.log``), one thread per run.

``python mixture_cpu.py MIX VOCAB STEPS LR ARCH``: the medium preset's task model trained with ``train_on_task``
(fp32, 64 examples per step, 5 % warm-up and decay over STEPS) on T = 64 with 4, 8 and 16 pairs, either cycling
the three settings (``uniform``) or spending two thirds of the steps on 4 pairs (``easy``, as Zoology's training
mixtures weight the smallest setting), then validation accuracy on the three settings (128 examples each).
"""

import sys
import time

import torch

from retnet.compare import load_compare_config
from retnet.compare.archs import build_model
from retnet.compare.mqar import MQARTask, evaluate_mqar, mqar_batches
from retnet.compare.probes import _task_optim, task_models
from retnet.compare.task_training import VALIDATION, train_on_task

if __name__ == "__main__":
    torch.set_num_threads(1)
    mix, vocab, steps, lr, arch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    overrides = [f"--probes.mqar_vocab_size={vocab}", f"--probes.mqar_steps={steps}", "--precision=fp32"]
    config = load_compare_config("medium", None, overrides)
    torch.manual_seed(0)
    model = build_model(task_models(config, vocab)[arch].config)
    grid = [MQARTask(64, 4), MQARTask(64, 8), MQARTask(64, 16)]
    train = grid if mix == "uniform" else [MQARTask(64, 4)] * 4 + grid[1:]
    start = time.time()
    batches = mqar_batches(train, batch_size=64, vocab_size=vocab, seed=0)
    out = train_on_task(model, batches, steps=steps, optim=_task_optim(config, "mqar", lr), log_every=100,
                        precision="fp32")  # fmt: skip
    acc = evaluate_mqar(model, grid, vocab_size=vocab, examples=128, split=VALIDATION)
    losses = [round(p["loss"], 2) for p in out["loss_curve"]][-6:]
    print(mix, vocab, steps, lr, arch, f"{time.time() - start:.0f}s", losses, [round(r["accuracy"], 3) for r in acc])
