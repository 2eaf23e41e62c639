#!/usr/bin/env bash
# Set up (or update) the environment, then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
# shellcheck source=env.sh
. "$root/scripts/env.sh"
cd "$root"
set +e
python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "[test] pytest collected no tests: the suite is missing or every test was filtered out" >&2
  exit 1
fi
exit "$status"
