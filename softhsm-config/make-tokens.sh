#!/usr/bin/env bash
# Creates a private SoftHSM2 token directory with N labelled tokens.
#
#   softhsm-config/make-tokens.sh DIR LABEL [LABEL...]
#
# Writes DIR/softhsm2.conf and DIR/tokens/, initializes one token per LABEL (with --free,
# so SoftHSM2 picks the slot; tokens are then found by label, never by slot number), and
# writes the PINs to DIR/<LABEL>.pin (user PIN) and DIR/<LABEL>.so-pin, mode 0600.
# Prints the `export SOFTHSM2_CONF=...` line to use the tokens.
#
# PINs are random unless TKE_TEST_PIN / TKE_TEST_SO_PIN are set.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 DIR LABEL [LABEL...]" >&2
    exit 2
fi
command -v softhsm2-util >/dev/null 2>&1 || {
    echo "$0: softhsm2-util not found: install softhsm2 (apt-get install softhsm2)" >&2
    exit 1
}
dir=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
umask 077
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
sed "s|@TOKENDIR@|$dir/tokens|" "$here/softhsm2.conf.in" > "$dir/softhsm2.conf"
export SOFTHSM2_CONF="$dir/softhsm2.conf"

rand_pin() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
for label in "$@"; do
    pin=${TKE_TEST_PIN:-$(rand_pin)}
    so_pin=${TKE_TEST_SO_PIN:-$(rand_pin)}
    softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$so_pin" >/dev/null
    printf '%s' "$pin" > "$dir/$label.pin"
    printf '%s' "$so_pin" > "$dir/$label.so-pin"
done
echo "export SOFTHSM2_CONF=$dir/softhsm2.conf"
