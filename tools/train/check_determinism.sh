#!/bin/sh
# Train twice from the same data with a short schedule and compare the
# exported weights byte for byte: the training is deterministic (seeded,
# one CPU thread) when they are identical.
#   tools/train/check_determinism.sh [STEPS]      (default 20,10,10)
set -eu
cd "$(dirname "$0")"
steps=${1:-20,10,10}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for run in a b; do
    /usr/bin/python3 train.py --steps "$steps" --out "$tmp/$run" >"$tmp/$run.log" 2>&1 || {
        cat "$tmp/$run.log" >&2
        exit 1
    }
done
a=$(sha256sum <"$tmp/a/model.safetensors" | cut -d' ' -f1)
b=$(sha256sum <"$tmp/b/model.safetensors" | cut -d' ' -f1)
echo "run a: $a"
echo "run b: $b"
if [ "$a" = "$b" ] && cmp -s "$tmp/a/tokenizer.json" "$tmp/b/tokenizer.json"; then
    echo "deterministic: identical weights and tokenizer (steps $steps)"
else
    echo "NOT deterministic (steps $steps)" >&2
    exit 1
fi
