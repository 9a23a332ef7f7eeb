#!/usr/bin/env bash
# Runs every test of the workspace: the README's test command, and what CI runs.
# Installs the system components the tests need when they are missing (ci/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

ci/setup.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
