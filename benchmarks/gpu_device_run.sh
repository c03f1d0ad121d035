#!/usr/bin/env bash
# The GPU benchmark (benchmarks/gpu_speed.py) on a borrowed GPU machine, for both Keras backends.
#
# The machine has JAX and PyTorch with CUDA, no TensorFlow and no network. axial_tf comes with the
# working tree (put on PYTHONPATH here). Keras, and the two small packages it needs beyond that
# machine's image (namex, optree), come as wheels in wheels/ when the machine lacks them; made where
# pip works (about 3 MB):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d wheels \
#     keras==3.15.1 namex==0.1.0 optree==0.20.0
#
# Usage, from anywhere: bash benchmarks/gpu_device_run.sh [OUTPUT_DIR]
#   OUTPUT_DIR (default $OUT, the device tool's folder, else benchmarks/results) gets
#   gpu_torch_gpu.json, gpu_jax_gpu.json and gpu_speed.log; copy the JSON files to
#   benchmarks/results/ and run `python benchmarks/run_all.py --report_only` for BENCHMARKS.md.
# Time: TOTAL_S (default 540) for everything. The backends run in the order of BACKENDS (default
# "torch jax"); each but the last gets FIRST_S seconds (default 240), the last the rest. A worker
# process (a layer case, or a model's inference or training) is stopped after CASE_S (default 240) s;
# cases left without time are recorded as "not run".
# A later run measures only some groups, keeping the other rows of the JSON files already in
# benchmarks/results/: ONLY=model_axial_deeplab_l_training,... (gpu_speed.py --only), e.g.
#   BACKENDS=jax ONLY=model_axial_deeplab_s_training bash benchmarks/gpu_device_run.sh
set -euo pipefail

cd "$(dirname "$0")/.."
output_dir="${1:-${OUT:-benchmarks/results}}"
python="${PYTHON:-python3}"
deadline=$((SECONDS + ${TOTAL_S:-540}))
read -r -a backends <<< "${BACKENDS:-torch jax}"
mkdir -p "$output_dir"
log="$output_dir/gpu_speed.log"

if compgen -G "wheels/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu_speed_site \
    wheels/*.whl
  export PYTHONPATH="/tmp/gpu_speed_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
check="import keras, jax, torch; print('keras', keras.__version__, 'jax', jax.__version__, 'torch', torch.__version__)"
KERAS_BACKEND=jax "$python" -c "$check" | tee "$log" \
  || { echo "keras, jax or torch is missing: put the keras wheels in wheels/ (see the top)" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log" || true

only=()
if [ -n "${ONLY:-}" ]; then
  only=(--only "$ONLY")
  for backend in "${backends[@]}"; do  # the rows to keep
    if [ -f "benchmarks/results/gpu_${backend}_gpu.json" ] && [ ! -f "$output_dir/gpu_${backend}_gpu.json" ]; then
      cp "benchmarks/results/gpu_${backend}_gpu.json" "$output_dir/"
    fi
  done
fi

for index in "${!backends[@]}"; do
  backend="${backends[$index]}"
  budget=$((deadline - SECONDS))
  if [ $((index + 1)) -lt "${#backends[@]}" ] && [ "${FIRST_S:-240}" -lt "$budget" ]; then
    budget="${FIRST_S:-240}"
  fi
  echo "== $backend: budget $budget s" | tee -a "$log"
  # A backend that fails to start leaves the next one its turn.
  KERAS_BACKEND="$backend" "$python" benchmarks/gpu_speed.py --device gpu --budget_s "$budget" \
    --case_timeout_s "${CASE_S:-240}" --output "$output_dir/gpu_${backend}_gpu.json" "${only[@]}" 2>&1 \
    | tee -a "$log" || echo "== $backend failed" | tee -a "$log"
done
echo "== done in $SECONDS s; results in $output_dir" | tee -a "$log"
