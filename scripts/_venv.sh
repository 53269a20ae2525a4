# Sourced by scripts/*: makes ./.venv on first use and installs meshca into it.
# MESHCA_EXTRAS selects extras (e.g. "test"); a stamp file skips reinstalling when
# pyproject.toml has not changed. pip runs quietly, so say what the wait is for first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
extras="${MESHCA_EXTRAS:-}"
stamp="$venv/.meshca-installed${extras:+-$extras}"
if [ ! -f "$stamp" ]; then
  echo "installing meshca${extras:+ with [$extras]} (first run; about a minute)…" >&2
elif [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "reinstalling meshca (pyproject.toml changed)…" >&2
fi
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  spec="$root"
  [ -n "$extras" ] && spec="$root[$extras]"
  "$venv/bin/pip" install -q -e "$spec"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
