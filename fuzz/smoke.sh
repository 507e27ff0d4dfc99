#!/usr/bin/env bash
# CI smoke run of every fuzz target: builds them all once, then runs each for a few
# seconds from its seeds (fuzz/seeds/<target>/). Fails on any crash, timeout or OOM;
# libFuzzer leaves the input in fuzz/artifacts/<target>/. Long runs: see corpus.sh.
#
#   FUZZ_SMOKE_SECONDS   seconds per target (default 8)
#   FUZZ_SMOKE_SANITIZER none | address (default none)
#
# No sanitizer and 16 codegen units by default: CI has two cores, and the ASan build with
# cargo-fuzz's single codegen unit spends minutes compiling the teamgate crate on one of
# them. A few seconds per target checks that every harness builds and survives its seeds
# (a panic, timeout or OOM still fails); finding memory errors is for the long ASan runs
# (`cargo fuzz run -O <target>`).
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SMOKE_SECONDS:-8}
sanitizer=${FUZZ_SMOKE_SANITIZER:-none}
# The same flags for build and run, so `run` never rebuilds.
flags=(-O --sanitizer "$sanitizer" --codegen-units 16)
# cargo-fuzz passes nightly-only flags (-Z sanitizer, -C passes=sancov-module and others);
# stable rustc accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo fuzz --version 2>/dev/null | grep -q '^cargo-fuzz 0\.13\.2'; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi

started=$SECONDS
mapfile -t targets < <(cargo fuzz list)
cargo fuzz build "${flags[@]}"
echo "fuzz smoke: built ${#targets[@]} targets in $((SECONDS - started)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    # New inputs go to the scratch directory (the first one), never into seeds/.
    if ! cargo fuzz run "${flags[@]}" "$t" "$work/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        >"$work/$t.log" 2>&1; then
        failed+=("$t")
        tail -n 60 "$work/$t.log" >&2
    fi
    echo "fuzz smoke: $t: $(grep -a -E '^#[0-9]+' "$work/$t.log" | tail -n 1)"
done

echo "fuzz smoke: ${#targets[@]} targets in $((SECONDS - started)) s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz smoke: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
