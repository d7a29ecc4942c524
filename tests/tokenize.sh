#!/bin/sh
# `moescope tokenize` as scripts use it: one line in, one line of ids out,
# --bos, --decode, and the errors a user sees. The expected ids are copied
# from the reference's golden files (tests/fixtures/tokenizer/*.json, made
# by tools/tokref/gen_golden.mjs), not from moescope.
. "${top_srcdir:-.}/tests/tap.sh"
src=${top_srcdir:-.}
bld=${top_builddir:-.}
ms="$bld/moescope"
fix="$src/tests/fixtures/tokenizer"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

printf 'Hello, world!\nTom has 3 apples and buys 5 more. How many does he have now?\n' >"$tmp/in"
got=$("$ms" tokenize "$fix/qwen3" <"$tmp/in")
tap_eq "qwen3: one line of ids per input line" "9707 11 1879 0
24732 702 220 18 40676 323 49531 220 20 803 13 2585 1657 1558 566 614 1431 30" "$got"

got=$("$ms" tokenize "$fix/llama2" --bos <"$tmp/in" | head -n 1)
tap_eq "llama2: --bos adds BOS as the post-processor says" "1 22557 28725 1526 28808" "$got"

got=$(printf '<|im_start|>user\n' | "$ms" tokenize "$fix/qwen3/tokenizer.json")
tap_eq "qwen3: special tokens in the text; tokenizer.json named directly" "151644 872" "$got"

got=$(printf '9707 11 1879 0\n151644 872\n' | "$ms" tokenize "$fix/qwen3" --decode)
tap_eq "qwen3: --decode turns ids back into text" "Hello, world!
<|im_start|>user" "$got"

# The reference's decode(ids) with skip_special_tokens false.
got=$(printf '1 22557 28725 1526 28808\n22557 2 1 22557\n28705 22557\n' | "$ms" tokenize "$fix/llama2" --decode)
tap_eq "llama2: --decode through the SentencePiece decoders" "<s> Hello, world!
Hello</s><s> Hello
 Hello" "$got"

# A GGUF file's vocabulary (tokenizer.ggml.*, written from the same
# tokenizer.json by tools/gen_gguf_vocab.py) gives the same ids.
vocab="$src/tests/fixtures/gguf/vocab-llama2.gguf"
got=$("$ms" tokenize "$vocab" --bos <"$tmp/in")
tap_eq "llama2 from a GGUF file: the reference's ids, BOS as add_bos_token says" "1 22557 28725 1526 28808
1 4660 659 28705 28770 979 2815 304 957 846 28705 28782 680 28723 1602 1287 1235 400 506 1055 28804" "$got"

got=$(printf '1 22557 28725 1526 28808\n22557 2 1 22557\n' | "$ms" tokenize "$vocab" --decode)
tap_eq "llama2 from a GGUF file: --decode" "<s> Hello, world!
Hello</s><s> Hello" "$got"

"$ms" tokenize "$src/tests/fixtures/gguf/mixtral-tiny-f32.gguf" </dev/null 2>"$tmp/err"
rc=$?
tap_ok "$([ "$rc" != 0 ] && grep -q 'mixtral-tiny-f32.gguf: the file carries no vocabulary' "$tmp/err" && echo 0 || echo 1)" \
    "a GGUF file without a vocabulary (no_vocab) is refused by name ($(cat "$tmp/err"))"

"$ms" run "$src/tests/fixtures/gguf/mixtral-tiny-f32.gguf" -p "Hello" -n 1 >/dev/null 2>"$tmp/err"
rc=$?
tap_ok "$([ "$rc" != 0 ] && grep -q 'no vocabulary.*--prompt-ids' "$tmp/err" && echo 0 || echo 1)" \
    "run: text for a no_vocab GGUF model points to --prompt-ids ($(cat "$tmp/err"))"

got=$("$ms" run "$src/tests/fixtures/gguf/mixtral-tiny-f32.gguf" --prompt-ids 1,5,9 -n 2 --temp 0 2>/dev/null | head -n 1)
tap_ok "$([ -n "$got" ] && echo 0 || echo 1)" "run: a no_vocab GGUF model runs from --prompt-ids (ids out: $got)"

printf '\n' | "$ms" tokenize "$fix/qwen3" >"$tmp/out"
tap_ok "$([ "$(wc -c <"$tmp/out")" = 1 ] && echo 0 || echo 1)" "an empty line gives an empty line"

"$ms" tokenize "$tmp/nowhere" </dev/null 2>"$tmp/err"
rc=$?
tap_ok "$([ "$rc" != 0 ] && grep -q 'nowhere' "$tmp/err" && echo 0 || echo 1)" "a missing tokenizer fails naming the path"

echo "1 x" | "$ms" tokenize "$fix/qwen3" --decode 2>"$tmp/err" >/dev/null
rc=$?
tap_ok "$([ "$rc" != 0 ] && grep -q 'not a token id' "$tmp/err" && echo 0 || echo 1)" "--decode refuses a non-number"

echo "999999999" | "$ms" tokenize "$fix/qwen3" --decode 2>"$tmp/err" >/dev/null
rc=$?
tap_ok "$([ "$rc" != 0 ] && grep -q 'outside the vocabulary' "$tmp/err" && echo 0 || echo 1)" "--decode refuses an id outside the vocabulary"

tap_done
