#!/bin/sh
# A GGUF model that carries its vocabulary, end to end through the built
# moescope. tools/gen_gguf.py --vocab writes mixtral-tiny (F32) with the
# fixture's tokenizer.json as tokenizer.ggml.* metadata, as llama.cpp's
# converter writes them (byte-level BPE, pre-tokenizer gpt-2), into a
# temporary directory. The safetensors directory is the reference:
# `tokenize` and a greedy `run` must give the same ids and text from both.
# Then end of generation as llama.cpp's llama_vocab::is_eog has it: a file
# whose tokenizer.ggml.eot_token_id (or eom_token_id) names the token greedy
# decoding emits at step 3 (2) stops there, and so does one in which that
# token is spelled <|im_end|>; without them (or with --ignore-eos) it runs
# on. gen_gguf.py needs numpy: the first of $PYTHON, python3 and
# /usr/bin/python3 that has it is used.
. "${top_srcdir:-.}/tests/tap.sh"
src=${top_srcdir:-.}
bld=${top_builddir:-.}
ms="$bld/moescope"
dir="$src/tests/fixtures/models/mixtral-tiny"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

py=
for p in ${PYTHON:-} python3 /usr/bin/python3; do
    if "$p" -c 'import numpy' >/dev/null 2>&1; then
        py=$p
        break
    fi
done
if [ -z "$py" ]; then
    tap_skip "no python3 with numpy (tried \$PYTHON, python3, /usr/bin/python3): tools/gen_gguf.py cannot write the model"
    tap_done
    exit $?
fi

g="$tmp/mixtral-tiny-vocab.gguf"
"$py" "$src/tools/gen_gguf.py" --vocab "$dir" "$g" --pre gpt-2 >"$tmp/gen.log" 2>&1
tap_ok $? "tools/gen_gguf.py --vocab writes mixtral-tiny with its tokenizer.json ($(wc -c <"$g" 2>/dev/null) bytes)"
[ -s "$g" ] || { tap_diag "$(cat "$tmp/gen.log")"; tap_done; exit 1; }

# (b) the same ids from both, special tokens and --bos included
printf 'Hello world, this is\nThe rain in Spain falls mainly on the plain.\n<s>over 12,345 things</s>\n  two  spaces\ttab\n' \
    >"$tmp/in"
want=$("$ms" tokenize "$dir" <"$tmp/in" 2>&1)
got=$("$ms" tokenize "$g" <"$tmp/in" 2>&1)
tap_eq "tokenize: the GGUF file gives the safetensors directory's ids on 4 lines" "$want" "$got"
want=$("$ms" tokenize "$dir" --bos <"$tmp/in" 2>&1)
got=$("$ms" tokenize "$g" --bos <"$tmp/in" 2>&1)
tap_eq "tokenize --bos: the same ids, BOS as tokenizer.json's post-processor adds it" "$want" "$got"
case $want in 1\ *) tap_ok 0 "tokenize --bos starts with <s> (1)" ;; *) tap_ok 1 "tokenize --bos starts with <s> (1): $want" ;; esac

# (a) greedy generation: the same ids and the same text
prompt="Hello world, this is"
run() { "$ms" run "$@" -p "$prompt" -n 8 --temp 0 2>/dev/null; }
ids=$(run "$dir" --print-ids)
tap_eq "run --print-ids: the GGUF file generates the safetensors directory's 8 ids" "$ids" "$(run "$g" --print-ids)"
n=$(echo "$ids" | wc -w)
tap_ok "$([ "$n" = 8 ] && echo 0 || echo 1)" "the reference run goes on for 8 tokens ($ids)"
[ "$n" = 8 ] || { tap_done; exit 1; }
want=$(run "$dir")
tap_eq "run: the GGUF file prints the safetensors directory's text" "$want" "$(run "$g")"
case $want in "$prompt"?*) tap_ok 0 "run prints the prompt, then generated text" ;;
*) tap_ok 1 "run prints the prompt, then generated text: $want" ;; esac

# (c) end of generation. k: the first step from the third on whose token is
# new to the run (a stop token seen earlier would stop there); the renamed
# token must be one no merge uses, or the vocabulary would no longer load.
set -- $ids
pick=$("$py" - "$dir/tokenizer.json" "$@" <<'EOF'
import json, sys
tj = json.load(open(sys.argv[1], encoding="utf-8"))
piece = {i: t for t, i in tj["model"]["vocab"].items()}
used = set()
for m in tj["model"]["merges"]:
    a, b = m.split(" ") if isinstance(m, str) else m
    used |= {a, b, a + b}
g = [int(x) for x in sys.argv[2:]]
eot = next(k for k in range(2, len(g)) if g[k] not in g[:k])
ren = next(k for k in range(2, len(g)) if g[k] not in g[:k] and piece.get(g[k]) not in used)
print(eot, ren)
EOF
)
if [ -z "$pick" ]; then
    tap_ok 1 "a token new to the run at step 3 or later, one no merge uses ($ids)"
    tap_done
    exit 1
fi
k=${pick% *}
r=${pick#* }
prefix() { echo "$ids" | cut -d' ' -f1-"$1"; }
"$py" "$src/tests/gguf_edit.py" "$g" "$tmp/eot.gguf" set-u32 tokenizer.ggml.eot_token_id "$(prefix $((k + 1)) | cut -d' ' -f$((k + 1)))"
tap_eq "eot_token_id = the token of step $((k + 1)): generation stops there" "$(prefix $((k + 1)))" "$(run "$tmp/eot.gguf" --print-ids)"
tap_eq "eot_token_id and --ignore-eos: generation runs on for 8 tokens" "$ids" "$(run "$tmp/eot.gguf" --print-ids --ignore-eos)"
want=$(prefix $((k + 1)) | "$ms" tokenize "$dir" --decode)
tap_eq "eot_token_id: run prints the prompt and the text of the $((k + 1)) tokens" "$prompt$want" "$(run "$tmp/eot.gguf")"
if [ "$2" != "$1" ]; then
    "$py" "$src/tests/gguf_edit.py" "$g" "$tmp/eom.gguf" set-u32 tokenizer.ggml.eom_token_id "$2"
    tap_eq "eom_token_id = the token of step 2: generation stops there" "$(prefix 2)" "$(run "$tmp/eom.gguf" --print-ids)"
else
    tap_skip "eom_token_id: the first two tokens are the same ($1)"
fi
rid=$(prefix $((r + 1)) | cut -d' ' -f$((r + 1)))
"$py" "$src/tests/gguf_edit.py" "$g" "$tmp/im_end.gguf" set-token "$rid" '<|im_end|>'
tap_eq "token $rid spelled <|im_end|> (no eot key): generation stops at step $((r + 1))" "$(prefix $((r + 1)))" \
    "$(run "$tmp/im_end.gguf" --print-ids)"

# The explorer stops at the same token and says why on its status line.
if ! command -v tmux >/dev/null 2>&1; then
    tap_skip "the explorer: tmux is not installed"
    tap_done
    exit $?
fi
T="tmux -L moescope-gguf-vocab-$$ -f /dev/null"
trap '$T kill-server 2>/dev/null; rm -rf "$tmp"' EXIT
explore() { # MODEL: the status line after a greedy reply to the prompt
    $T kill-session -t main 2>/dev/null
    rm -rf "$tmp/state" # no autosave of the previous run to restore
    printf '#!/bin/sh\ncd "%s"\nenv TERM=screen-256color XDG_STATE_HOME="%s/state" XDG_CONFIG_HOME="%s/config" "%s" "%s" -n 8 --temp 0\nexec sleep 600\n' \
        "$tmp" "$tmp" "$tmp" "$(cd "$bld" && pwd)/moescope" "$1" >"$tmp/explore.sh"
    chmod +x "$tmp/explore.sh"
    $T new-session -d -s main -x 120 -y 40 "$tmp/explore.sh"
    wait_for 'Type a prompt' && $T send-keys -t main "$prompt" Enter && wait_for '^(done|end of [a-z]+): [0-9]+ tokens'
    $T capture-pane -t main -p | grep -Eo '^(done|end of [a-z]+): [0-9]+ tokens'
}
wait_for() { # PATTERN: poll the screen for up to 30 s
    i=0
    while [ $i -lt 600 ]; do
        $T capture-pane -t main -p 2>/dev/null | grep -Eq -- "$1" && return 0
        sleep 0.05
        i=$((i + 1))
    done
    return 1
}
tap_eq "the explorer on the GGUF file generates 8 tokens" "done: 8 tokens" "$(explore "$g")"
tap_eq "the explorer with eot_token_id stops at step $((k + 1)), an end of turn" "end of turn: $((k + 1)) tokens" \
    "$(explore "$tmp/eot.gguf")"
tap_done
