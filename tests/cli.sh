#!/bin/sh
# moescope's command line as a script would use it: greedy generations
# against the reference's golden continuations, the output contract of
# --print-ids, inspect, bench, and the errors a user sees for bad flags.
. "${top_srcdir:-.}/tests/tap.sh"
src=${top_srcdir:-.}
bld=${top_builddir:-.}
ms="$bld/moescope"
gt="$bld/tests/golden_tool"
fix="$src/tests/fixtures"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Greedy continuations through the real binary (which picks OpenBLAS's
# fast core itself), for every case of two fixtures.
for model in mixtral-tiny llama3-tiny; do
    g="$fix/golden/$model.json"
    n=$("$gt" "$g" 0 count)
    i=0
    while [ "$i" -lt "$n" ]; do
        prompt=$("$gt" "$g" "$i" prompt)
        want=$("$gt" "$g" "$i" greedy)
        k=$("$gt" "$g" "$i" k)
        kflag=""
        [ "$k" != 0 ] && kflag="--k $k"
        # shellcheck disable=SC2086
        got=$("$ms" run "$fix/models/$model" --prompt-ids "$prompt" -n 16 --temp 0 --ignore-eos --print-ids $kflag 2>"$tmp/err")
        tap_ok "$([ "$got" = "$want" ] && echo 0 || echo 1)" "run $model case $i (k=$k): greedy ids match the reference"
        [ "$got" = "$want" ] || tap_diag "got:  $got" "want: $want" "$(cat "$tmp/err")"
        i=$((i + 1))
    done
done

g="$fix/golden/mixtral-tiny.json"
prompt=$("$gt" "$g" 4 prompt)
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids "$prompt" -n 16 --temp 0 --ignore-eos --print-ids -t 1 >"$tmp/t1" 2>"$tmp/err1"
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids "$prompt" -n 16 --temp 0 --ignore-eos --print-ids -t 2 >"$tmp/t2" 2>"$tmp/err2"
tap_ok "$(cmp -s "$tmp/t1" "$tmp/t2" && echo 0 || echo 1)" "1 and 2 threads generate the same ids"
tap_ok "$([ "$(wc -l <"$tmp/t1")" = 1 ] && [ ! -s "$tmp/err1" ] && grep -Eq '^[0-9]+( [0-9]+){15}$' "$tmp/t1" && echo 0 || echo 1)" \
    "--print-ids: exactly one line of 16 ids on stdout, nothing on stderr"

# Sampling with a seed repeats; without --print-ids the seed is reported.
a=$("$ms" run "$fix/models/mixtral-tiny" --prompt-ids 1,2,3 -n 24 --temp 1 --seed 7 2>"$tmp/s1")
b=$("$ms" run "$fix/models/mixtral-tiny" --prompt-ids 1,2,3 -n 24 --temp 1 --seed 7 2>/dev/null)
tap_ok "$([ -n "$a" ] && [ "$a" = "$b" ] && echo 0 || echo 1)" "sampling with --seed 7 repeats"
tap_ok "$(grep -q 'seed 7' "$tmp/s1" && grep -q 't/s' "$tmp/s1" && echo 0 || echo 1)" "stderr reports the seed and speed"

# Stops at end-of-sequence unless told not to: the output never passes eos.
out=$("$ms" run "$fix/models/mixtral-tiny" --prompt-ids 5 -n 200 --temp 1.5 --seed 3 --print-ids 2>/dev/null)
cnt=$(echo "$out" | tr ' ' '\n' | grep -c .)
early=$(echo "$out" | tr ' ' '\n' | head -n -1 | grep -cx 2)
last=$(echo "$out" | tr ' ' '\n' | tail -n 1)
tap_ok "$([ "$early" = 0 ] && { [ "$cnt" = 200 ] || [ "$last" = 2 ]; } && echo 0 || echo 1)" "generation ends at eos (id 2) or after -n tokens ($cnt tokens, last $last)"
out=$("$ms" run "$fix/models/mixtral-tiny" --prompt-ids 5 -n 200 --temp 1.5 --seed 3 --print-ids --ignore-eos 2>/dev/null)
tap_ok "$([ "$(echo "$out" | tr ' ' '\n' | grep -c .)" = 200 ] && echo 0 || echo 1)" "--ignore-eos generates all 200 tokens"

# --trace: every prompt and generated token, every layer, in JSON
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3,4,5,6 -n 6 --temp 0 --ignore-eos --print-ids --k 3 --trace "$tmp/trace.json" >"$tmp/gen" 2>"$tmp/err"
ids="3,4,5,6,$(tr ' ' ',' <"$tmp/gen")"
why=$("$bld/tests/trace_check" "$tmp/trace.json" "$ids" 4 3 8 3)
tap_ok $? "--trace writes 10 tokens x 3 layers with probabilities, 3 experts, weights and colour${why:+: $why}"
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3 -n 2 --trace "$tmp/no/such/dir/t.json" >/dev/null 2>"$tmp/err"
tap_ok "$([ $? = 1 ] && grep -q 'no/such/dir/t.json' "$tmp/err" && echo 0 || echo 1)" "an unwritable trace path is reported ($(cat "$tmp/err"))"

# inspect
"$ms" inspect "$fix/models/mixtral-tiny" >"$tmp/insp" 2>&1
tap_ok "$(grep -q 'architecture *mixtral' "$tmp/insp" && grep -q 'experts per token *2' "$tmp/insp" && grep -q 'experts *8 in 3 MoE layers' "$tmp/insp" && grep -q 'weight type *F32' "$tmp/insp" && echo 0 || echo 1)" \
    "inspect names the architecture, experts, k and weight type"
"$ms" inspect "$fix/models/mixtral-tiny-bf16" >"$tmp/insp2" 2>&1
tap_ok "$(grep -q 'weight type *BF16' "$tmp/insp2" && echo 0 || echo 1)" "inspect reports BF16 weights"

# bench prints llama-bench's table and the BLAS core
"$ms" bench "$fix/models/mixtral-tiny" -p 16 -n 8 -r 3 -t 2 >"$tmp/bench" 2>&1
tap_ok "$(grep -q '| *pp16 *|' "$tmp/bench" && grep -q '| *tg8 *|' "$tmp/bench" && grep -q 'BLAS core' "$tmp/bench" && echo 0 || echo 1)" \
    "bench prints pp16 and tg8 rows and the BLAS core"
if grep -q avx512f /proc/cpuinfo && grep -q avx512bw /proc/cpuinfo; then
    tap_ok "$(grep -q 'BLAS core: SkylakeX' "$tmp/bench" && echo 0 || echo 1)" "on an AVX-512 CPU OpenBLAS runs its SkylakeX kernels without the user setting anything"
    OPENBLAS_CORETYPE=Haswell "$ms" bench "$fix/models/mixtral-tiny" -p 8 -n 0 -r 1 >"$tmp/bench2" 2>&1
    tap_ok "$(grep -q 'BLAS core: Haswell' "$tmp/bench2" && echo 0 || echo 1)" "a core the user chose is kept"
else
    tap_skip "this CPU has no AVX-512, so the SkylakeX default cannot be checked"
    tap_skip "this CPU has no AVX-512"
fi

# Errors: a message that says what is wrong, an exit status, no crash.
check_err() { # STATUS PATTERN DESCRIPTION -- ARGS...
    want_rc=$1 pat=$2 desc=$3
    shift 4
    "$ms" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    tap_ok "$([ "$rc" = "$want_rc" ] && grep -q -- "$pat" "$tmp/err" && echo 0 || echo 1)" "$desc (exit $rc: $(head -c 200 "$tmp/err"))"
}
check_err 1 "no such model" "missing model directory" -- run "$tmp/nope" --prompt-ids 1
check_err 1 "from 1 to 8" "--k beyond the experts" -- run "$fix/models/mixtral-tiny" --prompt-ids 1 --k 9
check_err 2 "comma-separated" "malformed --prompt-ids" -- run "$fix/models/mixtral-tiny" --prompt-ids 1,x
check_err 1 "outside the vocabulary" "token id past the vocabulary" -- run "$fix/models/mixtral-tiny" --prompt-ids 1,320
check_err 2 "unknown option" "unknown option" -- run "$fix/models/mixtral-tiny" --prompt-ids 1 --frobnicate
check_err 2 "temp" "negative temperature" -- run "$fix/models/mixtral-tiny" --prompt-ids 1 --temp -1
check_err 1 "exceed the context" "prompt longer than the context" -- run "$fix/models/mixtral-tiny" --prompt-ids 1,2,3 -c 2
check_err 1 "dense model" "--k on a dense model" -- run "$fix/models/llama-tiny" --prompt-ids 1 --k 2
check_err 2 "unknown command" "unknown subcommand" -- frobnicate
tap_done
