"""MQAR calibration of the medium preset's task models (the runs of this folder), on a GPU.

``python calibrate_mqar.py probe ARCH LR STEPS VOCAB OUTFILE``: ``train_on_task`` as the probes call it (the
preset's grid, 64 examples per step, 5 % warm-up and decay over STEPS), then validation accuracy (256 examples per
setting) into OUTFILE as JSON. The ``<arch>-<lr>-<vocab>-<steps>.log`` and ``*.json`` files: six at once, 290 s
each at most.

``python calibrate_mqar.py loop ARCH LR STEPS VOCAB BATCH COMPILE SECONDS TAG``: the same step in a loop that
prints the loss and the time per step every 250 steps (examples drawn in the loop, no prefetch), stops after
SECONDS, then scores 128 validation examples per setting. COMPILE 1 compiles each block. ``e64``/``c64``/``c256``/
``c256b``.log: four at once.
"""

import json
import sys
import time

import torch

from retnet.compare import load_compare_config
from retnet.compare.archs import build_model
from retnet.compare.mqar import evaluate_mqar, mqar_batches
from retnet.compare.probes import _task_optim, task_models
from retnet.compare.task_training import VALIDATION, autocast, train_on_task
from retnet.training.optim import build_optimizer
from retnet.training.schedule import lr_at


def setup(arch: str, steps: int, vocab: int):
    config = load_compare_config("medium", None, [f"--probes.mqar_vocab_size={vocab}", f"--probes.mqar_steps={steps}"])
    torch.manual_seed(0)
    model = build_model(task_models(config, vocab)[arch].config).cuda()
    return config, model, config.probes.mqar_tasks()


def score(config, model, tasks, vocab: int, examples: int) -> dict:
    numerics = dict(precision=config.precision, form=config.form, chunk_size=config.chunk_size)
    rows = evaluate_mqar(model, tasks, vocab_size=vocab, examples=examples, split=VALIDATION, **numerics)
    return {f"{r['seq_len']}x{r['num_pairs']}": round(r["accuracy"], 3) for r in rows}


def probe(arch: str, lr: float, steps: int, vocab: int, outfile: str) -> None:
    config, model, tasks = setup(arch, steps, vocab)
    start = time.time()
    draw = mqar_batches(tasks, batch_size=config.probes.mqar_batch_size, vocab_size=vocab, seed=0)

    def batches(step):
        if step % 1000 == 0:
            print(f"step {step} {time.time() - start:.0f}s", flush=True)
        return draw(step)

    out = train_on_task(model, batches, steps=steps, optim=_task_optim(config, "mqar", lr),
                        log_every=max(1, steps // 40), precision=config.precision, form=config.form,
                        chunk_size=config.chunk_size)  # fmt: skip
    wall = time.time() - start
    res = {"arch": arch, "lr": lr, "steps": steps, "V": vocab, "wall": wall, "ms_per_step": 1e3 * wall / steps,
           "curve": [(q["step"], round(q["loss"], 3)) for q in out["loss_curve"]],
           "acc": score(config, model, tasks, vocab, 256)}  # fmt: skip
    with open(outfile, "w") as f:
        json.dump(res, f)
    print(arch, lr, vocab, f"{res['ms_per_step']:.1f} ms/step", res["curve"][-5:], res["acc"], flush=True)


def loop(arch: str, lr: float, steps: int, vocab: int, batch: int, compile: bool, seconds: float, tag: str) -> None:
    config, model, tasks = setup(arch, steps, vocab)
    if compile:
        for block in model.trunk.layers:
            block.compile(fullgraph=True)
    draw = mqar_batches(tasks, batch_size=batch, vocab_size=vocab, seed=0)
    optim = _task_optim(config, "mqar", lr)
    optimizer = build_optimizer(model, optim)
    start = last = time.time()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, optim)
        ids, targets = (x.cuda(non_blocking=True) for x in draw(step))
        with autocast(config.precision, ids.device):
            loss = model(ids, form=config.form, chunk_size=config.chunk_size, targets=targets, return_logits=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 250 == 0:
            now, pairs = time.time(), tasks[step % len(tasks)].num_pairs
            print(f"{tag} step {step + 1} loss {float(loss):.3f} (P={pairs}) {now - start:.0f}s "
                  f"{(now - last) / 250 * 1e3:.1f} ms/step", flush=True)  # fmt: skip
            last = now
            if now - start > seconds:
                break
    model.eval()
    print(tag, "ACC", score(config, model, tasks, vocab, 128), flush=True)


if __name__ == "__main__":
    mode, arch, lr, steps, vocab, *rest = sys.argv[1:]
    if mode == "probe":
        probe(arch, float(lr), int(steps), int(vocab), rest[0])
    else:
        batch, compile, seconds, tag = rest
        loop(arch, float(lr), int(steps), int(vocab), int(batch), compile == "1", float(seconds), tag)
