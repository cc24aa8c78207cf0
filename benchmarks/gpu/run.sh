#!/usr/bin/env bash
# The one prepared device check (issue 12): everything that needs a CUDA GPU, in one call.
#
#   benchmarks/gpu/run.sh          on a machine with an NVIDIA GPU (target: < 9 minutes on one H100/H200)
#   benchmarks/gpu/run.sh --dry    on a CPU, a tiny model: the steps a CPU can take (as-trained and end-to-end
#                                  benches, the stage profile, classify in batches, AMP steps, the collector), in
#                                  ~70 s (CI runs it)
#   ONLY='bench-aoti|aoti_export' benchmarks/gpu/run.sh      only the steps whose names match (a rerun)
#   BUDGET=400 (seconds, default 480): every step's limit is cut to what is left of it
#
# Order: what no GPU run has measured yet comes first (PyTorch served with the inference rewrite, in both
# layouts; the gpu tests, with the AOTInductor export compiling beside them; the AOTInductor bench), then
# the attribution against the 2026-12-01 runs (--as-trained) and the stage profile, end to end on real mp4 files,
# bf16, and what those runs already measured (AMP training steps, CUDA graphs), so a budget cut short loses the
# known figures first.
#
# Writes everything under $OUT (default ./out/gpu): summary.md, results.json (gathered by collect.py) and
# run.tar.gz (every log, bench JSON and test report), re-packed after each step so that a run stopped at
# a time limit still leaves what it finished. Each step has its own time limit and a failed step does not
# stop the next; the summary says which steps passed. Record a real run with
#   python benchmarks/gpu/collect.py --record DIR_WITH_RESULTS_JSON   (writes benchmarks/gpu/results.*)
#
# It needs no network. PyAV is optional (decoding is not measured here: the bench feeds synthetic tensors made
# on the GPU, the paper's way); wheels put in ./.whl travel with the tree and are installed to /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
DRY=0
[ "${1:-}" = "--dry" ] && DRY=1
OUT=${OUT:-$REPO/out/gpu}
WORK=$(mktemp -d /tmp/sfc-gpu.XXXXXX)
mkdir -p "$OUT" "$WORK/logs"
export PYTHONUNBUFFERED=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
[ -x "$REPO/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY=$REPO/.venv/bin/python
SFC=("$PY" -m sfc_deploy.cli)
STEPS="$WORK/steps.tsv"
: > "$STEPS"
T0=$(date +%s)

BUDGET=${BUDGET:-480}  # seconds for all steps together: every step's limit is cut to what is left

pack() {  # everything so far, in two files that come back from the device tool
  local tmp="$OUT/.run.tar.gz.$BASHPID"  # steps that run side by side pack on their own temporaries
  tar -czf "$tmp" -C "$WORK" --exclude=./weights --exclude=./aoti --exclude=./csrc --exclude=./cache . 2>/dev/null \
    && mv "$tmp" "$OUT/run.tar.gz" || rm -f "$tmp"
  "$PY" "$REPO/benchmarks/gpu/collect.py" --work "$WORK" --out "$OUT" >/dev/null 2>>"$WORK/logs/collect.log" || true
}

step() {  # step NAME LIMIT_S CMD...: run with a time limit, log, record status and seconds
  local name=$1 limit=$2; shift 2
  local start=$(date +%s) rc left
  if [ -n "${ONLY:-}" ] && ! [[ "$name" =~ ^($ONLY)$ ]]; then return 0; fi  # ONLY='bench-aoti|aoti_export': a rerun of some steps
  left=$(( BUDGET - (start - T0) ))
  if [ "$left" -lt 15 ]; then
    echo "== $name skipped: the run's ${BUDGET}s budget is spent"
    printf '%s\t%s\t%s\n' "$name" "skipped" 0 >> "$STEPS"; pack; return 0
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  echo "== $name (limit ${limit}s, $(( start - T0 ))s into the run)"
  timeout --kill-after=10 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" >> "$STEPS"
  echo "   exit $rc after $(( $(date +%s) - start ))s; last lines:"
  tail -n 4 "$WORK/logs/$name.log" | sed 's/^/   | /'
  pack
  return 0
}

if [ $DRY = 1 ]; then
  DEVICE=cpu; PREC=fp32; BACKBONE=slow8x8_tiny; RAW=64; T=8; SIZE=32x40; H=32; W=40
  BENCH=(--videos 1 --warmup 1 --repeats 1 --batch-size 30 --sfc-batch 1,2 --trial-passes 1 --threads 1 --peak-seconds 0.1)
  BEST=(--sfc-batch 2)
  E2E_PER_CLASS=1; VSIZE=32x40; SYNTH_WORKERS=1; E2E=(--videos 2 --sfc-batch 1 --dense-videos 1 --workers 1 --prefetch 2)
  CLASSIFY=(--batch 2 --workers 1 --prefetch 2 --threads 1)
  TRAIN=(--backbone slow8x8_tiny --frames 16 --size 32x40 --steps 4)
  PROFILE=(--frames $T --size $SIZE --chunk 4 --sfc-batch 2 --crops 6 --warmup 1 --repeats 1 --threads 1 --peak-seconds 0.2)
else
  DEVICE=cuda; PREC=fp16; BACKBONE=slow8x8; RAW=288; T=36; SIZE=256x312; H=256; W=312  # the paper's settings
  BENCH=(--videos 8 --warmup 2 --repeats 1 --batch-size 30,15 --dense-videos 1,4 --sfc-batch 1,8,32 --trial-passes 2 --threads 4)
  BEST=(--batch-size 30 --dense-videos 4 --sfc-batch 32)  # what the sweeps chose on the H200 (benchmarks/gpu/README.md)
  E2E_PER_CLASS=8; VSIZE=256x340; SYNTH_WORKERS=12; E2E=(--videos 16 --sfc-batch 1 --dense-videos 1 --workers 8 --prefetch 16)  # 4:3 at short side 256
  CLASSIFY=(--batch 8 --workers 8 --prefetch 16 --threads 4)
  TRAIN=(--backbone slow8x8 --frames 36 --size 224x273 --batch-size 8 --steps 10)  # the paper's training crop
  PROFILE=(--frames $T --size $SIZE --chunk 12 --sfc-batch 32 --crops 120 --repeats 5 --threads 4)  # BEST's batches
fi
echo "mode: $([ $DRY = 1 ] && echo dry || echo gpu); device $DEVICE, $PREC, $BACKBONE, $RAW raw frames at $SIZE; out $OUT"

# 0. where this ran (and PyAV from .whl where it travelled: only tests that decode need it) -------------------
[ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && [ $DRY = 0 ] && \
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH="$PYTHONPATH:/tmp/site"
step environment 60 bash -c "nvidia-smi; nvcc --version | tail -2; \"$PY\" -c 'import json, torch; from sfc_deploy.common.environment import environment; print(json.dumps(environment(device=\"cuda\" if torch.cuda.is_available() else \"cpu\"), indent=1))' > \"$WORK/environment.json\"; cat \"$WORK/environment.json\""

# 1. the TopK CUDA kernel built for this GPU; from here on the SFC op uses it on CUDA (or fails loudly) -------
if [ $DRY = 0 ]; then
  step kernel_build 150 "$PY" -c "from sfc_deploy.ops.cuda_kernel import build_kernel; print(build_kernel('$WORK/csrc'))"
  if [ -f "$WORK/csrc/topk_kernel/libsfc_topk_kernel.so" ]; then
    export SFC_TOPK_KERNEL_LIB=$WORK/csrc/topk_kernel/libsfc_topk_kernel.so SFC_TOPK_CUDA=kernel
  fi
  "$PY" -c "import json, sfc_deploy.ops as o; print(json.dumps(o.cuda_implementation_record()))" > "$WORK/topk_cuda.json" 2>&1
fi

# 2. slow8x8 SFC against 30-crop on PyTorch as served (the inference rewrite: BatchNorm folded, unit-time 3D
#    convolutions as 2D ones), in the runtime's CUDA layout and channels-last; one weights-only export ----------
step export_weights 60 "$PY" -c "
import dataclasses, torch
from sfc_deploy.models import create_model, get_config
from sfc_deploy.export.exporter import ExportOptions, export_model
torch.manual_seed(0)
config = get_config('$BACKBONE')
if $DRY:  # dense crops at the dry run's scale (32 for 32x40 frames, as 256 for 256x312): seconds, not minutes
    config = config.replace(preprocess=dataclasses.replace(config.preprocess, short_side=$H, crop=$H))
export_model(create_model(config, tau=2.0, split='res3'), '$WORK/weights',
             ExportOptions(formats=(), precisions=('$PREC',), frames=$T, size=($H, $W), raw_frames=$RAW))"
bench() {  # bench NAME DIR RUNTIME EXTRA...: one `sfc-deploy bench` into $WORK/bench-NAME.json (later options win)
  local name=$1 dir=$2 runtime=$3; shift 3
  step "bench-$name" 120 "${SFC[@]}" bench "$dir" --runtime "$runtime" --device $DEVICE --precision $PREC \
    "${BENCH[@]}" --json "$WORK/bench-$name.json" --markdown "$WORK/bench-$name.md" --plot "$WORK/bench-$name.png" "$@"
}
# (dry: the as-trained and end-to-end steps below run the same wrapper and flags, the latter the model as served)
[ $DRY = 0 ] && bench pytorch-eager "$WORK/weights" pytorch
[ $DRY = 0 ] && bench pytorch-channels-last "$WORK/weights" pytorch --channels-last  # the CPU default already is channels-last

# 3. the gpu tests (kernel vs NumPy, op dispatch, devices, AMP training, bench, AOTI CUDA parity), with the
#    AOTInductor CUDA fp16 export compiling beside them on the CPU cores (neither is timed) ---------------------
if [ $DRY = 0 ]; then
  step aoti_export 200 "${SFC[@]}" export -b $BACKBONE --format aoti --precision fp16 --device cuda \
    --frames $RAW --size $SIZE --tau 2 --no-verify --no-sfc-pieces --out "$WORK/aoti" &
  step gpu_tests 270 "$PY" -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors -rs --durations=25 \
    --junitxml="$WORK/gpu_tests.xml" tests
  wait
  [ -f "$WORK/aoti/manifest.json" ] && bench aoti "$WORK/aoti" aoti
fi

# 4. attribution: the model served as trained, the 2026-12-01 runs' setting (their batch choices, no sweep) --------
bench pytorch-as-trained "$WORK/weights" pytorch --as-trained "${BEST[@]}"
# ... and stage by stage (head, SFC, tail, clip model): time, % of the matmul peak, top kernels and the share in
#     layout copies, served in the runtime's layout, in channels-last and as trained
step profile-stages 120 "$PY" benchmarks/gpu/profile_stages.py --export "$WORK/weights" --device $DEVICE --precision $PREC \
  "${PROFILE[@]}" --json "$WORK/profile-stages.json" --markdown "$WORK/profile-stages.md"

# 5. end to end on real mp4 files (PyAV, from ./.whl on the device): decoding threads on the CPU working ahead
#    of the model, one video per pass, the overlap efficiency beside the model-only videos/s -------------------
step e2e_videos 60 "${SFC[@]}" synth "$WORK/videos" --classes 2 --train-per-class 0 --test-per-class $E2E_PER_CLASS \
  --frames $(( RAW + 12 )) --size $VSIZE --seed 0 --workers $SYNTH_WORKERS
VIDEOS=()
for f in "$WORK"/videos/videos/test/*/*.mp4; do [ -f "$f" ] && VIDEOS+=(--video "$f"); done
[ ${#VIDEOS[@]} -gt 0 ] && bench pytorch-e2e "$WORK/weights" pytorch "${VIDEOS[@]}" "${E2E[@]}"
# the same files through `classify` (the local engine), one video per model call against --batch N
[ -f "$WORK/videos/test.csv" ] && step classify-batch 90 "$PY" benchmarks/gpu/classify_steps.py --export "$WORK/weights" \
  --input "$WORK/videos/test.csv" --device $DEVICE --precision $PREC "${CLASSIFY[@]}" --json "$WORK/classify.json"

# 6. bf16 inference (the weights converted at load; the same batches), beside the fp16 steps above -----------
[ $DRY = 0 ] && bench pytorch-bf16 "$WORK/weights" pytorch "${BEST[@]}" --precision bf16

# 7. a few SFC training steps with mixed precision ---------------------------------------------------------
for amp in $([ $DRY = 1 ] && echo bf16 || echo bf16 fp16); do
  step "train-amp-$amp" 90 "$PY" benchmarks/gpu/train_steps.py --device $DEVICE --amp $amp "${TRAIN[@]}" \
    --json "$WORK/train-amp-$amp.json"
done

# 8. CUDA graphs (measured 2026-12-01: no change at these sizes) ---------------------------------------------
[ $DRY = 0 ] && bench pytorch-cuda-graphs "$WORK/weights" pytorch --cuda-graphs "${BEST[@]}"

echo "done in $(( $(date +%s) - T0 ))s"
pack
cat "$OUT/summary.md" 2>/dev/null
