"""MQAR on one setting alone, with accuracy by the queried pair's place in the context (``single-*.log``; CPU).

``python single_setting_cpu.py VOCAB STEPS LR ARCH PAIRS``: the medium preset's task model trained with
``train_on_task`` (fp32, 64 examples per step) on T = 64 with PAIRS pairs only, then scored on 512 validation
examples: overall, and per index of the queried pair among the context's pairs (a model that recalls only the
first or the last pairs would show it there).
"""

import sys
import time

import numpy as np
import torch

from retnet.compare import load_compare_config
from retnet.compare.archs import build_model
from retnet.compare.mqar import MQARTask, make_mqar, mqar_batches
from retnet.compare.probes import _task_optim, task_models
from retnet.compare.task_training import VALIDATION, train_on_task

if __name__ == "__main__":
    torch.set_num_threads(1)
    vocab, steps, lr, arch, pairs = sys.argv[1:6]
    vocab, steps, lr, pairs = int(vocab), int(steps), float(lr), int(pairs)
    overrides = [f"--probes.mqar_vocab_size={vocab}", f"--probes.mqar_steps={steps}", "--precision=fp32"]
    config = load_compare_config("medium", None, overrides)
    torch.manual_seed(0)
    model = build_model(task_models(config, vocab)[arch].config)
    start = time.time()
    batches = mqar_batches([MQARTask(64, pairs)], batch_size=64, vocab_size=vocab, seed=0)
    out = train_on_task(model, batches, steps=steps, optim=_task_optim(config, "mqar", lr), log_every=100,
                        precision="fp32")  # fmt: skip
    model.eval()
    data = make_mqar(512, seq_len=64, num_pairs=pairs, vocab_size=vocab, seed=[0, VALIDATION, 64, pairs, 0])
    with torch.no_grad():
        predicted = model(data.input_ids).logits.argmax(-1)  # (N, T)
    scored = data.targets != -100
    hit = (predicted == data.targets) & scored
    ids = data.input_ids.numpy()
    by_pair, count = np.zeros(pairs), np.zeros(pairs)
    for n, p in np.argwhere(scored.numpy()):
        index = list(ids[n, 0 : 2 * pairs : 2]).index(ids[n, p])  # the queried key's pair in the context
        by_pair[index] += hit[n, p].item()
        count[index] += 1
    losses = [round(q["loss"], 2) for q in out["loss_curve"]][::5]
    accuracy = round(hit.sum().item() / scored.sum().item(), 3)
    print(arch, vocab, steps, lr, pairs, f"{time.time() - start:.0f}s", losses, "acc", accuracy, "by pair",
          np.round(by_pair / count, 2).tolist())  # fmt: skip
