"""The next-token loss: plain against F.cross_entropy, labels against targets, the fused path on the GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.model.loss import IGNORE_INDEX, fused_loss_available, next_token_loss


def _inputs(N=37, D=16, vocab=50, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(N, D, generator=g, dtype=dtype).to(device).requires_grad_()
    weight = torch.randn(vocab, D, generator=g, dtype=dtype).to(device).requires_grad_()
    targets = torch.randint(0, vocab, (N,), generator=g).to(device)
    targets[::5] = IGNORE_INDEX
    return hidden, weight, targets


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_plain_is_cross_entropy_of_the_head(reduction):
    hidden, weight, targets = _inputs()
    loss = next_token_loss(hidden, weight, targets, reduction=reduction, impl="plain")
    kept = targets != IGNORE_INDEX
    log_p = torch.log_softmax(hidden @ weight.T, dim=-1)[kept]  # (n, vocab), by hand
    expected = -log_p.gather(1, targets[kept, None]).squeeze(1)
    expected = expected.mean() if reduction == "mean" else expected.sum()
    torch.testing.assert_close(loss, expected.float(), rtol=1e-6, atol=0)


def test_bad_arguments_are_refused():
    hidden, weight, targets = _inputs()
    with pytest.raises(ValueError, match="loss impl must be one of"):
        next_token_loss(hidden, weight, targets, impl="liger")
    with pytest.raises(ValueError, match="loss reduction must be one of"):
        next_token_loss(hidden, weight, targets, reduction="none")
    with pytest.raises(ValueError, match=r"hidden must be \(N, D\) and targets \(N,\)"):
        next_token_loss(hidden, weight, targets[:-1])
    with pytest.raises(ValueError, match="loss impl 'fused' needs CUDA"):
        next_token_loss(hidden, weight, targets, impl="fused")  # CPU tensors: the fused path cannot run


def test_labels_and_targets_give_the_same_loss_and_no_logits_when_asked():
    model = RetNetForCausalLM(RetNetConfig.from_preset("debug")).double()
    ids = torch.randint(0, 256, (2, 19))
    by_labels = model(ids, labels=ids)
    targets = torch.cat([ids[:, 1:], torch.full((2, 1), IGNORE_INDEX)], dim=1)
    by_targets = model(ids, targets=targets, return_logits=False)
    assert by_targets.logits is None
    torch.testing.assert_close(by_targets.loss, by_labels.loss, rtol=1e-12, atol=0)
    plain = F.cross_entropy(by_labels.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(by_labels.loss, plain.float(), rtol=1e-6, atol=0)
    summed = model(ids, targets=targets, loss_reduction="sum", return_logits=False).loss
    torch.testing.assert_close(summed, by_labels.loss * (2 * 18), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="not both"):
        model(ids, labels=ids, targets=targets)
    with pytest.raises(ValueError, match="return_logits=False needs labels or targets"):
        model(ids, return_logits=False)
    with pytest.raises(ValueError, match="targets must have the shape of input_ids"):
        model(ids, targets=targets[:, :-1])


@pytest.mark.gpu
@pytest.mark.parametrize("autocast", [False, True], ids=["bf16-params", "fp32-params-autocast"])
def test_fused_matches_plain_on_the_gpu(autocast):
    if not fused_loss_available(torch.zeros(1, device="cuda", dtype=torch.bfloat16)):
        pytest.skip("liger-kernel is not installed")
    dtype = torch.float32 if autocast else torch.bfloat16
    hidden, weight, targets = _inputs(N=4096, D=512, vocab=32000, dtype=dtype, device="cuda")
    ref64 = next_token_loss(hidden.double(), weight.double(), targets, impl="plain")
    results = {}
    for impl in ("plain", "fused"):
        h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = next_token_loss(h, w, targets, impl=impl)
        loss.backward()
        results[impl] = (loss.detach(), h.grad.float(), w.grad.float())
    (lp, hp, wp), (lf, hf, wf) = results["plain"], results["fused"]
    # The fused loss's error against float64 stays within twice the plain low-precision path's error.
    assert abs(lf.double() - ref64.double()) <= 2 * abs(lp.double() - ref64.double()) + 1e-3
    for fused, plain in ((hf, hp), (wf, wp)):
        rel = (fused - plain).norm() / plain.norm()
        assert rel < 2e-2, f"gradient RMS-relative error {rel:.2e}"
