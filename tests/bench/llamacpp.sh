#!/bin/sh
# moescope against llama.cpp on the same GGUF files, in the same session,
# without a llama.cpp build of your own: llama.cpp comes from npm as
# node-llama-cpp's prebuilt binaries (tests/bench/llamacpp/, installed on
# first use; ggml chooses its CPU backend at run time). The Mixtral-shaped
# bench model as F16, Q8_0 and Q4_K_M GGUF files (built from the
# safetensors bench model by tools/gen_gguf.py, given the llama2 test
# vocabulary of the same 32000 ids by gguf_add_vocab.py, since llama.cpp
# needs a tokenizer); ROUNDS rounds alternating the two programs, each
# reporting the median of RUNS runs; then the median of the rounds and the
# ratios moescope / llama.cpp.
#   tests/bench/llamacpp.sh [f16|q8_0|q4_k_m|olmoe|tiny]...   (default: the first three)
# (olmoe: the OLMoE-shaped f16 model, its vocabulary padded to 50304 ids;
# tiny: the bundled tiny-mixtral, F32, with its own byte-level BPE
# tokenizer, as tools/gen_gguf.py --vocab writes it)
# Environment: ROUNDS (3), RUNS (5), THREADS (2). For a llama.cpp build of
# your own, tests/bench/run.sh --llama-bench PATH runs llama-bench instead.
set -eu
cd "$(dirname "$0")/../.."
types=${*:-f16 q8_0 q4_k_m}
rounds=${ROUNDS:-3} runs=${RUNS:-5} threads=${THREADS:-2}
py=/usr/bin/python3
[ -x "$py" ] || py=python3
[ -x build/moescope ] || tools/setup.sh
command -v node >/dev/null || { echo "llamacpp: needs node and npm (apt-get install nodejs npm)" >&2; exit 1; }
[ -d tests/bench/llamacpp/node_modules/node-llama-cpp ] ||
    (cd tests/bench/llamacpp && npm install --no-audit --no-fund --ignore-scripts >&2)
gdir=tests/bench/models/gguf
mkdir -p "$gdir"
# the GGUF file of a type: the Mixtral-shaped model as f16, q8_0 or
# q4_k_m, or the OLMoE-shaped one (olmoe, f16; vocabulary padded to 50304)
base() { case $1 in olmoe) echo olmoe-bench-f16 ;; tiny) echo tiny-mixtral ;; *) echo "mixtral-bench-$1" ;; esac; }
for t in $types; do
    b=$(base "$t")
    [ -f "$gdir/$b-vocab.gguf" ] && continue
    if [ "$t" = tiny ]; then
        "$py" tools/gen_gguf.py --vocab assets/tiny-mixtral "$gdir/$b-vocab.gguf" --pre gpt-2 >&2
        continue
    fi
    src=mixtral-bench-f16 pad= flag=--bench
    [ "$t" = olmoe ] && src=olmoe-bench-f16 pad=50304 flag=--bench-olmoe
    [ -f "tests/bench/models/$src/config.json" ] ||
        "$py" tools/gen_fixtures.py "$flag" "tests/bench/models/$src" >&2 # needs python3-numpy
    if [ ! -f "$gdir/$b.gguf" ]; then
        case $t in
        f16 | olmoe)
            "$py" -c 'import sys; sys.path.insert(0, "tools"); import gen_gguf
gen_gguf.convert(sys.argv[1], sys.argv[2], "F16", True, sys.argv[3], False)' \
                "$(pwd)/tests/bench/models/$src" "$b" "$(pwd)/$gdir" >&2 ;;
        *) "$py" tools/gen_gguf.py --bench "tests/bench/models/$src" "$gdir" >&2 ;;
        esac
    fi
    # shellcheck disable=SC2086
    "$py" tests/bench/gguf_add_vocab.py "$gdir/$b.gguf" "$gdir/$b-vocab.gguf" tests/fixtures/tokenizer/llama2 $pad >&2
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
med() { sort -n | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
for r in $(seq "$rounds"); do
    for t in $types; do
        f=$gdir/$(base "$t")-vocab.gguf
        for args in "-p 128 -n 64" "-p 512 -n 0"; do
            # shellcheck disable=SC2086
            build/moescope bench "$f" $args -t "$threads" -r "$runs" 2>/dev/null |
                awk -F'|' -v t="$t" '$7 ~ /(pp|tg)[0-9]+/ {gsub(/ /, "", $7); split($8, v, " "); print t, $7, v[1]}'
        done >>"$tmp/moescope"
        vocab=30100
        [ "$t" = tiny ] && vocab=512
        (cd tests/bench/llamacpp && node bench.mjs "../../../$f" "$runs" "$threads" 128,512 64 "$vocab") |
            tr -d '{}"' | tr ',' '\n' | awk -F: -v t="$t" '$1 ~ /^(pp|tg)[0-9]+$/ {print t, $1, $2}' >>"$tmp/llama"
        echo "round $r $t done (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    done
done
printf '%-8s %-6s %12s %12s %8s\n' type test moescope llama.cpp ratio
for t in $types; do
    for test in pp128 pp512 tg64; do
        a=$(awk -v t="$t" -v x="$test" '$1 == t && $2 == x {print $3}' "$tmp/moescope" | med)
        b=$(awk -v t="$t" -v x="$test" '$1 == t && $2 == x {print $3}' "$tmp/llama" | med)
        [ -n "$a" ] && [ -n "$b" ] && printf '%-8s %-6s %12.1f %12.1f %7.2fx\n' "$t" "$test" "$a" "$b" "$(echo "$a $b" | awk '{print $1 / $2}')"
    done
done
echo "(t/s, 2 threads, medians of $rounds rounds of $runs runs; llama.cpp: node-llama-cpp $(cd tests/bench/llamacpp && node -p 'JSON.parse(require("fs").readFileSync("node_modules/node-llama-cpp/package.json")).version' 2>/dev/null))"
