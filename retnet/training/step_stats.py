"""A training step's update decided on the device, and its numbers read back without stalling the GPU.

Reading the loss and the gradient norm on the host right after the backward pass makes the GPU wait twice per step
for the host to launch what follows. The trainer instead decides on the device whether a step's update is taken
(loss and gradient norm finite: :func:`step_where`) and copies the loss, the norm and that decision to the host
asynchronously (:class:`StepStats`); it reads them one step later, while the next step runs, or at once where it
needs them (logging, evaluation, checkpoints). See docs/training.md, "Checkpoints, resume and failures".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def step_where(optimizer: torch.optim.Optimizer, take: torch.Tensor) -> None:
    """``optimizer.step()`` where the 0-d bool tensor ``take`` is true, else nothing (parameters, moments and step
    counts unchanged).

    A fused optimizer decides on the device: its kernel skips the update when the ``found_inf`` it is handed (the
    protocol of ``torch.amp.GradScaler``) is non-zero. Any other optimizer reads ``take`` on the host.
    """
    if all(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = (~take).float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif bool(take):
        optimizer.step()


def step_if_finite(optimizer: torch.optim.Optimizer, loss: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """The update of a step whose loss and gradient norm (0-d tensors) are finite (:func:`step_where`); returns
    whether it was taken (a 0-d bool tensor, on the device)."""
    taken = torch.isfinite(loss) & torch.isfinite(norm)
    step_where(optimizer, taken)
    return taken


@dataclass(frozen=True)
class StepStats:
    """Step ``step``'s loss, gradient norm and whether its update was taken, on their way to the host."""

    step: int
    values: torch.Tensor  # (3,) float64 on the host: loss, gradient norm, 1.0 where the update was taken
    ready: torch.cuda.Event | None  # recorded after the copy (None: the values are already on the host)

    @classmethod
    def start(cls, step: int, loss: torch.Tensor, norm: torch.Tensor, taken: torch.Tensor) -> StepStats:
        """Start the copy of three 0-d tensors to the host (asynchronous from a GPU)."""
        values = torch.stack([loss.double(), norm.double(), taken.double()])
        if not values.is_cuda:
            return cls(step, values, None)
        host = torch.empty(3, dtype=torch.float64, pin_memory=True)
        host.copy_(values, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return cls(step, host, ready)

    def read(self) -> tuple[float, float, bool]:
        """``(loss, norm, taken)``, waiting for the copy if it has not arrived."""
        if self.ready is not None:
            self.ready.synchronize()
        loss, norm, taken = self.values.tolist()
        return loss, norm, taken == 1.0
