"""Shared by the schedule options: linear warm-up, then step decay or a cosine to zero."""

from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, MultiStepLR, SequentialLR

from lazydet.config import L, ref


def _after_warmup(warmup_iters: int, then: dict) -> dict:
    """The ``then`` scheduler node, preceded by a linear warm-up from 0.1% of the lr up to the lr
    in ``warmup_iters`` iterations (Detectron2's default factor)."""
    warmup = L(LinearLR)(optimizer=ref("optimizer"), start_factor=0.001, total_iters=warmup_iters)
    return L(SequentialLR)(
        optimizer=ref("optimizer"), schedulers=[warmup, then], milestones=[warmup_iters]
    )


def warmup_then_steps(*, max_iter: int, steps: list[int], warmup_iters: int = 1000) -> dict:
    """A schedule: ``max_iter`` and an ``lr_scheduler`` node stepped once per iteration; the lr
    drops by 10x at each of ``steps`` (absolute iterations, after the warm-up)."""
    if not 0 < warmup_iters < min([*steps, max_iter]):
        raise ValueError(
            f"warmup_iters={warmup_iters} must be positive and end before the first step "
            f"({steps}) and max_iter={max_iter}."
        )
    if sorted(steps) != list(steps) or steps[-1] >= max_iter:
        raise ValueError(f"steps={steps} must increase and stay below max_iter={max_iter}.")
    return dict(
        max_iter=max_iter,
        lr_scheduler=_after_warmup(
            warmup_iters,
            # MultiStepLR counts from the end of the warm-up inside SequentialLR.
            L(MultiStepLR)(
                optimizer=ref("optimizer"), milestones=[s - warmup_iters for s in steps], gamma=0.1
            ),
        ),
    )


def warmup_then_cosine(*, max_iter: int, warmup_iters: int = 1000) -> dict:
    """A schedule: linear warm-up, then a half cosine from the lr down to 0 at ``max_iter``."""
    if not 0 < warmup_iters < max_iter:
        raise ValueError(
            f"warmup_iters={warmup_iters} must be positive and below max_iter={max_iter}."
        )
    return dict(
        max_iter=max_iter,
        lr_scheduler=_after_warmup(
            warmup_iters,
            L(CosineAnnealingLR)(
                optimizer=ref("optimizer"), T_max=max_iter - warmup_iters, eta_min=0.0
            ),
        ),
    )
