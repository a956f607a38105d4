"""Choice between lazydet's Triton kernels and torchvision's ops.

``auto`` (the default) runs the Triton kernel when the input tensors are on CUDA and torchvision's
op otherwise. ``triton`` forces the kernel everywhere: on CPU tensors that only works under
Triton's interpreter (``TRITON_INTERPRET=1``), which is how CI tests the kernels without a GPU.
``torchvision`` forces the reference ops, also on CUDA, so benchmarks and tests can compare both.

Set it for a process with the environment variable ``LAZYDET_OPS_BACKEND`` or for a block with::

    with lazydet.ops.use_backend("torchvision"):
        ...
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

BACKENDS = ("auto", "triton", "torchvision")
ENV_VAR = "LAZYDET_OPS_BACKEND"

_local = threading.local()


def _check(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(
            f"{source}={name!r} is not an ops backend; use one of {', '.join(BACKENDS)}."
        )
    return name


def current_backend() -> str:
    """The backend in force: the innermost ``use_backend`` block, else the environment variable."""
    forced = getattr(_local, "backend", None)
    if forced is not None:
        return forced
    return _check(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto", ENV_VAR)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force ``name`` ("auto", "triton" or "torchvision") for the ops called inside the block."""
    _check(name, "use_backend(name)")
    previous = getattr(_local, "backend", None)
    _local.backend = name
    try:
        yield
    finally:
        _local.backend = previous


def triton_interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether an op on ``tensors`` should run lazydet's Triton kernel.

    Raises when the Triton backend is forced on CPU tensors without the interpreter, since the
    kernel cannot run there and a silent fallback would hide what the user asked for.
    """
    backend = current_backend()
    if backend == "torchvision":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    if backend == "auto":
        return on_cuda
    if not on_cuda and not triton_interpreter_enabled():
        raise RuntimeError(
            "The Triton ops backend was forced on CPU tensors; set TRITON_INTERPRET=1 to run the "
            f"kernels in Triton's interpreter, or set {ENV_VAR}=auto to use torchvision on CPU."
        )
    return True
