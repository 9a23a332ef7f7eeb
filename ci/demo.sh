#!/usr/bin/env bash
# The main job, end to end on the embedded fleet: create one service instance of
# 2 operational + 2 recovery + 2 failover emulated crypto units, initialize it with
# `tke auto-init` (thresholds 2/2, three new administrators, a random master key made in
# a recovery unit and copied to every other unit), then show `tke cryptounit-compare`.
#
# Everything lives in a fresh temporary directory (or $TKE_DEMO_DIR), so it never touches
# your own signature keys.
set -euo pipefail
cd "$(dirname "$0")/.."

ci/setup.sh --build   # libpcsclite for the YubiKey signer, installed when missing
# Not -q: a cold build takes minutes here, and a silent terminal looks hung.
echo "== cargo build -p tke-cli (a cold build takes several minutes; cargo shows its progress)"
cargo build -p tke-cli
echo
tke="$PWD/target/debug/tke"
dir="${TKE_DEMO_DIR:-$(mktemp -d -t tke-demo.XXXXXX)}"
umask 077

# Passwords for the three new signature keys come from a secrets file, never from argv.
secrets="$dir/secrets.toml"
mkdir -p "$dir"
for name in alice bob carol; do
    printf '%s = "%s"\n' "$name" "$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
done > "$secrets"

echo "== tke local init (workstation directory: $dir)"
"$tke" --files-dir "$dir" local init --instances 1 --operational 2 --recovery 2 --failover 2
echo
echo "== tke auto-init"
"$tke" --files-dir "$dir" --secrets "$secrets" auto-init \
    --sig-threshold 2 --rev-threshold 2 \
    --new-admin alice --new-admin bob --new-admin carol --yes
echo
echo "== tke cryptounit-compare"
"$tke" --files-dir "$dir" cryptounit-compare
echo
echo "Signature keys and the fleet are in $dir (passwords in $dir/secrets.toml)."
