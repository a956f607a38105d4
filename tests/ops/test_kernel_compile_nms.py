"""Compile the NMS kernels for sm_80 and sm_90 without a GPU.

The interpreter accepts code the compiler rejects, so every kernel is also compiled to PTX and,
with the ptxas that Triton ships, to a cubin. Under TRITON_INTERPRET=1 (which tests/ops/conftest.py
sets) ``@triton.jit`` yields interpreter objects that cannot be compiled, so the compilation runs in
a subprocess with the variable removed. The PTX is also checked for the two properties the IoU
comparison relies on: a correctly rounded division and no fused multiply-add.
"""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

_COMPILE_SCRIPT = """
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from lazydet.kernels import nms

report = {}
for kernel, signature, constexprs, options in nms.compile_specs():
    for arch in (80, 90):
        source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
        ptx = compiled.asm["ptx"]
        report[f"{kernel.__name__}/sm_{arch}"] = {
            "cubin_bytes": len(compiled.asm.get("cubin", b"")),
            "div_rn": "div.rn.f32" in ptx,
            "fma": "fma.rn.f32" in ptx,
            "barrier": "bar.sync" in ptx or "barrier.sync" in ptx,
        }
json.dump(report, sys.stdout)
"""


@pytest.fixture(scope="module")
def compile_report(run_compile_script) -> dict[str, dict[str, object]]:
    return run_compile_script(_COMPILE_SCRIPT)


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("kernel", ["_iou_mask_kernel", "_keep_reduction_kernel"])
def test_kernel_compiles_to_cubin(compile_report, kernel, arch):
    assert compile_report[f"{kernel}/sm_{arch}"]["cubin_bytes"] > 0


@pytest.mark.parametrize("arch", [80, 90])
def test_iou_uses_rounded_division_without_fma(compile_report, arch):
    entry = compile_report[f"_iou_mask_kernel/sm_{arch}"]
    assert entry["div_rn"], "IoU must use a correctly rounded division (tl.div_rn)"
    assert not entry["fma"], "IoU must not fuse multiply-adds (enable_fp_fusion=False)"


@pytest.mark.parametrize("arch", [80, 90])
def test_reduction_synchronises_its_threads(compile_report, arch):
    assert compile_report[f"_keep_reduction_kernel/sm_{arch}"]["barrier"]
