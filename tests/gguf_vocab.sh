#!/bin/sh
# The GGUF tokenizer on all three vocabularies: tests/test_gguf_vocab reads
# the committed llama2 vocabulary file, and the qwen3 and llama3 ones (6 and
# 8 MB, too large to commit) written here from the committed tokenizer.json
# files by tools/gen_gguf_vocab.py (standard-library python3).
src=${top_srcdir:-.}
bld=${top_builddir:-.}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! command -v python3 >/dev/null 2>&1; then
    echo "# python3 is missing: the qwen3 and llama3 GGUF vocabularies cannot be written"
    "$bld/tests/test_gguf_vocab"
    exit $?
fi
for v in qwen3:qwen2 llama3:llama-bpe; do
    python3 "$src/tools/gen_gguf_vocab.py" "$src/tests/fixtures/tokenizer/${v%%:*}" "$tmp/${v%%:*}.gguf" \
        --pre "${v#*:}" 2>&1 | sed 's/^/# /'
done
"$bld/tests/test_gguf_vocab" "$tmp"
