#!/usr/bin/env bash
# Coverage-guided fuzzing of TKE's parsers and crypto unit (crates/tke-fuzz) with afl.rs
# on stable Rust. Not part of CI, which replays the corpus and mutations of it in
# `cargo test -p tke-fuzz`; run this for long campaigns.
#
#   ci/fuzz.sh [--seconds N] [--jobs J] [TARGET...]
#
# Runs each target for N seconds (default 60), J at a time (default: the number of
# cores), then prints executions, speed, edges covered, stability, crashes and hangs per
# target from AFL++'s fuzzer_stats. Crashes and hangs are copied to fuzz/findings/TARGET
# and make the script exit 1. Installs cargo-afl (and its AFL++ runtime) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
jobs=$(nproc)
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) echo "ci/fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
all=(request response envelope certificate key_file pkcs11_uri http_head unit)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
    [ -f "fuzz/src/bin/$t.rs" ] || { echo "ci/fuzz.sh: no target $t (targets: ${all[*]})" >&2; exit 2; }
done

if ! cargo afl --version >/dev/null 2>&1; then
    echo "== installing cargo-afl"
    cargo install cargo-afl --locked
fi

echo "== seeds and build"
cargo run -q -p tke-fuzz --example seeds -- fuzz/corpus
(cd fuzz && cargo afl build --release -q)

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
mkdir -p fuzz/out
run() {
    local t=$1
    rm -rf "fuzz/out/$t"
    cargo afl fuzz -i "fuzz/corpus/$t" -o "fuzz/out/$t" -V "$seconds" -t 2000 \
        "fuzz/target/release/$t" >"fuzz/out/$t.log" 2>&1 || {
        echo "ci/fuzz.sh: afl-fuzz failed on $t; see fuzz/out/$t.log" >&2
        tail -20 "fuzz/out/$t.log" >&2
        return 1
    }
}
echo "== fuzzing ${targets[*]} for ${seconds}s each, $jobs at a time"
pids=()
for t in "${targets[@]}"; do
    run "$t" &
    pids+=($!)
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done

stat() { sed -n "s/^$2 *: *//p" "fuzz/out/$1/default/fuzzer_stats"; }
printf '%-12s %14s %10s %8s %10s %8s %6s\n' TARGET EXECUTIONS EXEC/S EDGES STABILITY CRASHES HANGS
for t in "${targets[@]}"; do
    [ -f "fuzz/out/$t/default/fuzzer_stats" ] || { failed=1; continue; }
    crashes=$(stat "$t" saved_crashes)
    hangs=$(stat "$t" saved_hangs)
    printf '%-12s %14s %10s %8s %10s %8s %6s\n' "$t" "$(stat "$t" execs_done)" \
        "$(stat "$t" execs_per_sec)" "$(stat "$t" edges_found)" "$(stat "$t" stability)" \
        "$crashes" "$hangs"
    if [ "$crashes" != 0 ] || [ "$hangs" != 0 ]; then
        mkdir -p "fuzz/findings/$t"
        cp fuzz/out/"$t"/default/crashes/id* fuzz/out/"$t"/default/hangs/id* "fuzz/findings/$t/" 2>/dev/null || true
        failed=1
    fi
done
[ "$failed" = 0 ] || { echo "ci/fuzz.sh: findings (or failures) above; inputs in fuzz/findings/" >&2; exit 1; }
