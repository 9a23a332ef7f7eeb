# Sourced by ci/test.sh: pcscd for the test run, and a smoke check of the virtual YubiKey.
#
# pcsc_start starts pcscd when none runs, records its PID and stops it when the shell
# exits — only a pcscd it started — and, as root, keeps a pcscd running for the rest of
# the run (pcsc_watch). pcsc_smoke serves one virtual YubiKey (the tke-piv-vcard binary)
# to vsmartcard's first virtual reader, checks that yubico-piv-tool sees it, and stops it
# again. A missing component fails the run (ci/setup.sh installs them).

PCSCD_STARTED_PID=""
PCSC_WATCH_PID=""

pcsc_stop() {
    if [ -n "$PCSC_WATCH_PID" ]; then
        kill "$PCSC_WATCH_PID" 2>/dev/null || true
        wait "$PCSC_WATCH_PID" 2>/dev/null || true
        PCSC_WATCH_PID=""
    fi
    if [ -n "$PCSCD_STARTED_PID" ]; then
        kill "$PCSCD_STARTED_PID" 2>/dev/null || true
        wait "$PCSCD_STARTED_PID" 2>/dev/null || true
        PCSCD_STARTED_PID=""
    fi
}

# A live pcscd (not a zombie), or systemd's socket activation (which starts one on demand).
pcsc_alive() {
    pgrep -x -r R,S,D pcscd >/dev/null 2>&1 \
        || { command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet pcscd.socket 2>/dev/null; }
}

# Why a watchdog: a pcscd this script reuses is not ours to keep alive. One started with
# --auto-exit (the YubiKey test fixture starts such a pcscd when none runs, and it may be
# left from an earlier run) exits a minute after its last client — e.g. while the
# workspace compiles — and whoever started any other may stop it. Checking once before
# the tests cannot cover a run of many minutes, and which pcscd it was or why it went does
# not matter: so a background loop checks every second that a pcscd is alive and, when
# none is, starts one of its own (stopped when the loop ends, with the run). A test that
# was talking to the old pcscd at that moment fails with the fixture's message; the next
# ones find the new pcscd (the fixture connects afresh for each test, tke-piv-vcard
# reconnects to vpcd). Starting pcscd needs root: without it there is no watchdog, and a
# test that finds no pcscd fails saying how to start one (tke-piv-vcard's fixture).
pcsc_watch() {
    local pcscd=$1
    [ "$(id -u)" = 0 ] || return 0
    (
        own=""
        trap '[ -n "$own" ] && kill "$own" 2>/dev/null; exit 0' TERM INT
        while sleep 1; do
            pcsc_alive && continue
            echo "ci/pcsc.sh: pcscd went away during the run; starting a new one" >&2
            "$pcscd" --foreground >/dev/null 2>&1 &
            own=$!
            # Give it time to come up before checking again.
            sleep 2
        done
    ) &
    PCSC_WATCH_PID=$!
    trap pcsc_stop EXIT
}

pcsc_start() {
    local pcscd
    pcscd="$(command -v pcscd || echo /usr/sbin/pcscd)"
    if [ ! -x "$pcscd" ]; then
        echo "ci/pcsc.sh: pcscd is not installed: run ci/setup.sh" >&2
        return 1
    fi
    if pcsc_alive; then
        echo "ci/pcsc.sh: using the pcscd that runs already"
        pcsc_watch "$pcscd"
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
        if [ -S /run/pcscd/pcscd.comm ]; then
            echo "ci/pcsc.sh: started pcscd (pid $PCSCD_STARTED_PID)"
            pcsc_watch "$pcscd"
            return 0
        fi
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
