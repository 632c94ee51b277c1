#!/usr/bin/env bash
# What every device `run` call of the at-scale run executes (repo root):  bash benchmarks/at_scale/run.sh [WAIT_S]
# Takes in whatever this call carried (.gpuwheels, .gpucarry/gguf-a, gguf-b, gpu-build, at-scale/*), starts
# pipeline.sh once everything but the splits is there, follows its log for at most WAIT_S seconds (default 540),
# then returns the log and the results so far in $OUT. Make each next call at once (a machine idle 30 s is gone).
set -uo pipefail
wait_s=${1:-540}
W=${W:-/tmp/jinmei-as}; I=$W/inputs; out=${OUT:-/tmp/out}; mkdir -p "$I" /tmp/site "$out"
for d in gguf-a gguf-b; do [ -d ".gpucarry/$d" ] && cp -n ".gpucarry/$d"/* "$W/"; done
for d in gpu-build at-scale stage1; do [ -d ".gpucarry/$d" ] && cp -rn ".gpucarry/$d"/. "$I/"; done
if [ -d .gpuwheels ] && [ ! -f "$W/wheels.done" ]; then
  for f in .gpuwheels/*; do python3 -m zipfile -e "$f" /tmp/site >/dev/null; done; touch "$W/wheels.done"
fi
echo "inputs: $(cd "$W" && ls smol-piece-* 2>/dev/null | tr '\n' ' ')$(ls "$I" | tr '\n' ' ')"
running() { [ -f "$W/pipeline.pid" ] && kill -0 "$(cat "$W/pipeline.pid")" 2>/dev/null; }
if running; then echo "pipeline running"
elif [ -f "$W/pipeline.done" ] || [ -f "$W/pipeline.pid" ]; then echo "pipeline ended"
elif [ -f "$W/wheels.done" ] && [ -f "$W/smol-piece-aa" ] && [ -f "$W/smol-piece-ab" ] && [ -f "$I/params.yaml" ] \
     && [ -f "$I/llama_cpp_python-0.3.36.tar.gz" ]; then
  echo "starting the pipeline"
  SRC=$PWD setsid nohup bash benchmarks/at_scale/pipeline.sh >> "$W/pipeline.log" 2>&1 < /dev/null &
  echo $! > "$W/pipeline.pid"
else echo "not all inputs yet: pipeline not started"
fi
touch "$W/pipeline.log"; start=$SECONDS; seen=0
while :; do
  lines=$(wc -l < "$W/pipeline.log"); [ "$lines" -gt "$seen" ] && sed -n "$((seen + 1)),${lines}p" "$W/pipeline.log"; seen=$lines
  running || break
  [ $((SECONDS - start)) -ge "$wait_s" ] && { echo "--- still running after ${wait_s}s: call run.sh again now"; break; }
  sleep 3
done
[ -f "$W/build.log" ] && echo "--- build: $(grep -E '^\[[0-9]+/[0-9]+\]' "$W/build.log" | tail -1 | cut -c1-100) $(tail -1 "$W/build.log" | cut -c1-200)"
cp "$W/pipeline.log" "$out/" 2>/dev/null
sent=0  # the packed adapters' pieces, each once, at most 3 x 15 MiB a call (64 MiB come back, the rest included)
for f in "$W"/stage[12]-piece-??; do
  [ -f "$W/$(basename "$f" | cut -d- -f1).packed" ] && [ ! -f "$f.sent" ] && [ "$sent" -lt 3 ] || continue
  cp "$f" "$out/" && touch "$f.sent" && sent=$((sent + 1))
done
# files older than this run's start are not its own: a machine came back (2026-12-04) with lane folders of a run
# lost the day before inside $W/results, after the pipeline had emptied it
[ -f "$W/results/started" ] && tar czf "$out/results.tgz" -C "$W" --newer-mtime="@$(stat -c %Y "$W/results/started")" \
  results 2>/dev/null
[ -f "$W/build.log" ] && tail -c 200000 "$W/build.log" > "$out/build-tail.log"
ls -la "$out"
