#!/usr/bin/env bash
# Installs the system components the tests use when they are missing. Each one is a
# real component (openssl, SoftHSM2, OpenSC, the PC/SC stack with vsmartcard's virtual
# reader and yubico-piv-tool); in CI a component that cannot be installed fails the run —
# tests never skip for lack of one.
set -euo pipefail

has() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

# `ci/setup.sh --build` installs only what building `tke` needs (the `pcsc` crate links
# to libpcsclite); without it, everything the tests use.
need=()
if [ "${1:-}" = "--build" ]; then
    has pkg-config || need+=(pkg-config)
    { has pkg-config && pkg-config --exists libpcsclite; } || need+=(libpcsclite-dev)
else
has openssl || need+=(openssl)
has softhsm2-util || need+=(softhsm2)
has pkcs11-tool || need+=(opensc)
# The PC/SC stack for YubiKey signers: pcscd, vsmartcard's virtual reader (the tests'
# virtual YubiKey plugs into it), yubico-piv-tool, and what the `pcsc` crate links to.
has pcscd || need+=(pcscd)
grep -qls libifdvpcd /etc/reader.conf.d/* 2>/dev/null || need+=(vsmartcard-vpcd)
has yubico-piv-tool || need+=(yubico-piv-tool)
has pkg-config || need+=(pkg-config)
{ has pkg-config && pkg-config --exists libpcsclite; } || need+=(libpcsclite-dev)
fi

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "ci/setup.sh: missing ${need[*]}: install them (sudo apt-get install ${need[*]}) and rerun" >&2
        exit 1
    fi
    echo "ci/setup.sh: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
