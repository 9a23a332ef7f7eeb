#!/usr/bin/env bash
# Runs every test of the workspace: the README's test command, and what CI runs.
# Installs what the tests need when it is missing (openssl for cross-checks).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        echo "ci/test.sh: missing ${need_apt[*]}: install them (sudo apt-get install ${need_apt[*]}) and rerun" >&2
        exit 1
    fi
fi

cargo test --workspace --all-targets
cargo test --workspace --doc
