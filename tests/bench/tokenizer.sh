#!/bin/sh
# Tokenizer speed: load time of each committed real vocabulary, and
# encoding throughput on English prose (the GPL-3 text, about 35 KB,
# repeated to 2 MB), one core. Medians of 5 runs.
#   tests/bench/tokenizer.sh
set -eu
cd "$(dirname "$0")/../.."
[ -x build/moescope ] || tools/setup.sh
ms=build/moescope
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# one long line per 4 KB so that per-line output stays small
for i in $(seq 1 60); do cat /usr/share/common-licenses/GPL-3; done | tr '\n' ' ' | fold -w 4096 | head -c 2097152 >"$tmp/prose.txt"
bytes=$(wc -c <"$tmp/prose.txt")
: >"$tmp/empty.txt"

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
secs() { # command...: wall seconds
    s=$(date +%s.%N)
    "$@" >/dev/null
    e=$(date +%s.%N)
    awk -v a="$s" -v b="$e" 'BEGIN {print b - a}'
}

printf '%-8s %12s %12s %10s\n' vocab "load (s)" "encode MB/s" "ids/KB"
for v in qwen3 llama3 llama2; do
    dir=tests/fixtures/tokenizer/$v
    load=$(for r in 1 2 3 4 5; do secs taskset -c 0 $ms tokenize "$dir" <"$tmp/empty.txt"; done | median)
    full=$(for r in 1 2 3 4 5; do secs taskset -c 0 $ms tokenize "$dir" <"$tmp/prose.txt"; done | median)
    ids=$($ms tokenize "$dir" <"$tmp/prose.txt" | wc -w)
    awk -v v="$v" -v l="$load" -v f="$full" -v b="$bytes" -v n="$ids" \
        'BEGIN {printf "%-8s %12.3f %12.2f %10.1f\n", v, l, b / 1e6 / (f - l), n * 1024 / b}'
done
echo "(English prose, $bytes bytes; one core via taskset; load = tokenizing empty input)"
