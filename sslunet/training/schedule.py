"""Learning-rate schedule as a pure function of the global step (nothing to checkpoint)."""

from __future__ import annotations


def learning_rate(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0,
                  exponent: float = 0.9) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then polynomial decay to 0.

    Poly decay is nnU-Net's ``lr * (1 - t/T)^0.9``; after a warm-up it runs over the remaining
    steps (nnU-Net's PretrainedTrainer does the same with its offset poly scheduler).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(max(0, step - warmup_steps), span)
    return base_lr * (1 - t / span) ** exponent
