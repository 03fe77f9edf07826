#!/usr/bin/env bash
# Runs every rota fuzz target for a bounded time and prints one summary line per target.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]        (default 60; run from anywhere)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# Environment: TARGETS="config dcgm_text" picks targets; SANITIZER=address (default none: the
# crate forbids unsafe code, and without ASan libFuzzer runs several times faster). Builds with
# debug assertions, so an integer overflow panics as it does in the tests.
#
# Each target starts from its seed corpus fuzz/corpus/<target>/ (read only) and grows a scratch
# corpus in fuzz/work/<target>/ (ignored by git; kept between runs so coverage accumulates).
# A crash leaves its input in fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/
# so `cargo test --test fuzz_regressions` replays it on stable. Exit status: 1 if any target
# crashed, else 0.
set -uo pipefail

seconds="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
targets="${TARGETS:-extender_verbs wire_decode config telemetry_json dcgm_text}"
sanitizer="${SANITIZER:-none}"

cd "$root" || exit 2
cargo +nightly fuzz build --fuzz-dir "$here" -s "$sanitizer" -a || exit 2

failed=0
summary=()
for target in $targets; do
    work="$here/work/$target"
    log="$here/work/$target.log"
    mkdir -p "$work" "$here/artifacts/$target"
    cargo +nightly fuzz run --fuzz-dir "$here" -s "$sanitizer" -a "$target" \
        "$work" "$here/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$here/artifacts/$target/" >"$log" 2>&1
    status=$?
    # libFuzzer's last status line: "#RUNS DONE cov: N ft: N corp: N/Nb ... exec/s: N ..."
    line="$(grep -E '^#[0-9]+' "$log" | tail -n 1)"
    runs="$(grep -E '^stat::number_of_executed_units' "$log" | tail -n 1 | awk '{print $2}')"
    rate="$(grep -E '^stat::average_exec_per_sec' "$log" | tail -n 1 | awk '{print $2}')"
    cov="$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$line")"
    corp="$(sed -nE 's/.*corp: ([0-9]+).*/\1/p' <<<"$line")"
    if [ "$status" -ne 0 ]; then
        failed=1
        verdict="CRASH (status $status; see $log and fuzz/artifacts/$target/)"
    else
        verdict="ok"
    fi
    summary+=("$(printf '%-15s %s  %ss  runs %s  exec/s %s  cov %s  corpus %s' \
        "$target" "$verdict" "$seconds" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${corp:-?}")")
done

printf '%s\n' "${summary[@]}"
exit "$failed"
