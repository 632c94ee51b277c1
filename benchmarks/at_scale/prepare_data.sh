#!/usr/bin/env bash
# Local step (CPU, no GPU) of the at-scale run: the params file the GPU machine runs with, the corpus and the splits.
#   usage (repo root, project venv active):  bash benchmarks/at_scale/prepare_data.sh [DEST]   (default .gpucarry/at-scale)
# params = params.yaml + profiles/at-scale.yaml (+ AT_SCALE_DELTA, a further delta file, if set).
# demo and split are CPU stages: they run here, with the stages' own code and that params file (JINMEI_PARAMS), and
# the split files travel xz-compressed (the GPU machine has no network and 64 MiB per call).
set -euo pipefail
dest=${1:-.gpucarry/at-scale}
rm -rf "$dest/work" "$dest/splits.tar.xz"; mkdir -p "$dest/work"   # keeps prepare_gpu.sh's llcpu.tgz
cp params.yaml "$dest/params.yaml"
python -m jinmei.config.profile profiles/at-scale.yaml --params "$dest/params.yaml"
[ -n "${AT_SCALE_DELTA:-}" ] && python -m jinmei.config.profile "$AT_SCALE_DELTA" --params "$dest/params.yaml"
export JINMEI_PARAMS=$PWD/$dest/params.yaml
w=$dest/work
/usr/bin/time -f "demo: %e s, %M KB" python -m stages.demo --out "$w/corpus.jsonl"
/usr/bin/time -f "split: %e s, %M KB" python -m stages.split --corpus "$w/corpus.jsonl" --out-dir "$w/splits" \
  --metrics "$dest/split.json"
sha256sum "$w"/corpus.jsonl "$w"/splits/*.jsonl | sed "s#$w/##" > "$dest/data.sha256"
tar cf - -C "$w" splits | xz -T2 -6 > "$dest/splits.tar.xz"
rm -rf "$w"
du -sh "$dest"/*
