#!/usr/bin/env bash
# Run a command inside the project's environment (see tools/env.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec "$@"
