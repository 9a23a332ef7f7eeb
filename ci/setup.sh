#!/usr/bin/env bash
# Installs the system components the tests use when they are missing. Each one is a
# real component (openssl, SoftHSM2, OpenSC); in CI a component that cannot be installed
# fails the run — tests never skip for lack of one.
set -euo pipefail

need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need+=(opensc)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "ci/setup.sh: missing ${need[*]}: install them (sudo apt-get install ${need[*]}) and rerun" >&2
        exit 1
    fi
    echo "ci/setup.sh: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
