#!/bin/sh
# Broken and hostile model directories, through `moescope inspect` as a
# user would meet them: each gets exit status 1 and one line naming the
# file and the problem; none crashes (the sanitizer build turns any memory
# error into a failure here). The safetensors format's own rules are
# tested byte by byte in test_safetensors.c.
. "${top_srcdir:-.}/tests/tap.sh"
src=${top_srcdir:-.}
bld=${top_builddir:-.}
ms="$bld/moescope"
good="$src/tests/fixtures/models/mixtral-tiny"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A fresh copy of the good model in $tmp/m.
fresh() {
    rm -rf "$tmp/m"
    cp -r "$good" "$tmp/m"
    chmod -R u+w "$tmp/m"
}
# Replace "key": value in config.json (the generator writes one key a
# line), keeping a trailing comma where there was one.
set_key() {
    grep -q "^  \"$1\": " "$tmp/m/config.json" || { echo "hostile.sh: no key $1" >&2; exit 1; }
    sed -i "s|^\\(  \"$1\": \\)[^,]*\\(,\\{0,1\\}\\)\$|\\1$2\\2|" "$tmp/m/config.json"
}
# Add "key": value as the first key.
add_key() {
    sed -i "1a\\  \"$1\": $2," "$tmp/m/config.json"
}
# expect PATTERN... DESCRIPTION: inspect fails with status 1 and stderr has every pattern.
expect() {
    desc=$1
    shift
    "$ms" inspect "$tmp/m" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    okay=0
    [ "$rc" = 1 ] || okay=1
    for p in "$@"; do
        grep -q -- "$p" "$tmp/err" || okay=1
    done
    [ "$(wc -l <"$tmp/err")" = 1 ] || okay=1
    tap_ok "$okay" "$desc (exit $rc: $(head -c 240 "$tmp/err"))"
}

fresh
tap_ok "$("$ms" inspect "$tmp/m" >/dev/null 2>&1 && echo 0 || echo 1)" "the untouched copy loads"

fresh; sed -i 's/MixtralForCausalLM/FooForCausalLM/; s/"model_type": "mixtral"/"model_type": "foo"/' "$tmp/m/config.json"
expect "unknown architecture is named with the supported list" "config.json" "FooForCausalLM" "MixtralForCausalLM" "LlamaForCausalLM"

fresh; printf '{"hidden_size": 64,' >"$tmp/m/config.json"
expect "truncated config.json" "config.json" "not valid JSON"

fresh; python3 -c 'print("[" * 5000 + "]" * 5000)' >"$tmp/m/config.json" 2>/dev/null || awk 'BEGIN{for(i=0;i<5000;i++)printf "[";for(i=0;i<5000;i++)printf "]"}' >"$tmp/m/config.json"
expect "deeply nested config.json" "config.json" "nesting"

fresh; echo '[1, 2]' >"$tmp/m/config.json"
expect "config.json that is not an object" "config.json" "object"

fresh; sed -i '/"hidden_size"/d' "$tmp/m/config.json"
expect "missing hidden_size" "config.json" "hidden_size" "missing"

fresh; set_key hidden_size '"sixty-four"'
expect "hidden_size of the wrong type" "config.json" "hidden_size" "integer"

fresh; set_key vocab_size 1e30
expect "absurd vocab_size" "config.json" "vocab_size"

fresh; set_key num_attention_heads 3
expect "heads not a multiple of kv heads" "config.json" "num_key_value_heads"

fresh; set_key num_experts_per_tok 9
expect "experts per token above the expert count" "config.json" "num_experts_per_tok"

fresh; set_key num_experts_per_tok -1
expect "negative experts per token" "config.json" "num_experts_per_tok"

fresh; set_key num_hidden_layers 4
expect "a layer the weights lack" "model.layers.3" "missing"

fresh; set_key intermediate_size 100
expect "intermediate_size that disagrees with the weights" "safetensors" "experts.0.w1.weight" "shape" "100"

fresh; set_key num_local_experts 9
expect "more experts than the weights hold" "block_sparse_moe" "9"

fresh; add_key rope_scaling '{"rope_type": "yarn", "factor": 4.0}'
expect "unsupported rope scaling" "config.json" "yarn"

fresh; set_key hidden_act '"gelu"'
expect "unsupported activation" "config.json" "gelu"

fresh; f=$(ls "$tmp/m"/*.safetensors | head -n 1); head -c 4000 "$f" >"$tmp/cut" && mv "$tmp/cut" "$f"
expect "a truncated shard" "$(basename "$f")"

fresh; rm "$tmp/m"/model-00002-of-00002.safetensors
expect "a shard listed in the index is missing" "model-00002-of-00002.safetensors"

fresh; rm "$tmp/m"/*.safetensors "$tmp/m"/model.safetensors.index.json
expect "no weights at all" "safetensors"

fresh; rm "$tmp/m/config.json"
expect "no config.json" "config.json"

rm -rf "$tmp/m"; mkdir -p "$tmp/m"
expect "an empty directory" "config.json"

fresh; printf 'not a model' >"$tmp/m/model.bin"
"$ms" inspect "$tmp/m/model.bin" >"$tmp/out" 2>"$tmp/err"
rc=$?
tap_ok "$([ "$rc" = 1 ] && grep -q 'model.bin' "$tmp/err" && echo 0 || echo 1)" "a plain file is refused by name (exit $rc: $(cat "$tmp/err"))"

# GGUF files broken one way each by tests/gguf_edit.py (a file that fails
# the format's own rules is test_gguf.c's business; these pass the reader
# and fail where the model is put together).
gguf="$src/tests/fixtures/gguf/mixtral-tiny-f32.gguf"
# expect_gguf EDIT-ARGS -- PATTERN... DESCRIPTION: as expect, on $tmp/g.gguf
# written from $gguf (or $base) with one edit.
expect_gguf() {
    edit=""
    while [ "$1" != "--" ]; do edit="$edit $1"; shift; done
    shift
    desc=$1
    shift
    if ! command -v python3 >/dev/null 2>&1; then
        tap_skip "$desc: python3 is missing, so tests/gguf_edit.py cannot break the file"
        return
    fi
    # shellcheck disable=SC2086
    python3 "$src/tests/gguf_edit.py" "${base:-$gguf}" "$tmp/g.gguf" $edit || { tap_ok 1 "$desc: gguf_edit.py$edit"; return; }
    "$ms" inspect "$tmp/g.gguf" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    okay=0
    [ "$rc" = 1 ] || okay=1
    for p in g.gguf "$@"; do
        grep -q -- "$p" "$tmp/err" || okay=1
    done
    [ "$(wc -l <"$tmp/err")" = 1 ] || okay=1
    tap_ok "$okay" "$desc (exit $rc: $(head -c 240 "$tmp/err"))"
}
if command -v python3 >/dev/null 2>&1; then
    python3 "$src/tests/gguf_edit.py" "$gguf" "$tmp/g.gguf" set-str general.name same
    tap_ok "$("$ms" inspect "$tmp/g.gguf" >/dev/null 2>&1 && echo 0 || echo 1)" "a GGUF copy rewritten by gguf_edit.py, unchanged, loads"
else
    tap_skip "python3 is missing: tests/gguf_edit.py cannot rewrite GGUF files"
fi
expect_gguf drop-tensor blk.1.attn_k.weight -- "GGUF: a missing tensor is named" "'blk.1.attn_k.weight' is missing"
expect_gguf shape blk.0.attn_v.weight 64,16 -- "GGUF: a tensor of the wrong shape is named with both shapes" \
    "'blk.0.attn_v.weight'" "\[64, 16, 1, 1\]" "\[64, 32, 1\]"
expect_gguf set-str general.architecture gptfoo -- "GGUF: an unknown architecture is named with the supported list" \
    "architecture 'gptfoo' is not supported" "qwen3moe"
expect_gguf set-u32 llama.expert_count 9 -- "GGUF: an expert count that disagrees with the router and expert tensors" \
    "'blk.0.ffn_gate_inp.weight'" "\[64, 9, 1\]"
expect_gguf set-u32 llama.expert_used_count 12 -- "GGUF: more experts per token than experts" \
    "llama.expert_used_count 12"
expect_gguf tokens 7 -- "GGUF: a vocabulary of another size than the embedding names both numbers" \
    "tokenizer.ggml.tokens has 7 tokens" "320 rows"
base="$src/tests/fixtures/gguf/llama3-tiny-f32.gguf"
expect_gguf shape rope_freqs.weight 4 -- "GGUF: per-frequency RoPE factors of the wrong length" \
    "'rope_freqs.weight'" "\[4, 1, 1, 1\]" "\[8\]"
expect_gguf fill-f32 rope_freqs.weight 0 -- "GGUF: a RoPE factor of zero" "rope_freqs.weight\[0\] is 0"
base=""

# A Hugging Face id resolves through the cache layout, refs/main first.
hub="$tmp/hub"
mkdir -p "$hub/models--acme--tiny/snapshots/aaaa" "$hub/models--acme--tiny/snapshots/bbbb" "$hub/models--acme--tiny/refs"
cp -r "$good"/. "$hub/models--acme--tiny/snapshots/aaaa/"
echo aaaa >"$hub/models--acme--tiny/refs/main"
HF_HUB_CACHE="$hub" "$ms" inspect acme/tiny >"$tmp/out" 2>&1
tap_ok "$(grep -q 'snapshots/aaaa' "$tmp/out" && grep -q mixtral "$tmp/out" && echo 0 || echo 1)" "an id in \$HF_HUB_CACHE resolves to the snapshot refs/main names"
mkdir -p "$tmp/home/hub"
mv "$hub/models--acme--tiny" "$tmp/home/hub/"
rm "$tmp/home/hub/models--acme--tiny/refs/main"
rm -rf "$tmp/home/hub/models--acme--tiny/snapshots/bbbb"
env -u HF_HUB_CACHE HF_HOME="$tmp/home" "$ms" inspect acme/tiny >"$tmp/out" 2>&1
tap_ok "$(grep -q 'snapshots/aaaa' "$tmp/out" && echo 0 || echo 1)" "without refs/main, \$HF_HOME/hub's newest snapshot is used"
env -u HF_HUB_CACHE HF_HOME="$tmp/home" "$ms" inspect acme/absent >"$tmp/out" 2>"$tmp/err"
tap_ok "$(grep -q 'models--acme--absent' "$tmp/err" && echo 0 || echo 1)" "an id not in the cache says where it looked"
tap_done
