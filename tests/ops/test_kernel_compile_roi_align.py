"""Compile every ROIAlign kernel for sm_80 and sm_90 without a GPU (triton.compile + GPUTarget).

The interpreter accepts code that the compiler rejects (and runs exact IEEE math where compiled
code would not), so this checks the real lowering: each variant must produce PTX for the target
and a cubin (ptxas ships with Triton), use correctly rounded division/sqrt where the kernels rely
on it, and lower the backward scatter to float or int64 atomics as intended.

The compilation runs in a subprocess with TRITON_INTERPRET unset, since tests/ops/conftest.py sets
it for this process.
"""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

_COMPILE_SCRIPT = r"""
import json, re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from lazydet.kernels import roi_align as k

def signature(fn, pointers):
    types = {}
    for param in fn.params:
        name = param.name
        if param.is_constexpr:
            types[name] = "constexpr"
        elif name in pointers:
            types[name] = pointers[name]
        elif name.startswith(("scale", "canonical_box_size", "eps")):
            types[name] = "fp32"
        else:
            types[name] = "i32"
    return types

def levels(prefix, dtype):
    return {f"{prefix}{i}": dtype for i in range(k.MAX_LEVELS)}

def variants():
    for dtype, levels_n, size, sampling, aligned in [
        ("fp32", 1, (7, 7), 0, True),     # single level, adaptive grid
        ("fp16", 4, (7, 7), 2, False),    # fused FPN levels
        ("bf16", 4, (14, 14), 0, True),   # mask-head size
    ]:
        block_c, block_bins = k._tile(256, size)
        yield f"fwd-{dtype}-L{levels_n}-{size[0]}x{size[1]}", k.roi_align_fwd_kernel, {
            "out_ptr": f"*{dtype}", "rois_ptr": "*fp32", **levels("feat", f"*{dtype}")
        }, dict(NUM_LEVELS=levels_n, OUT_H=size[0], OUT_W=size[1], SAMPLING_RATIO=sampling,
                ALIGNED=aligned, BLOCK_C=block_c, BLOCK_BINS=block_bins)
    for deterministic, levels_n, grad_out in [(False, 4, "bf16"), (True, 1, "fp32"), (True, 4, "fp16")]:
        block_c, block_bins = k._tile(256, (7, 7))
        yield f"bwd-{'int64' if deterministic else 'fp32'}-L{levels_n}", k.roi_align_bwd_kernel, {
            "grad_out_ptr": f"*{grad_out}", "rois_ptr": "*fp32", "fixed_point_scale_ptr": "*fp32",
            **levels("grad", "*i64" if deterministic else "*fp32"),
        }, dict(NUM_LEVELS=levels_n, OUT_H=7, OUT_W=7, SAMPLING_RATIO=0, ALIGNED=True,
                DETERMINISTIC=deterministic, BLOCK_C=block_c, BLOCK_BINS=block_bins)
    yield "fpn-level", k.fpn_level_kernel, {"out_ptr": "*i32", "boxes_ptr": "*fp32"}, dict(BLOCK=128)

results = {}
for arch in (80, 90):
    for name, fn, pointers, constexprs in variants():
        source = ASTSource(fn, signature(fn, pointers), constexprs=constexprs)
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": 4})
        ptx = compiled.asm["ptx"]
        results[f"sm_{arch}/{name}"] = {
            "target": re.search(r"\.target\s+(\w+)", ptx).group(1),
            "cubin_bytes": len(compiled.asm.get("cubin", b"")),
            "ops": sorted(set(re.findall(r"\b(?:atom|red|div|sqrt)\.[\w.]+", ptx))),
        }
json.dump(results, sys.stdout)
"""


@pytest.fixture(scope="module")
def compiled(run_compile_script) -> dict:
    return run_compile_script(_COMPILE_SCRIPT)


def test_every_variant_compiles_to_cubin_for_both_targets(compiled):
    assert len(compiled) == 2 * 7
    for name, result in compiled.items():
        arch = name.split("/")[0]
        assert result["target"].startswith(arch), name  # sm_90 compiles as sm_90a
        assert result["cubin_bytes"] > 0, f"{name}: no cubin (ptxas failed?)"


def test_geometry_uses_correctly_rounded_division(compiled):
    """The adaptive ceil(roi / output) and the level formula need div.rn, not div.full/approx."""
    for name, result in compiled.items():
        divisions = [op for op in result["ops"] if op.startswith("div.")]
        assert divisions and all(op.startswith("div.rn.") for op in divisions), (name, divisions)


def test_level_choice_uses_correctly_rounded_sqrt(compiled):
    for arch in ("sm_80", "sm_90"):
        for name in (f"{arch}/fpn-level", f"{arch}/fwd-fp16-L4-7x7", f"{arch}/bwd-fp32-L4"):
            assert "sqrt.rn.f32" in compiled[name]["ops"], name
            assert not any(op.startswith("sqrt.approx") for op in compiled[name]["ops"]), name


def test_backward_atomics(compiled):
    for arch in ("sm_80", "sm_90"):
        floating = compiled[f"{arch}/bwd-fp32-L4"]["ops"]
        fixed = compiled[f"{arch}/bwd-int64-L1"]["ops"]
        assert any(op.startswith(("atom.", "red.")) and op.endswith("add.f32") for op in floating)
        assert any(op.startswith(("atom.", "red.")) and op.endswith("add.u64") for op in fixed)
        assert not any(op.endswith(".f32") for op in fixed if op.startswith(("atom.", "red.")))
