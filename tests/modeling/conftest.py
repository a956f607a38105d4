"""Fixtures shared by the model tests."""

from __future__ import annotations

import pytest
import torch
from helpers import compile_graph_breaks


@pytest.fixture
def capture_data_dependent_shapes():
    """Dynamo captures data-dependent output shapes and scalars (as the compile scripts set them)
    for one test; the flags and dynamo's caches are restored after it."""
    saved = (
        torch._dynamo.config.capture_dynamic_output_shape_ops,
        torch._dynamo.config.capture_scalar_outputs,
    )
    compile_graph_breaks().capture_data_dependent_shapes(True)
    yield
    (
        torch._dynamo.config.capture_dynamic_output_shape_ops,
        torch._dynamo.config.capture_scalar_outputs,
    ) = saved
    torch._dynamo.reset()
