# Sourced by scripts/*: makes ./.venv on first use and installs meshca into it.
# MESHCA_EXTRAS selects extras (e.g. "test"); a stamp file skips reinstalling when
# pyproject.toml has not changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
extras="${MESHCA_EXTRAS:-}"
stamp="$venv/.meshca-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  spec="$root"
  [ -n "$extras" ] && spec="$root[$extras]"
  "$venv/bin/pip" install -q -e "$spec"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
