#!/usr/bin/env bash
# Install the FFCV fast loader into a virtual environment: `bash scripts/install_ffcv.sh .venv/bin`.
#
# FFCV 1.0.2 compiles a small C++ extension against libjpeg-turbo and OpenCV, found with pkg-config,
# so it needs those system packages first (Debian/Ubuntu names; as root or with sudo).
# Idempotent and fast on re-runs: each step is skipped when what it installs is already there.
# NUMBA_CACHE_DIR is honoured by cssl-bench so FFCV's JIT compilation is paid once, not per process.
set -euo pipefail
BIN="${1:-.venv/bin}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$BIN/python"
if [ ! -x "$PY" ]; then
  echo "install_ffcv.sh: no python at $PY (give the venv's bin folder, e.g. .venv/bin)" >&2
  exit 2
fi

# 1. system packages (headers and pkg-config files the extension is compiled against)
missing=()
for pkg in pkg-config libturbojpeg0-dev libopencv-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "installing system packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# 2. the Python package (the `ffcv` extra of cssl-bench)
# (checked without importing ffcv, which takes seconds: the package, its compiled extension and numba)
have_ffcv() {
  "$PY" - <<'PY'
import glob, importlib.util, os, sys
s = importlib.util.find_spec("ffcv")
ok = s is not None and importlib.util.find_spec("numba") is not None and glob.glob(os.path.join(list(s.submodule_search_locations)[0], "_libffcv*.so"))
sys.exit(0 if ok else 1)
PY
}
if have_ffcv; then
  echo "ffcv already installed in $BIN"
else
  "$BIN/pip" install -q "ffcv==1.0.2" "numba>=0.58"
  "$PY" -c "import ffcv, numba; print('ffcv installed:', ffcv.__file__)"
fi
