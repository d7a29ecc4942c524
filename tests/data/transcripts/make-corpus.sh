#!/bin/sh
# Regenerates the broken-transcript corpus from a good transcript of the
# mixtral-tiny fixture (run from the repository root after a build):
#   tests/data/transcripts/make-corpus.sh build/moescope
# Each file breaks one rule; EXPECT lists what the error must say. The
# files are committed: this script only documents how they were made.
set -eu
ms=${1:-build/moescope}
d=tests/data/transcripts
"$ms" run tests/fixtures/models/mixtral-tiny -p "Hi there" -n 3 --temp 0 --ignore-eos --seed 5 \
    --expert-off L1:5 --save "$d/good-v1.json" >/dev/null 2>&1
g="$d/good-v1.json"
j() { # NAME JQ-FILTER
    jq -c "$2" "$g" >"$d/$1"
}
# version 0: the `run --trace` document from before transcripts
jq -c 'del(.format, .version, .created, .saved, .engine, .n_tokens, .turns, .model.vocab, .model.moe_layers,
        .model.config_sha256, .sampler.repeat_last_n) | .tokens |= map(del(.time))' "$g" >"$d/good-v0-trace.json"
: >"$d/empty.json"
printf 'moescope transcript, honest\n' >"$d/not-json.json"
head -c 900 "$g" >"$d/truncated.json"
{ cat "$g"; echo '{"again": 1}'; } >"$d/trailing-garbage.json"
echo '[1, 2, 3]' >"$d/array-top.json"
j wrong-format.json '.format = "llama-session"'
j newer-version.json '.version = 2'
j version-string.json '.version = "1"'
j no-model.json 'del(.model)'
j arch-number.json '.model.arch = 7'
j experts-absurd.json '.model.n_experts = 1000000000'
j k-too-big.json '.model.k = 9'
j n-tokens-mismatch.json '.n_tokens = 4000000'
j n-tokens-huge.json '.n_tokens = 1e300'
j probs-short.json '.tokens[1].layers[0].probs |= .[0:7]'
j probs-string.json '.tokens[2].layers[1].probs[3] = "0.25"'
j prob-above-one.json '.tokens[0].layers[2].probs[0] = 1.5'
j layers-missing.json '.tokens[3].layers |= .[0:2]'
j layer-wrong.json '.tokens[0].layers[1].layer = 2'
j expert-out-of-range.json '.tokens[1].layers[0].experts[0] = 8'
j expert-twice.json '.tokens[1].layers[0].experts = [4, 4]'
j weights-short.json '.tokens[1].layers[2].weights |= .[0:1]'
j id-negative.json '.tokens[0].id = -1'
j id-past-vocab.json '.tokens[0].id = 320'
j pos-out-of-order.json '.tokens[2].pos = 5'
j prompt-not-bool.json '.tokens[0].prompt = 1'
j colour-out-of-range.json '.tokens[0].colour = 8'
j text-number.json '.tokens[0].text = 12'
j bytes-bad.json '.tokens[0].text = null | .tokens[0].bytes = [300]'
j seed-number.json '.sampler.seed = 5'
j seed-garbage.json '.sampler.seed = "12abc"'
j sampler-missing.json 'del(.sampler)'
j control-past-end.json '.controls[0].pos = 999'
j control-empty.json '.controls[0].change = ""'
j turn-past-end.json '.turns[0].token = 999'
j turns-not-array.json '.turns = {}'
j digest-bad.json '.model.config_sha256 = "xyz"'
j names-count.json '.model.expert_names = ["a", "b", "c"]'
j moe-layers-count.json '.model.moe_layers = [0, 1]'
j tokens-object.json '.tokens = {"0": 1}'
awk 'BEGIN { for (i = 0; i < 5000; i++) printf "["; print "" }' >"$d/deep-nesting.json"
