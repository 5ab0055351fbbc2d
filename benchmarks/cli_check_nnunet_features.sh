#!/usr/bin/env bash
# The nnU-Net features of issue 13, end to end from the command line, with short CPU schedules:
# residual-encoder plan, pretraining + fine-tuning on it, validation probabilities, post-processing,
# find_best with an ensemble, predict from the winner, evaluate, sparse slices, and the export to
# nnU-Net (run in nnU-Net itself when NNUNET_PYTHON points to a Python with nnunetv2).
#
#   benchmarks/cli_check_nnunet_features.sh RAW_DATASET_FOLDER WORK_FOLDER [PLAN_FLAGS...]
#   e.g. benchmarks/cli_check_nnunet_features.sh ../shared/data/Dataset003_ACDC /tmp/acdc_check \
#            --target-spacing 8 2.5 2.5
# Every step is timed; the log is WORK_FOLDER/check.log. Stops at the first failing step.
set -euo pipefail
RAW=$(realpath "$1"); WORK=$(realpath -m "$2"); shift 2
export SSLUNET_HOME="$WORK/home" OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DS=$(basename "$RAW"); LOG="$WORK/check.log"; mkdir -p "$WORK"; : > "$LOG"
SHORT=(--epochs 2 --iters-per-epoch 10 --batch-size 4 --val-iters 2 --num-workers 0)
step() { local name=$1; shift; local t0=$(date +%s.%N)
  if "$@" >> "$WORK/$name.out" 2>&1; then
    printf '%-34s ok   %6.1f s\n' "$name" "$(echo "$(date +%s.%N) - $t0" | bc)" | tee -a "$LOG"
  else echo "$name FAILED (see $WORK/$name.out)" | tee -a "$LOG"; tail -5 "$WORK/$name.out"; exit 1; fi; }
step plan_resenc_m sslunet_plan -d "$RAW" -c 2d --preset resenc_m --base-features 8 "$@"
step pretrain_mae sslunet_pretrain -d "$DS" -c 2d -l mae --epochs 2 --iters-per-epoch 10 --batch-size 4 --num-workers 0
for f in 0 1; do
  step "finetune_random_fold$f" sslunet_finetune -d "$DS" -c 2d -f $f --npz --disable-tta "${SHORT[@]}"
  step "finetune_mae_fold$f" sslunet_finetune -d "$DS" -c 2d -f $f --init mae --npz --disable-tta "${SHORT[@]}"
done
step find_best sslunet_find_best -d "$DS"
BEST=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['model_folder'])" "$SSLUNET_HOME/results/$DS/find_best.json")
mkdir -p "$WORK/in"; for f in $(ls "$RAW/imagesTr" | grep "_0000\." | head -3); do cp "$RAW/imagesTr/$f" "$WORK/in/"; done
step predict_best sslunet_predict -i "$WORK/in" -o "$WORK/pred_best" -m "$BEST" --disable-tta --device cpu
step evaluate sslunet_evaluate -r "$RAW/labelsTr" -p "$WORK/pred_best" --dataset-json "$RAW/dataset.json" --allow-missing
step sparse_slices sslunet_finetune -d "$DS" -c 2d -f 0 --num-labeled 4 --labeled-slices 8 --disable-tta "${SHORT[@]}"
MODEL="$SSLUNET_HOME/results/$DS/finetune/mae__2d__all"
step export_to_nnunet sslunet_export -m "$MODEL" --to-nnunet "$WORK/nnunet_results"
if [ -n "${NNUNET_PYTHON:-}" ]; then
  # without TTA: nnU-Net's CPU prediction is slow (float16 sums), and TTA is tested elsewhere
  step predict_sslunet sslunet_predict -i "$WORK/in" -o "$WORK/pred_ss" -m "$MODEL" -f 0 --no-postprocessing --save-probabilities --device cpu --disable-tta
  step predict_nnunet env nnUNet_results="$WORK/nnunet_results" nnUNet_raw="$WORK/r" nnUNet_preprocessed="$WORK/p" \
    "$(dirname "$NNUNET_PYTHON")/nnUNetv2_predict" -i "$WORK/in" -o "$WORK/pred_nn" -d "$DS" -c 2d -f 0 -device cpu -npp 1 -nps 1 --disable_tta
  python - "$WORK" >> "$LOG" <<'PY'
import sys, numpy as np, SimpleITK as sitk
from pathlib import Path
w = Path(sys.argv[1])
for f in sorted((w / "pred_nn").glob("*.nii.gz")):
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(w / "pred_ss" / f.name)))
    p = np.sort(np.load(w / "pred_ss" / f.name.replace(".nii.gz", ".npz"))["probabilities"], 0)
    d = a != b
    margin = float((p[-1] - p[-2])[d].max()) if d.any() else 0.0
    print(f"nnU-Net vs sslunet masks, {f.name}: {int(d.sum())} of {d.size} voxels differ "
          f"(largest top-2 probability margin among them {margin:.4f})")
PY
fi
echo "all steps passed" | tee -a "$LOG"
