"""MQAR on one setting with the task model's embedding and head varied (``tie-*.log``; CPU).

``[SCHEDULE=constant] [SCALE=1] [EMBED_STD=S] python tie_cpu.py VOCAB STEPS LR ARCH PAIRS TIE``: the medium
preset's task model of ARCH (TIE 1: with ``tie_word_embeddings``; SCALE 1: with ``scale_embedding``, the embeddings
multiplied by √d; EMBED_STD: its token embeddings drawn again from N(0, S²) after the model's own initialisation)
trained with ``train_on_task`` (fp32, 64 examples per step, the probes' warm-up and decay over STEPS, or a constant
rate after the warm-up) on T = 64 with PAIRS pairs alone; validation accuracy (256 examples) printed every 200 steps.
"""

import dataclasses
import os
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
    vocab, steps, lr, arch, pairs, tie = sys.argv[1:7]
    vocab, steps, lr, pairs, tie = int(vocab), int(steps), float(lr), int(pairs), tie == "1"
    overrides = [f"--probes.mqar_vocab_size={vocab}", f"--probes.mqar_steps={steps}", "--precision=fp32"]
    overrides.append(f"--optim.schedule={os.environ.get('SCHEDULE', 'linear')}")
    config = load_compare_config("medium", None, overrides)
    torch.manual_seed(0)
    model_config = dataclasses.replace(
        task_models(config, vocab)[arch].config, tie_word_embeddings=tie, scale_embedding=os.environ.get("SCALE") == "1"
    )
    model = build_model(model_config)
    if "EMBED_STD" in os.environ:
        torch.nn.init.normal_(model.trunk.embed_tokens.weight, std=float(os.environ["EMBED_STD"]))
    tasks, start, step = [MQARTask(64, pairs)], time.time(), [0]

    def report() -> bool:
        step[0] += 200
        model.eval()
        (row,) = evaluate_mqar(model, tasks, vocab_size=vocab, examples=256, batch_size=64, split=VALIDATION,
                               precision="fp32")  # fmt: skip
        model.train()
        scaled = int(model_config.scale_embedding)
        print(f"{arch} V {vocab} lr {lr:g} {config.optim.schedule} P {pairs} tied {int(tie)} scaled {scaled} "
              f"embed_std {os.environ.get('EMBED_STD', '-')} step {step[0]} accuracy {row['accuracy']:.3f} "
              f"{time.time() - start:.0f}s", flush=True)  # fmt: skip
        return False

    batches = mqar_batches(tasks, batch_size=64, vocab_size=vocab, seed=0)
    train_on_task(model, batches, steps=steps, optim=_task_optim(config, "mqar", lr), log_every=100,
                  precision="fp32", stop=report, check_every=200)  # fmt: skip
