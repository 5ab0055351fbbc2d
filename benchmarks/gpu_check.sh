#!/usr/bin/env bash
# The GPU checks of issue 12, as one prepared script: at most ~8 minutes on one recent GPU.
#
#   benchmarks/gpu_check.sh                # on a GPU: full-size checks, JSON in benchmarks/results/
#   benchmarks/gpu_check.sh --device cpu   # tiny mode: the same steps, small, in a few CPU minutes
#
# Steps (each timed; a failing step is reported and the others still run; exit status 1 if any
# failed):
#  1. engine benchmark, 2d + 3d_fullres: AMP on/off, torch.compile on/off, channels-last on
#     (training iteration data/compute time, peak memory; sliding-window prediction with/without TTA)
#  2. pretraining throughput of every registered objective (data and compute timed apart: the
#     loader must deliver >= 2x the batches per second the network consumes)
#  3. a 1-process torchrun fine-tune of a few iterations (NCCL on a GPU, gloo on CPU)
#  4. a short subset of `sslunet_demo --full`: its synthetic dataset (small), `random` vs `mae`
#     at 2 labelled volumes, short schedules, on the device
set -uo pipefail
DEVICE=cuda
if [ "${1:-}" = "--device" ]; then DEVICE=$2; fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${GPU_CHECK_OUT:-$REPO/benchmarks/results}; mkdir -p "$OUT"  # GPU_CHECK_OUT: elsewhere
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sslunet-gpu-check-XXXX"); export SSLUNET_HOME="$WORK/home"
TAG=$DEVICE; LOG="$OUT/gpu_check_$TAG.log"; : > "$LOG"
FAILED=0
if [ "$DEVICE" = cpu ]; then
  ENGINE=(--small --configurations 2d 3d_fullres); PRE=(--small); SYN=(--labeled 6 --unlabeled 4 --test 2)
  FT=(--epochs 1 --iters-per-epoch 3 --val-iters 1 --batch-size 2 --num-workers 0)
  STUDY=(--epochs 1 --iters-per-epoch 3 --val-iters 1 --batch-size 2 --pretrain-epochs 1
         --pretrain-iters-per-epoch 3 --pretrain-batch-size 4 --num-workers 0 --disable-tta)
  COMPILE_MODES=(off); BACKEND=gloo
else
  ENGINE=(--configurations 2d 3d_fullres --iterations 10 --warmup 5); PRE=(--iterations 10)
  SYN=(--labeled 10 --unlabeled 20 --test 4)
  # no --num-workers: the device's default (nnU-Net's 12 per GPU, capped by the cores) is checked
  FT=(--epochs 1 --iters-per-epoch 20 --val-iters 5)
  STUDY=(--epochs 5 --iters-per-epoch 50 --val-iters 5 --pretrain-epochs 5
         --pretrain-iters-per-epoch 50)
  COMPILE_MODES=(off on); BACKEND=nccl
fi
step() { local name=$1; shift; local t0=$(date +%s)
  if "$@" >> "$WORK/$name.out" 2>&1; then echo "$name: ok ($(( $(date +%s) - t0 )) s)" | tee -a "$LOG"
  else FAILED=1; echo "$name: FAILED ($(( $(date +%s) - t0 )) s), last lines:" | tee -a "$LOG"
       tail -5 "$WORK/$name.out" | tee -a "$LOG"; fi; }
cd "$REPO"
for c in "${COMPILE_MODES[@]}"; do
  step "engine_amp_compile-$c" python benchmarks/bench_engine.py --device "$DEVICE" "${ENGINE[@]}" \
       --compile "$c" --out "$OUT/engine_${TAG}_amp_compile-$c.json"
done
step engine_no-amp python benchmarks/bench_engine.py --device "$DEVICE" "${ENGINE[@]}" --no-amp \
     --out "$OUT/engine_${TAG}_no-amp.json"
step engine_channels-last python benchmarks/bench_engine.py --device "$DEVICE" "${ENGINE[@]}" \
     --channels-last --out "$OUT/engine_${TAG}_channels-last.json"
step pretrain_all_objectives python benchmarks/bench_pretrain.py --device "$DEVICE" "${PRE[@]}" \
     --out "$OUT/pretrain_${TAG}_2d_check.json"
step synth sslunet_synth "${SYN[@]}" --id 905 --name GpuCheck
step plan sslunet_plan -d 905 -c 2d --base-features 16
step torchrun_finetune torchrun --standalone --nproc_per_node 1 -m sslunet.cli.finetune -d 905 -c 2d \
     --device "$DEVICE" "${FT[@]}"
step demo_full_subset sslunet_study -d 905 -c 2d --name gpu_check --inits random mae --labeled 2 \
     --seeds 0 --device "$DEVICE" "${STUDY[@]}"
echo "work folder: $WORK; results: $OUT/*_${TAG}*.json; log: $LOG" | tee -a "$LOG"
[ "$FAILED" = 0 ] && rm -rf "$WORK"
exit $FAILED
