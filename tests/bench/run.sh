#!/bin/sh
# moescope against llama.cpp, side by side, in llama-bench's table.
#
#   tests/bench/run.sh [--llama-bench PATH] [--quick] [--depth N] [MODEL]... [-- extra moescope bench flags]
#
# MODEL: mixtral (default) and olmoe, the random-weight bench models, built
# once into tests/bench/models/ by tools/gen_fixtures.py (f16 safetensors:
# Mixtral-shaped 0.49 B, dim 1024, 8 layers, 16 heads, 4 KV heads, 8 experts
# top-2, width 2048, vocab 32000, about 1 GB; OLMoE-shaped 0.94 B, 64 experts
# top-8, width 512, 1.9 GB; needs python3-numpy); micro-tiny and
# tiny-mixtral, the bundled models in assets/. All four when none is named.
# mixtral-q8_0 and mixtral-q4_k_m: the Mixtral bench model as Q8_0 and
# llama-quantize's Q4_K_M mix (Q4_K, Q6_K, Q5_K, Q8_0), GGUF files written
# once into tests/bench/models/gguf/ by tools/gen_gguf.py --bench (0.52 and
# 0.30 GB, a few minutes); with --llama-bench, llama.cpp runs the same file.
#
# For each: pp128 and tg64 (with the routing trace recorded and without, in
# alternating runs), pp512, and on the bench models tg64 after 4096 tokens
# and 128 tokens of context with an f32, an f16 and a q8_0 KV cache, and
# the ratio of the two depths. Medians of 5 runs at 2 threads (--quick: 3
# runs, no depths; --depth N: N tokens instead of 4096).
#
# --llama-bench PATH runs a llama.cpp llama-bench the user has built on the
# GGUF version of the same model (F16, converted once by tools/gen_gguf.py),
# with the same threads, tests and runs, in this same session, and prints
# moescope's median over llama.cpp's median for every test. llama.cpp is not
# part of this repository: without the option no ratios are printed.
#
# --ratios TABLE JSON prints only the ratio table of a saved moescope bench
# output and a saved llama-bench -o json output (tests/bench_ratios.sh).
set -eu
cd "$(dirname "$0")/../.."
usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
llama="" models="" reps=5 depth=4096 ratios_only="" ratios_md="" ratios_json=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case $1 in
    --llama-bench)
        [ $# -ge 2 ] || { echo "bench: --llama-bench needs the path of llama-bench" >&2; exit 2; }
        llama=$2
        shift
        ;;
    --llama-bench=*) llama=${1#*=} ;;
    --quick) reps=3 depth=0 ;;
    --depth)
        [ $# -ge 2 ] && [ "$2" -ge 0 ] 2>/dev/null || { echo "bench: --depth needs a number of tokens" >&2; exit 2; }
        depth=$2
        shift
        ;;
    --ratios)
        [ $# -ge 3 ] || { echo "bench: --ratios needs a moescope bench table and a llama-bench JSON file" >&2; exit 2; }
        ratios_only=1 ratios_md=$2 ratios_json=$3
        shift 2
        ;;
    -h | --help) usage; exit 0 ;;
    mixtral | olmoe | micro-tiny | tiny-mixtral | mixtral-q8_0 | mixtral-q4_k_m) models="$models $1" ;;
    *)
        echo "bench: unknown model or option '$1' (mixtral, olmoe, micro-tiny, tiny-mixtral, mixtral-q8_0, mixtral-q4_k_m)" >&2
        exit 2
        ;;
    esac
    shift
done
[ "${1:-}" = "--" ] && shift
[ -n "$models" ] || models="mixtral olmoe micro-tiny tiny-mixtral"
if [ -n "$llama" ] && [ ! -x "$llama" ]; then
    echo "bench: --llama-bench $llama is not an executable file" >&2
    exit 2
fi
command -v jq >/dev/null || [ -z "$llama$ratios_only" ] || { echo "bench: jq reads llama-bench's JSON; tools/setup.sh installs it" >&2; exit 2; }
bin=${MOESCOPE:-build/moescope}
[ -n "$ratios_only" ] || [ -x "$bin" ] || tools/setup.sh
# Debian's python3 (a python3 earlier on PATH may lack numpy)
py=/usr/bin/python3
[ -x "$py" ] || py=python3
need_numpy() {
    if ! "$py" -c 'import numpy' 2>/dev/null; then
        echo "bench: installing python3-numpy to build the bench model" >&2
        sudo=""
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get install -y -qq python3-numpy >&2
    fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# "test<TAB>median t/s" for each row of a moescope bench table
moescope_medians() {
    awk -F'|' '/^\| / && $7 !~ /test|trace|-----/ {
        t = $7; gsub(/^ +| +$/, "", t); split($8, v, " "); print t "\t" v[1] }' "$@"
}
# the same from llama-bench -o json, the median of each test's samples
llama_medians() {
    jq -r '.[] | [ (if .n_prompt > 0 then "pp\(.n_prompt)" else "tg\(.n_gen)" end)
                   + (if (.n_depth // 0) > 0 then " @ d\(.n_depth)" else "" end),
                   (.samples_ts | sort | if length % 2 == 1 then .[length / 2 | floor]
                                         else (.[length / 2 - 1] + .[length / 2]) / 2 end) ] | @tsv' "$@"
}

# the ratio table of moescope's table $1 over llama-bench's medians $2
ratios() {
    moescope_medians "$1" >"$tmp/ratios.moescope.tsv"
    echo "| test | moescope t/s | llama.cpp t/s | ratio |"
    echo "| --- | ---: | ---: | ---: |"
    awk -F'\t' 'NR == FNR { ll[$1] = $2; next }
        { t = $1; base = t; sub(/ kv (f16|q8_0)$/, "", base)
          if (base in ll) printf "| %s | %.2f | %.2f | %.2fx |\n", t, $2, ll[base], $2 / ll[base]
          else printf "| %s | %.2f | - | - |\n", t, $2 }' "$2" "$tmp/ratios.moescope.tsv"
}
if [ "$ratios_only" ]; then
    llama_medians "$ratios_json" >"$tmp/ratios.llama.tsv"
    ratios "$ratios_md" "$tmp/ratios.llama.tsv"
    exit 0
fi

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for m in $models; do
    case $m in
    mixtral | olmoe)
        dir=tests/bench/models/$m-bench-f16
        if [ ! -f "$dir/config.json" ]; then
            need_numpy
            if [ "$m" = mixtral ]; then flag=--bench; else flag=--bench-olmoe; fi
            "$py" tools/gen_fixtures.py $flag "$dir"
        fi
        d=$depth
        ;;
    mixtral-q8_0 | mixtral-q4_k_m)
        dir=tests/bench/models/gguf/mixtral-bench-${m#mixtral-}.gguf
        if [ ! -f "$dir" ]; then
            need_numpy
            src=tests/bench/models/mixtral-bench-f16
            [ -f "$src/config.json" ] || "$py" tools/gen_fixtures.py --bench "$src"
            "$py" tools/gen_gguf.py --bench "$src" tests/bench/models/gguf
        fi
        d=0
        ;;
    *) dir=assets/$m d=0 ;;
    esac
    echo "## $m ($dir)"
    "$bin" inspect "$dir" | grep -E 'architecture|parameters|active|read per token'
    out=$tmp/$m.md
    "$bin" bench "$dir" -p 128 -n 64 -t 2 -r $reps --trace "$@" >"$tmp/1"
    "$bin" bench "$dir" -p 512 -n 0 -t 2 -r $reps "$@" >"$tmp/2"
    : >"$tmp/3"
    if [ "$d" -gt 0 ]; then
        # each KV cache type at 128 and at $d tokens of context, the rows
        # of f16 and q8_0 labelled, and the ratio of the two depths
        for kv in f32 f16 q8_0; do
            for dd in 128 "$d"; do
                "$bin" bench "$dir" -p 0 -n 64 -d "$dd" -t 2 -r $reps --kv-type $kv "$@" >"$tmp/d"
                if [ $kv = f32 ]; then cat "$tmp/d"; else
                    sed 's/\(tg64 @ d'"$dd"'\)\([ :|]\)/\1 kv '$kv'\2/' "$tmp/d"; fi >>"$tmp/3"
            done
        done
        moescope_medians "$tmp/3" | awk -F'\t' -v d="$d" '
            { split($1, w, " "); kv = (w[4] == "kv") ? w[5] : "f32"; at[kv, w[3]] = $2 }
            END { printf "long context: tg64 @ d%d / tg64 @ d128:", d
                  n = split("f32 f16 q8_0", k, " ")
                  for (i = 1; i <= n; i++)
                      if (at[k[i], "d128"] > 0)
                          printf " %s %.0f%%", k[i], 100 * at[k[i], "d" d] / at[k[i], "d128"]
                  printf "\n" }' >"$tmp/long"
    fi
    # one table: the header, every row, then the notes below it
    {
        sed -n '1,2p' "$tmp/1"
        grep -h '^| [a-z]' "$tmp/1" "$tmp/2" "$tmp/3" | grep -v '^| model '
        echo
        grep -hv '^|' "$tmp/1" "$tmp/2" "$tmp/3" | grep -v '^$' | sort -u
        if [ "$d" -gt 0 ]; then cat "$tmp/long"; fi
    } >"$out"
    cat "$out"
    echo
    if [ -z "$llama" ]; then
        echo "ratios: none; no llama.cpp run (--llama-bench PATH runs llama-bench on this model's GGUF)"
        echo
        continue
    fi
    if [ "$m" = micro-tiny ]; then
        echo "ratios: none; llama.cpp has no MiCRo architecture"
        echo
        continue
    fi
    gdir=tests/bench/models
    gguf=$gdir/$m-f16.gguf
    case $m in mixtral-q*) gguf=$dir ;; esac
    if [ ! -f "$gguf" ]; then
        need_numpy
        "$py" -c 'import sys; sys.path.insert(0, "tools"); import gen_gguf
gen_gguf.convert(sys.argv[1], sys.argv[2], "F16", True, sys.argv[3], False)' "$(pwd)/$dir" "$m-f16" "$gdir"
    fi
    "$llama" -m "$gguf" -p 128,512 -n 64 -t 2 -r $reps -o json >"$tmp/$m.llama.json"
    llama_medians "$tmp/$m.llama.json" >"$tmp/$m.llama.tsv"
    if [ "$d" -gt 0 ]; then
        "$llama" -m "$gguf" -p 0 -n 64 -d "$d" -t 2 -r $reps -o json >"$tmp/$m.llama-d.json"
        llama_medians "$tmp/$m.llama-d.json" >>"$tmp/$m.llama.tsv"
    fi
    ratios "$out" "$tmp/$m.llama.tsv"
    echo "(medians of $reps runs each; llama.cpp's KV cache is its default f16)"
    echo
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
