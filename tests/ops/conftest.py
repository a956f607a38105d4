"""Run lazydet's Triton kernels in Triton's interpreter for the ops tests (no GPU needed).

The variable must be set before Triton compiles anything, hence at import time of this conftest;
``setdefault`` leaves an explicit ``TRITON_INTERPRET=0`` (e.g. on a GPU runner) alone.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
