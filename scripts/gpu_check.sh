#!/usr/bin/env bash
# The GPU checks in one command (docs/deploy.md, "GPU check"), for a machine with CUDA:
#   1. the ops' tests with the Triton kernels compiled (not interpreted) and opcheck on CUDA;
#   2. scripts/bench_ops.py (ROIAlign, NMS: Triton against torchvision);
#   3. scripts/bench_inference.py --device cuda (Mask R-CNN, lazydet against torchvision);
#   4. 50 training steps of the quick-start Mask R-CNN with bf16 and with fp16 (GradScaler);
#   5. a 2-process NCCL run, if two GPUs are visible;
#   6. the export tests (the exported programs' parity with eager).
# Each step's log goes to LOG_DIR (default: a temporary folder); the script ends with one table
# of the steps, their status and seconds, and exits 1 if any step failed. Budget: under 10
# minutes on one H100.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device is visible; this script is for a machine with a GPU." >&2
    exit 2
fi
unset TRITON_INTERPRET  # tests/conftest.py sets it only where no NVIDIA driver is present
log_dir="${LOG_DIR:-$(mktemp -d)}"
mkdir -p "$log_dir"
gpus=$(python -c "import torch; print(torch.cuda.device_count())")
runs="$log_dir/runs"
rows=()
failed=0

step() {  # step NAME COMMAND...: run it, log to LOG_DIR/NAME.log, keep a row for the table
    local name=$1
    shift
    local start=$SECONDS
    if "$@" >"$log_dir/$name.log" 2>&1; then
        rows+=("$name|ok|$((SECONDS - start))")
    else
        rows+=("$name|FAILED (exit $?, $log_dir/$name.log)|$((SECONDS - start))")
        failed=1
    fi
    echo "gpu_check: $name done ($((SECONDS - start)) s)"
}

train_steps() {  # train_steps AMP: 50 iterations of the quick start on the GPU, no evaluation
    python -m lazydet.train conf=quickstart schedule.max_iter=50 train.amp="$1" \
        train.device=cuda '~evaluator' hydra.run.dir="$runs/amp_$1"
}

step ops_compiled python -m pytest tests/ops -p no:xdist -q
step bench_ops python scripts/bench_ops.py
step bench_inference python scripts/bench_inference.py --device cuda --runs 10 --warmup 3
step train_bf16 train_steps bf16
step train_fp16 train_steps fp16
if [[ $gpus -ge 2 ]]; then
    step nccl_2_processes python -m lazydet.train conf=quickstart schedule.max_iter=20 \
        train.num_processes=2 '~evaluator' hydra.run.dir="$runs/nccl"
else
    rows+=("nccl_2_processes|skipped ($gpus GPU visible)|0")
fi
step export_parity python -m pytest tests/deploy -m "slow or not slow" -p no:xdist -q

echo
echo "| step | status | seconds |"
echo "| --- | --- | --- |"
for row in "${rows[@]}"; do
    IFS='|' read -r name status seconds <<<"$row"
    echo "| $name | $status | $seconds |"
done
for name in bench_ops bench_inference; do
    echo
    echo "== $name"
    tail -n 30 "$log_dir/$name.log"
done
exit $failed
