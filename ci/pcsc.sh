# Sourced by ci/test.sh: pcscd for the test run, and a smoke check of the virtual YubiKey.
#
# pcsc_start starts pcscd when none runs, records its PID and stops it when the shell
# exits — only a pcscd it started. pcsc_smoke serves one virtual YubiKey (the
# tke-piv-vcard binary) to vsmartcard's first virtual reader, checks that yubico-piv-tool
# sees it, and stops it again. A missing component fails the run (ci/setup.sh installs
# them).

PCSCD_STARTED_PID=""

pcsc_stop() {
    if [ -n "$PCSCD_STARTED_PID" ]; then
        kill "$PCSCD_STARTED_PID" 2>/dev/null || true
        wait "$PCSCD_STARTED_PID" 2>/dev/null || true
        PCSCD_STARTED_PID=""
    fi
}

pcsc_start() {
    local pcscd
    pcscd="$(command -v pcscd || echo /usr/sbin/pcscd)"
    if [ ! -x "$pcscd" ]; then
        echo "ci/pcsc.sh: pcscd is not installed: run ci/setup.sh" >&2
        return 1
    fi
    # A live pcscd (not a zombie), or systemd's socket activation.
    if pgrep -x -r R,S,D pcscd >/dev/null 2>&1 \
        || { command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet pcscd.socket 2>/dev/null; }; then
        echo "ci/pcsc.sh: using the pcscd that runs already"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "ci/pcsc.sh: pcscd is not running and only root can start it: sudo systemctl start pcscd (or sudo pcscd), then rerun" >&2
        return 1
    fi
    "$pcscd" --foreground >/dev/null 2>&1 &
    PCSCD_STARTED_PID=$!
    trap pcsc_stop EXIT
    local i
    for i in $(seq 1 100); do
        [ -S /run/pcscd/pcscd.comm ] && { echo "ci/pcsc.sh: started pcscd (pid $PCSCD_STARTED_PID)"; return 0; }
        kill -0 "$PCSCD_STARTED_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "ci/pcsc.sh: pcscd did not start" >&2
    return 1
}

pcsc_smoke() {
    local bin="${CARGO_TARGET_DIR:-target}/debug/tke-piv-vcard" vc out i
    cargo build -q -p tke-piv-vcard
    "$bin" --serial 7654321 --connect-timeout 10 2>/dev/null &
    vc=$!
    out=""
    for i in $(seq 1 50); do
        if out="$(yubico-piv-tool -r Virtual -a status 2>&1)" && grep -q "Serial Number:.7654321" <<<"$out"; then
            break
        fi
        out=""
        sleep 0.2
    done
    kill "$vc" 2>/dev/null || true
    wait "$vc" 2>/dev/null || true
    if [ -z "$out" ]; then
        echo "ci/pcsc.sh: yubico-piv-tool does not see the virtual YubiKey: is vsmartcard-vpcd installed (ci/setup.sh) and was pcscd started after it?" >&2
        return 1
    fi
    echo "ci/pcsc.sh: yubico-piv-tool sees the virtual YubiKey:"
    sed 's/^/    /' <<<"$out" | head -4
}
