"""Shared by the schedule options: linear warm-up, then step decay at the given iterations."""

from torch.optim.lr_scheduler import LinearLR, MultiStepLR, SequentialLR

from lazydet.config import L, ref


def warmup_then_steps(*, max_iter: int, steps: list[int], warmup_iters: int = 1000) -> dict:
    """A schedule: ``max_iter`` and an ``lr_scheduler`` node stepped once per iteration."""
    return dict(
        max_iter=max_iter,
        lr_scheduler=L(SequentialLR)(
            optimizer=ref("optimizer"),
            schedulers=[
                L(LinearLR)(
                    optimizer=ref("optimizer"), start_factor=0.001, total_iters=warmup_iters
                ),
                # MultiStepLR counts from the end of the warm-up inside SequentialLR.
                L(MultiStepLR)(
                    optimizer=ref("optimizer"),
                    milestones=[s - warmup_iters for s in steps],
                    gamma=0.1,
                ),
            ],
            milestones=[warmup_iters],
        ),
    )
