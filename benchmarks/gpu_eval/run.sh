#!/usr/bin/env bash
# What each device `run` call executes (repo root, carry [".gpucarry-eval"], kind nvidia-h100-x1):
#   bash benchmarks/gpu_eval/run.sh [WAIT_S]
# Starts benchmarks/gpu_eval/pipeline.sh in its own session (so it outlives the call) unless it is already
# running or done, follows its log for at most WAIT_S seconds (default 560), then copies the logs and the
# result JSON to $OUT. The pipeline takes ~15 min in all (build ~?, model+convert, quantize, bench), more than
# one call's 10 minutes: call again AT ONCE after each return (a machine idle 30 s is given back, and a fresh
# one starts bare). Before the first call, locally: bash benchmarks/gpu_eval/prepare.sh
set -uo pipefail
wait_s=${1:-560}
W=${W:-/tmp/jge}; export W
out=${OUT:-benchmarks/results/gpu-eval}; mkdir -p "$out" "$W"
if [ -f "$W/pipeline.pid" ] && kill -0 "$(cat "$W/pipeline.pid")" 2>/dev/null; then
  echo "pipeline already running (pid $(cat "$W/pipeline.pid")), state: $(cd "$W" && ls *.done *.failed 2>/dev/null | tr '\n' ' ')"
elif [ -f "$W/bench.done" ]; then
  echo "pipeline already done"
else
  echo "starting the pipeline; state: $(cd "$W" && ls *.done *.failed 2>/dev/null | tr '\n' ' ')"
  setsid nohup bash benchmarks/gpu_eval/pipeline.sh >> "$W/pipeline.log" 2>&1 < /dev/null &
  echo $! > "$W/pipeline.pid"
fi
touch "$W/pipeline.log"; start=$SECONDS; seen=0
while :; do
  lines=$(wc -l < "$W/pipeline.log"); [ "$lines" -gt "$seen" ] && sed -n "$((seen + 1)),${lines}p" "$W/pipeline.log"; seen=$lines
  kill -0 "$(cat "$W/pipeline.pid")" 2>/dev/null || break
  [ $((SECONDS - start)) -ge "$wait_s" ] && { echo "--- still running after ${wait_s}s: call run.sh again now"; break; }
  sleep 5
done
[ -f "$W/build.log" ] && { echo "--- build.log tail:"; grep -E "^\[[0-9]+/[0-9]+\]" "$W/build.log" | tail -1 | cut -c1-150; tail -3 "$W/build.log" | cut -c1-300; }
cp "$W/pipeline.log" "$out/pipeline.log" 2>/dev/null
[ -f "$W/build.log" ] && tail -c 300000 "$W/build.log" > "$out/build-tail.log"
[ -f "$W/eval-throughput.json" ] && cp "$W/eval-throughput.json" "$out/"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
ls -la "$out"
