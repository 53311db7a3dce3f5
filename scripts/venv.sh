# Sourced by scripts/demo and scripts/test: a working .venv built by a Python difymaint supports.
# A .venv left by another interpreter (Ubuntu 22.04's 3.10, a removed pyenv version, a half-finished earlier
# attempt) is recreated instead of failing every later run until someone deletes it by hand.

MIN_PYTHON_TEXT="3.11"

python_ok() {  # python_ok INTERPRETER: is it runnable and new enough?
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

pick_python() {  # $PYTHON if set, else the first of python3 python3.13 python3.12 python3.11 that is new enough
  local candidate
  for candidate in ${PYTHON:-python3 python3.13 python3.12 python3.11}; do
    if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
      command -v "$candidate"
      return 0
    fi
  done
  echo "difymaint needs Python $MIN_PYTHON_TEXT or newer (found: $(python3 --version 2>&1 || echo none));" \
    "on Ubuntu 22.04: sudo apt install python3.11 python3.11-venv, then PYTHON=python3.11 $0" >&2
  return 1
}

ensure_venv() {  # ensure_venv DIR: DIR/bin/python exists, runs, is new enough, and has pip
  local venv="$1" python
  if [ -e "$venv" ] && ! { python_ok "$venv/bin/python" && "$venv/bin/python" -m pip --version >/dev/null 2>&1; }; then
    echo "$venv is stale or broken (built by another Python?); recreating it" >&2
    rm -rf "$venv"
  fi
  if [ ! -e "$venv" ]; then
    python="$(pick_python)" || return 1
    "$python" -m venv "$venv" || { rm -rf "$venv"; return 1; }
  fi
}
