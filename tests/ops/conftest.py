"""Shared set-up of the ops tests: where the Triton kernels run, and compiling them for GPUs.

Without a GPU the kernels run in Triton's interpreter. ``TRITON_INTERPRET`` must be set before
Triton is first imported, which tests/conftest.py does at the root; ``setdefault`` here covers
running this folder alone and leaves an explicit ``TRITON_INTERPRET=0`` (a GPU runner) alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

from lazydet.ops import backend


@pytest.fixture(scope="module")
def device() -> torch.device:
    """Where the kernel tests put their tensors: CPU under the interpreter, else CUDA."""
    if backend.triton_interpreter_enabled():
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    pytest.skip("Triton kernels need TRITON_INTERPRET=1 (tests/ops/conftest.py sets it) or CUDA")


@pytest.fixture(scope="module")
def run_compile_script(tmp_path_factory) -> Callable[[str], object]:
    """Run a script that compiles kernels with ``triton.compile`` and prints JSON; return it.

    The script runs in a subprocess without ``TRITON_INTERPRET`` (in the interpreter kernels are
    not JIT functions) and with a fresh Triton cache, so the kernels really compile and ptxas
    really runs. No GPU is needed: the target is given as a ``GPUTarget``.
    """

    def run(script: str) -> object:
        env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
        env["TRITON_CACHE_DIR"] = str(Path(tmp_path_factory.mktemp("triton_cache")))
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads(done.stdout)

    return run
