#!/bin/sh
# tests/bench/run.sh --llama-bench: the ratio table it prints from a saved
# moescope bench table and llama-bench -o json output. Both inputs in
# tests/bench/data/ are written by hand in the two programs' output layouts
# (llama-bench's from tools/llama-bench/llama-bench.cpp, json_printer), with
# made-up figures chosen so that medians and averages differ: they test the
# parsing, they are not measurements.
. "${top_srcdir:-.}/tests/tap.sh"
src=$(cd "${top_srcdir:-.}" && pwd) # absolute: run.sh changes directory
if ! command -v jq >/dev/null; then
    echo "1..0 # SKIP jq is not installed (tools/setup.sh installs it)"
    exit 0
fi
out=$(sh "$src/tests/bench/run.sh" --ratios "$src/tests/bench/data/moescope-bench-format.md" \
    "$src/tests/bench/data/llama-bench-format.json" 2>&1)
row() { printf '%s\n' "$out" | grep -F "| $1 |"; }
tap_ok "$([ "$(row pp128)" = "| pp128 | 400.00 | 160.00 | 2.50x |" ] && echo 0 || echo 1)" \
    "pp128 over llama.cpp's median of 3 samples (not its average): $(row pp128)"
tap_ok "$([ "$(row tg64)" = "| tg64 | 60.00 | 43.00 | 1.40x |" ] && echo 0 || echo 1)" \
    "tg64 over the median of an even count of samples: $(row tg64)"
tap_ok "$([ "$(row 'tg64 @ d4096')" = "| tg64 @ d4096 | 50.00 | 30.00 | 1.67x |" ] &&
    [ "$(row 'tg64 @ d4096 kv f16')" = "| tg64 @ d4096 kv f16 | 55.00 | 30.00 | 1.83x |" ] && echo 0 || echo 1)" \
    "depth tests meet llama-bench's n_depth, with either KV cache type"
tap_ok "$([ "$(row pp512)" = "| pp512 | 380.00 | - | - |" ] && echo 0 || echo 1)" \
    "a test llama-bench did not run has no ratio: $(row pp512)"
tap_ok "$(printf '%s\n' "$out" | grep -q '^| test | moescope t/s | llama.cpp t/s | ratio |$' &&
    ! printf '%s\n' "$out" | grep -q 'trace' && echo 0 || echo 1)" "a header, and the +trace row is not compared"
tap_done
