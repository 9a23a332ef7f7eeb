#!/usr/bin/env bash
# Runs every test of the workspace: the README's test command, and what CI runs.
# Installs the system components the tests need when they are missing (ci/setup.sh),
# starts pcscd for the run when none runs (ci/pcsc.sh; stopped again at the end), and
# checks that yubico-piv-tool sees the virtual YubiKey before the tests use it. Then runs
# the tke-ceremony examples (ceremonies driven by the library crates alone), and checks
# that the library crates build with each of their cargo features alone.
set -euo pipefail
cd "$(dirname "$0")/.."

ci/setup.sh
. ci/pcsc.sh
pcsc_start
pcsc_smoke
cargo test --workspace --all-targets
cargo test --workspace --doc
# The ceremonies run from a program that uses the library crates alone.
cargo run -q -p tke-ceremony --example auto_init
cargo run -q -p tke-ceremony --example zeroize
# A library user pulls only the transports and backends they turn on: each feature set
# of tke-client and tke-unit builds on its own.
for features in "" https embedded pkcs11; do
    cargo check -q -p tke-client --no-default-features --features "$features"
done
cargo check -q -p tke-unit --no-default-features
