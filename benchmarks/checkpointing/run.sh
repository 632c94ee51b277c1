#!/usr/bin/env bash
# What every device `run` call of the checkpointing sweep executes (repo root; .gpuwheels carried on the first):
#   bash benchmarks/checkpointing/run.sh [WAIT_S]
# Unpacks the wheels once, starts sweep.sh once (and, when .gpucarry/crash was carried, the llama.cpp CUDA crash
# bisect beside it, niced), follows the sweep log for at most WAIT_S s (default 560), returns logs and JSONs in $OUT.
set -uo pipefail
wait_s=${1:-560}
W=${W:-/tmp/jinmei-ck}; out=${OUT:-/tmp/out}; mkdir -p "$W" /tmp/site "$out"
if [ -d .gpuwheels ] && [ ! -f "$W/wheels.done" ]; then
  for f in .gpuwheels/*; do python3 -m zipfile -e "$f" /tmp/site >/dev/null; done; touch "$W/wheels.done"
fi
[ -d .gpucarry/crash ] && cp -rn .gpucarry/crash "$W/"
running() { [ -f "$W/sweep.pid" ] && kill -0 "$(cat "$W/sweep.pid")" 2>/dev/null; }
if [ ! -f "$W/sweep.pid" ] && [ -f "$W/wheels.done" ]; then
  rm -rf "$W/src"; mkdir -p "$W/src"; tar cf - --exclude=.gpuwheels --exclude=.gpucarry --exclude=.git . | tar xf - -C "$W/src"
  SRC=$W/src W=$W setsid nohup bash benchmarks/checkpointing/sweep.sh > "$W/sweep.log" 2>&1 < /dev/null &
  echo $! > "$W/sweep.pid"; echo "sweep started"
  if [ -d "$W/crash" ]; then
    SRC=$W/src W=$W setsid nohup nice -n 19 bash benchmarks/checkpointing/cuda_crash_job.sh > "$W/crash.log" 2>&1 < /dev/null &
    echo "crash bisect started (niced)"
  fi
fi
touch "$W/sweep.log"; start=$SECONDS; seen=0
while :; do
  lines=$(wc -l < "$W/sweep.log"); [ "$lines" -gt "$seen" ] && sed -n "$((seen + 1)),${lines}p" "$W/sweep.log"; seen=$lines
  running || break
  [ $((SECONDS - start)) -ge "$wait_s" ] && { echo "--- still running after ${wait_s}s: call run.sh again now"; break; }
  sleep 5
done
echo "--- crash bisect: $(tail -3 "$W/crash.log" 2>/dev/null | tr '\n' ' ')"
cp "$W/sweep.log" "$W/crash.log" "$out/" 2>/dev/null
[ -d "$W/results" ] && tar czf "$out/results.tgz" -C "$W" results 2>/dev/null
[ -d "$W/crash-results" ] && tar czf "$out/crash-results.tgz" -C "$W" crash-results 2>/dev/null
ls -la "$out"
