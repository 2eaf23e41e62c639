#!/usr/bin/env bash
# Set up (or update) the environment, then run the demo (ditta-demo). Extra arguments go to it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
# shellcheck source=env.sh
. "$root/scripts/env.sh"
cd "$root"
exec ditta-demo "$@"
