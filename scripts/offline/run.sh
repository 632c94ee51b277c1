#!/usr/bin/env bash
# On the offline GPU host: check a bundle made by scripts/offline/bundle.sh, set it up and run the pipeline
# (docs/offline.md). Needs python3 (the Python the bundle was made for), tar, sha256sum; nvcc and an NVIDIA GPU
# for a CUDA llama.cpp (else a CPU build).
#   bash run.sh DIR [--check-only | --setup-only] [--work WORK] [--python PY] [--profile FILE] [-- DVC ARGS]
#   DIR            the bundle folder, copied to the host as a whole
#   --check-only   verify every sha256 and join the pieces into whole files; nothing else
#   --setup-only   also install, build llama.cpp and unpack the code; run nothing (then: source WORK/env.sh)
#   --work WORK    where the venv, the code and the pipeline's outputs go (default DIR/work); a rerun resumes there
#   --python PY    the host's Python (default python3); the venv made from it sees its packages (e.g. a CUDA torch)
#   --profile FILE a profile (a path in the project, e.g. profiles/at-scale.yaml, or an absolute path), applied to
#                  params.yaml before the run
#   -- ARGS        what dvc runs, default `repro`; stage names alone mean `dvc repro STAGE...`:
#                    -- stage1                       dvc repro stage1
#                    -- exp run -S stage2.lr=5e-5    dvc exp run -S stage2.lr=5e-5
set -euo pipefail

die() { printf 'run.sh: %b\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }

bundle="" mode=run work="" python=python3 profile="" dvc_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --check-only) mode=check; shift ;;
    --setup-only) mode=setup; shift ;;
    --work) work=${2:?--work needs a folder}; shift 2 ;;
    --python) python=${2:?--python needs an interpreter}; shift 2 ;;
    --profile) profile=${2:?--profile needs a file of the project, e.g. profiles/at-scale.yaml}; shift 2 ;;
    --) shift; dvc_args=("$@"); break ;;
    -h|--help) usage 0 ;;
    -*) die "unknown option '$1' (--help lists the options)" ;;
    *) [ -z "$bundle" ] || die "one bundle folder only ('$bundle', then '$1'); dvc arguments go after --"
       bundle=$1; shift ;;
  esac
done
[ -n "$bundle" ] || die "usage: bash run.sh DIR [--check-only | --setup-only] [--work WORK] [-- DVC ARGS]"
[ -d "$bundle" ] || die "$bundle: no such folder"
[ -f "$bundle/SHA256SUMS" ] && [ -f "$bundle/bundle.env" ] \
  || die "$bundle is not a bundle made by scripts/offline/bundle.sh (no SHA256SUMS or bundle.env)"
bundle=$(cd "$bundle" && pwd)

# ---- 1. every file as shipped, then the pieces joined into whole files (each checked against its own sha256)
echo "verifying $(wc -l < "$bundle/SHA256SUMS") files ..."
if ! bad=$(cd "$bundle" && sha256sum --quiet -c SHA256SUMS 2>&1); then
  die "the bundle is damaged or incomplete; copy these files again:\n$bad"
fi
joined=0
if [ -f "$bundle/JOINED.sha256" ]; then
  while read -r sum rel; do
    f=$bundle/$rel
    [ -f "$f" ] && [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$sum" ] && continue
    pieces=("$f".part-*)
    [ -f "${pieces[0]}" ] || die "$rel: neither the file nor its pieces ($rel.part-*) are in the bundle"
    cat "${pieces[@]}" > "$f.joining"   # the glob sorts -aaa, -aab, ... in order
    if [ "$(sha256sum "$f.joining" | cut -d' ' -f1)" != "$sum" ]; then
      rm -f "$f.joining"; die "$rel: its ${#pieces[@]} pieces do not join to the sha256 in JOINED.sha256"
    fi
    mv "$f.joining" "$f"; joined=$((joined + 1))
  done < "$bundle/JOINED.sha256"
fi
echo "bundle OK$([ "$joined" -gt 0 ] && echo ", $joined files joined from their pieces")"
[ "$mode" = check ] && exit 0

# shellcheck disable=SC1091
. "$bundle/bundle.env"

# ---- 2. a venv on the host's Python, the bundle's wheels installed without any index
command -v "$python" >/dev/null || die "--python $python: not found on PATH"
host_py=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$host_py" = "$PYTHON_VERSION" ] \
  || die "the bundle's wheels are for Python $PYTHON_VERSION, $python is $host_py: make the bundle again with --python $host_py"
work=${work:-$bundle/work}; mkdir -p "$work/logs"; work=$(cd "$work" && pwd)
venv=$work/venv code=$work/code
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv --system-site-packages "$venv" || die "could not create a venv in $venv ($python -m venv)"
fi
py=$venv/bin/python
wheels=("$bundle"/wheels/*.whl)
if [ -f "${wheels[0]}" ]; then
  echo "installing ${#wheels[@]} wheels (pip --no-index, nothing from the network)"
  "$py" -m pip install -q --no-index --find-links "$bundle/wheels" --no-deps "${wheels[@]}" > "$work/logs/pip.log" 2>&1 \
    || die "pip could not install the bundle's wheels: $work/logs/pip.log"
fi
"$py" -m pip check > "$work/logs/pip-check.log" 2>&1 \
  || echo "note: pip check reports version mismatches (the host's own packages were kept): $work/logs/pip-check.log"

# ---- 3. llama-cpp-python from its source: CUDA when nvcc is on PATH, else a portable CPU build
llama_version=${LLAMA_SDIST#sdist/llama_cpp_python-}; llama_version=${llama_version%.tar.gz}
cuda=0; command -v nvcc >/dev/null && nvidia-smi -L >/dev/null 2>&1 && cuda=1   # a toolkit and a GPU
have=$("$py" -c 'import importlib.metadata as m, llama_cpp
print(m.version("llama_cpp_python"), int(llama_cpp.llama_supports_gpu_offload()))' 2>/dev/null || echo "none 0")
if [ "${have% *}" != "$llama_version" ] || { [ "$cuda" = 1 ] && [ "${have#* }" != 1 ]; }; then
  "$py" -c 'import scikit_build_core' 2>/dev/null \
    || die "scikit-build-core is missing (llama-cpp-python's build backend): make the bundle without --no-wheels"
  if [ -z "${CMAKE_ARGS:-}" ]; then
    skip="-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
    if [ "$cuda" = 1 ]; then   # CUDA_ARCHITECTURES=90 (H100/H200) builds for one GPU generation only: faster
      CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF -DGGML_CUDA_NCCL=OFF $skip${CUDA_ARCHITECTURES:+ -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES}"
      export CUDACXX=${CUDACXX:-$(command -v nvcc)}
    elif [ "$(uname -m)" = x86_64 ]; then   # portable, as scripts/setup.sh builds it (a native build can SIGILL)
      CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON $skip"
    else CMAKE_ARGS=$skip
    fi
    export CMAKE_ARGS
  fi
  export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
  echo "building llama-cpp-python $llama_version ($([ "$cuda" = 1 ] && echo CUDA || echo CPU), $CMAKE_BUILD_PARALLEL_LEVEL jobs; minutes) ..."
  "$py" -m pip install -v --no-index --no-build-isolation --no-deps --no-cache-dir --force-reinstall \
    "$bundle/$LLAMA_SDIST" > "$work/logs/llama-build.log" 2>&1 \
    || die "the llama-cpp-python build failed; its log: $work/logs/llama-build.log"
fi

# ---- 4. the base model's package, the code, the converter, the corpus, params
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -n "${BASE_PACKAGE:-}" ]; then mkdir -p "$site/$BASE_PACKAGE"; cp "$bundle/model/$BASE_PACKAGE"/* "$site/$BASE_PACKAGE/"; fi
as_user=(-c user.name=jinmei-offline -c user.email=offline@localhost)
if [ -f "$work/code.commit" ]; then
  [ "$(cat "$work/code.commit")" = "$COMMIT" ] \
    || die "$code holds the code of another bundle (commit $(cat "$work/code.commit")): pass --work NEW_FOLDER"
  first=0
else
  rm -rf "$code"; tar xzf "$bundle/code.tar.gz" -C "$work"; first=1
  if command -v git >/dev/null; then   # a repository of its own, so that `dvc exp` works
    (cd "$code" && git init -q && git add -A && git "${as_user[@]}" commit -qm "bundle $COMMIT")
  fi
  echo "$COMMIT" > "$work/code.commit"
fi
if [ ! -d "$venv/convert-hf-to-gguf" ]; then   # llama.cpp's HF->GGUF converter, from the same sdist
  mkdir -p "$code/build/sdist"; cp "$bundle/$LLAMA_SDIST" "$code/build/sdist/"
  (cd "$code" && PATH=$venv/bin:$PATH bash scripts/install_converter.sh > "$work/logs/converter.log" 2>&1) \
    || die "installing llama.cpp's converter failed: $work/logs/converter.log"
fi
if [ -n "${CORPUS_FILE:-}" ] && [ ! -f "$code/$CORPUS_TARGET" ]; then
  mkdir -p "$(dirname "$code/$CORPUS_TARGET")"; cp "$bundle/$CORPUS_FILE" "$code/$CORPUS_TARGET"
fi
cat > "$work/env.sh" <<EOF
# source me: the offline environment of this bundle (venv, no hub access), in the project's folder
. "$venv/bin/activate"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
cd "$code"
EOF
# shellcheck disable=SC1091
. "$work/env.sh"
[ -z "$profile" ] || python -m jinmei.config.profile "$profile" || die "--profile $profile could not be applied"
if [ "$first" = 1 ]; then   # base.model / corpus.path at the bundled copies; the first time only (keeps later edits)
  python - "$BASE_KIND" "$bundle/model/base" "${CORPUS_PATH:-}" "${CORPUS_TARGET:-}" > "$work/offline-params.yaml" <<'PY'
import sys, yaml
kind, base, corpus, target = sys.argv[1:]
delta = {}
if kind == "folder":
    delta["base"] = {"model": base}
if target and target != corpus:   # an absolute corpus.path on the bundling machine
    delta["corpus"] = {"path": target}
print(yaml.safe_dump(delta, allow_unicode=True) if delta else "{}")
PY
  [ "$(cat "$work/offline-params.yaml")" = "{}" ] || python -m jinmei.config.profile "$work/offline-params.yaml" \
    || die "params.yaml could not point at the bundled model/corpus"
  if [ -d .git ]; then
    git diff --quiet || git "${as_user[@]}" commit -qam "offline: base.model and corpus.path at the bundle's copies"
  else
    ! command -v dvc >/dev/null || dvc config --local core.no_scm true   # no git: dvc repro works, dvc exp does not
  fi
fi
if [ -n "${BASE_PACKAGE:-}" ] && [ ! -f "$work/check-install.ok" ]; then   # decodes the bundled GGUF
  python -m jinmei.check_install $([ "$cuda" = 1 ] && echo --gpu) > "$work/logs/check-install.log" 2>&1 \
    || die "the set-up check failed: $work/logs/check-install.log"
  touch "$work/check-install.ok"; sed 's/^/  /' "$work/logs/check-install.log"
elif [ "$cuda" = 1 ]; then
  python -c 'import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_gpu_offload())' \
    || die "llama-cpp-python was built without GPU offload: $work/logs/llama-build.log"
fi
if [ "$mode" = setup ]; then
  echo "set up in $work. Run anything there with:  source $work/env.sh"
  exit 0
fi

# ---- 5. the pipeline, then its results packed for the way back
command -v dvc >/dev/null || die "dvc is not installed: make the bundle without --no-wheels (dvc is one of the project's pins)"
stages=$(python -c 'import yaml; print(" ".join(yaml.safe_load(open("dvc.yaml", encoding="utf-8"))["stages"]))')
[ ${#dvc_args[@]} -gt 0 ] || dvc_args=(repro)
case " $stages " in *" ${dvc_args[0]} "*) dvc_args=(repro "${dvc_args[@]}") ;; esac
log=$work/logs/dvc-$(date +%Y%m%d-%H%M%S).log
echo "dvc ${dvc_args[*]}   (log: $log)"
set +e; dvc "${dvc_args[@]}" 2>&1 | tee "$log"; rc=${PIPESTATUS[0]}; set -e
keep=(); for p in params.yaml dvc.lock metrics models/gguf data/predictions; do [ -e "$p" ] && keep+=("$p"); done
results=$work/results-$(date +%Y%m%d-%H%M%S).tar.gz
tar czf "$results" "${keep[@]}" -C "$work" logs
echo "dvc exit $rc; results to bring back: $results ($(du -h "$results" | cut -f1): ${keep[*]}, logs)"
exit "$rc"
