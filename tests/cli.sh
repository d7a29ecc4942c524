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
# no settings file of the user's: the runs below read $tmp/config only where a test puts one
export XDG_CONFIG_HOME="$tmp/config"
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

# Controls from the command line: an expert switched off never appears in
# the trace; a forced one is the only one; bad specs are refused by name.
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3,4,5,6,7,8 -n 10 --temp 0 --ignore-eos --print-ids --expert-off 1,4 --trace "$tmp/off.json" >/dev/null 2>"$tmp/err"
n_used=$(tr -d ' \t\n' <"$tmp/off.json" | grep -o '"experts":\[[0-9,]*\]' | grep -c '[[,]\(1\|4\)[],]')
n_all=$(tr -d ' \t\n' <"$tmp/off.json" | grep -o '"experts":\[[0-9,]*\]' | wc -l)
tap_ok "$([ "$n_all" = 48 ] && [ "$n_used" = 0 ] && echo 0 || echo 1)" "--expert-off 1,4: experts 1 and 4 chosen in none of $n_all routings"
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3,4,5 -n 4 --temp 0 --print-ids --force L1:6 --trace "$tmp/force.json" >/dev/null 2>"$tmp/err"
l1=$(tr -d ' \t\n' <"$tmp/force.json" | grep -o '"layer":1,"probs":\[[^]]*\],"experts":\[[0-9,]*\]' | sed 's/.*"experts"://' | sort -u | tr '\n' ' ')
tap_ok "$([ "$l1" = "[6] " ] && echo 0 || echo 1)" "--force L1:6: layer 1 routes every token to expert 6 alone ($l1)"
tap_ok "$(tr -d ' \t\n' <"$tmp/force.json" | grep -q '"controls":\[{"pos":0,"change":"forceL1:6"}\]' && echo 0 || echo 1)" "the trace lists the control changes with their positions"
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3,4,5 -n 8 --temp 0 --print-ids >"$tmp/plain" 2>/dev/null
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3,4,5 -n 8 --temp 0 --print-ids --offset 2:5:10=40 --bias 0=3 >"$tmp/steered" 2>/dev/null
tap_ok "$(cmp -s "$tmp/plain" "$tmp/steered" && echo 1 || echo 0)" "--offset and --bias change the generation"
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3,4,5 -n 3 --temp 0 --k L0:1 --expert-off L2:0 >/dev/null 2>"$tmp/err"
tap_ok "$(grep -q 'controls: k L0:1; off L2:0' "$tmp/err" && echo 0 || echo 1)" "the controls in force are reported on stderr"

"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3,4,5,6,7,8,9,10 -n 1 --temp 0 --print-ids --k 1 --force 2 --capacity 1 --trace "$tmp/cap.json" >/dev/null 2>"$tmp/err"
# 8 prompt tokens all on expert 2 with k 1: capacity ceil(8 / 8) = 1, so
# token 0 fits and tokens 1-7 overflow in each of 3 layers; the decoded
# token is a batch of its own and fits.
flags=$(tr -d ' \t\n' <"$tmp/cap.json" | grep -o '"overflow":\[[01]\]' | sed 's/[^01]//g' | tr -d '\n')
tap_ok "$([ "$flags" = "000111111111111111111111000" ] && echo 0 || echo 1)" "--capacity 1 marks exactly the overflowing assignments in the trace ($flags)"

# Colour: ANSI only on request or on a terminal, never with NO_COLOR.
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3,4 -n 4 --temp 0 --colour always >"$tmp/col" 2>"$tmp/legend"
tap_ok "$(grep -q "$(printf '\033')\[38;5;" "$tmp/col" && grep -q 'experts:' "$tmp/legend" && echo 0 || echo 1)" "--colour always colours tokens and prints a legend"
NO_COLOR=1 "$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3,4 -n 4 --temp 0 >"$tmp/col" 2>/dev/null
tap_ok "$(grep -q "$(printf '\033')" "$tmp/col" && echo 1 || echo 0)" "piped output with NO_COLOR has no escapes"
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3,4 -n 4 --temp 0 --colour-by 2 --colour always >/dev/null 2>&1
tap_ok $? "--colour-by LAYER is accepted"

# The settings file's palette and colour apply to run unless flags say otherwise.
mkdir -p "$tmp/config/moescope"
printf 'palette = classic\ncolour = 2\nbogus = 1\n' >"$tmp/config/moescope/config"
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3,4 -n 8 --temp 0 --colour always >"$tmp/col_cfg" 2>"$tmp/err"
cols=$(grep -o '38;5;[0-9]*m' "$tmp/col_cfg" | sort -u | tr -d 'm' | cut -d';' -f3 | tr '\n' ' ')
bad=0
for c in $cols; do case " 196 46 33 226 201 51 208 129 118 39 218 252 " in *" $c "*) ;; *) bad=1 ;; esac; done
tap_ok "$([ -n "$cols" ] && [ $bad = 0 ] && echo 0 || echo 1)" "settings: palette = classic colours run's tokens from the classic palette ($cols)"
grep -q "warning: config line 3: unknown key 'bogus' (in $tmp/config/moescope/config)" "$tmp/err"
tap_ok $? "settings: run warns about a bad line, naming the file, and goes on"
rm -rf "$tmp/config"
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3,4 -n 8 --temp 0 --colour always --colour-by 2 --palette classic >"$tmp/col_flags" 2>/dev/null
cmp -s "$tmp/col_cfg" "$tmp/col_flags"
tap_ok $? "settings: colour = 2 and palette = classic give the same output as --colour-by 2 --palette classic"
mkdir -p "$tmp/config/moescope"
printf 'palette = classic\n' >"$tmp/config/moescope/config"
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 3,4 -n 8 --temp 0 --colour always --palette okabe-ito >"$tmp/col" 2>/dev/null
cols=$(grep -o '38;5;[0-9]*m' "$tmp/col" | sort -u | tr -d 'm' | cut -d';' -f3 | tr '\n' ' ')
bad=0
for c in $cols; do case " 214 75 36 227 32 166 175 250 203 114 141 180 " in *" $c "*) ;; *) bad=1 ;; esac; done
tap_ok "$([ -n "$cols" ] && [ $bad = 0 ] && echo 0 || echo 1)" "settings: --palette okabe-ito wins over the file's palette ($cols)"
rm -rf "$tmp/config"

check_err() { # STATUS PATTERN DESCRIPTION -- ARGS...
    want_rc=$1 pat=$2 desc=$3
    shift 4
    "$ms" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    tap_ok "$([ "$rc" = "$want_rc" ] && grep -q -- "$pat" "$tmp/err" && echo 0 || echo 1)" "$desc (exit $rc: $(head -c 200 "$tmp/err"))"
}
check_err 1 "expert 8 does not exist" "--expert-off of a missing expert" -- run "$fix/models/mixtral-tiny" --prompt-ids 1 --expert-off 8
check_err 1 "not an MoE layer" "--expert-off in a missing layer" -- run "$fix/models/mixtral-tiny" --prompt-ids 1 --expert-off L3:0
check_err 1 "last one on" "switching every expert off" -- run "$fix/models/mixtral-tiny" --prompt-ids 1 --expert-off 0,1,2,3,4,5,6,7
check_err 1 "offset: expected" "malformed --offset" -- run "$fix/models/mixtral-tiny" --prompt-ids 1 --offset 2:x=1
check_err 1 "name one" "--offset without an expert on an MoE layer" -- run "$fix/models/mixtral-tiny" --prompt-ids 1 --offset 2:10=1
check_err 1 "bias: expected" "malformed --bias" -- run "$fix/models/mixtral-tiny" --prompt-ids 1 --bias 3
check_err 1 "k: expected" "malformed --k" -- run "$fix/models/mixtral-tiny" --prompt-ids 1 --k L1:
check_err 1 "neuron 160 is out of range" "--offset past the MLP width" -- run "$fix/models/llama-tiny" --prompt-ids 1 --offset 0:160=1
check_err 2 "auto, always or never" "bad --colour" -- run "$fix/models/mixtral-tiny" --prompt-ids 1 --colour sometimes

# analyze: with every token forced to expert 3 and k = 1 the figures are
# known: share 100%, same first choice 100%, CV of load sqrt(7) (one of 8
# experts takes everything), and with capacity 1 x 16 x 1 / 8 = 2 per batch
# of 16, 14 of 16 assignments overflow.
seq 1 64 | awk '{print ($1 * 37) % 300 + 1}' >"$tmp/ids.txt"
"$ms" analyze "$fix/models/mixtral-tiny" "$tmp/ids.txt" --ids --k 1 --force 3 --capacity 1 --batch 16 --json >"$tmp/an.json" 2>"$tmp/err"
flat=$(tr -d ' \t\n' <"$tmp/an.json")
tap_ok "$(echo "$flat" | grep -q '"tokens":64' && echo "$flat" | grep -q '"share_top1":\[0,0,0,1,0,0,0,0\]' \
    && echo "$flat" | grep -q '"same_top1":1,' && echo "$flat" | grep -q '"cv_load":2.6457513110645' \
    && echo "$flat" | grep -q '"overflow":0.875' && echo 0 || echo 1)" "analyze --json on a forced routing gives the worked-out figures"
"$ms" analyze "$fix/models/mixtral-tiny" "$tmp/ids.txt" "$tmp/ids.txt" --ids >"$tmp/an.txt" 2>&1
tap_ok "$(grep -q '(all files): 128 tokens' "$tmp/an.txt" && grep -q 'same-1 (chance)' "$tmp/an.txt" && [ "$(grep -c '^all ' "$tmp/an.txt")" = 3 ] && echo 0 || echo 1)" \
    "analyze prints a table per file and for all files"
"$ms" analyze "$fix/models/mixtral-tiny" "$tmp/ids.txt" --ids --csv >"$tmp/an.csv" 2>&1
tap_ok "$([ "$(wc -l <"$tmp/an.csv")" = 33 ] && head -n 1 "$tmp/an.csv" | grep -q '^file,layer,expert,share_top1' && echo 0 || echo 1)" \
    "analyze --csv: a header and one row per layer and expert (4 x 8)"
check_err 1 "dense model" "analyze on a dense model" -- analyze "$fix/models/llama-tiny" "$tmp/ids.txt" --ids
check_err 1 "tokenizer.json" "analyze of text without a tokenizer suggests --ids" -- analyze "$fix/models/mixtral-tiny-f16" "$tmp/ids.txt"
echo "1 2 banana" >"$tmp/bad.ids"
check_err 1 "bad.ids: token 3" "analyze of a malformed id file" -- analyze "$fix/models/mixtral-tiny" "$tmp/bad.ids" --ids

# Text in, text out through the model's tokenizer.json: -p encodes as
# `tokenize --bos` does, and the streamed text is the decode of the ids.
m="$fix/models/mixtral-tiny"
ids=$(printf 'Programs are free.\n' | "$ms" tokenize "$m" --bos | tr ' ' ',')
a=$("$ms" run "$m" -p "Programs are free." -n 12 --temp 0 --ignore-eos --print-ids 2>/dev/null)
b=$("$ms" run "$m" --prompt-ids "$ids" -n 12 --temp 0 --ignore-eos --print-ids 2>/dev/null)
tap_ok "$([ -n "$a" ] && [ "$a" = "$b" ] && echo 0 || echo 1)" "-p TEXT generates what --prompt-ids of its tokens does"
text=$("$ms" run "$m" -p "Programs are free." -n 12 --temp 0 --ignore-eos --colour never 2>/dev/null)
want="Programs are free.$(echo "$a" | "$ms" tokenize "$m" --decode)"
tap_ok "$([ "$text" = "$want" ] && echo 0 || echo 1)" "the streamed text is the prompt and the decode of the generated ids"
"$ms" run "$m" -p "Free software" -n 2 --temp 0 --print-ids --trace "$tmp/tt.json" >/dev/null 2>&1
tap_ok "$(tr -d '\t\n' <"$tmp/tt.json" | grep -q '"text":"<s>"' && tr -d '\t\n' <"$tmp/tt.json" | grep -q '"text":" s"' && echo 0 || echo 1)" \
    "the trace carries each token's text"
printf 'The licenses for most software are designed to take away your freedom.' >"$tmp/text.txt"
n_tok=$("$ms" tokenize "$m" <"$tmp/text.txt" | wc -w)
"$ms" analyze "$m" "$tmp/text.txt" >"$tmp/an2.txt" 2>&1
tap_ok "$(grep -q "text.txt: $n_tok tokens" "$tmp/an2.txt" && echo 0 || echo 1)" "analyze tokenizes text files ($n_tok tokens)"
# Chat: the prompt wrapped in a template, exactly as the template says.
out=$("$ms" run "$m" -p "hi" --chat --template chatml --system "Be brief." --print-prompt 2>"$tmp/err")
want=$(printf '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n')
tap_ok "$([ "$(echo "$out" | head -n 5)" = "$want" ] && echo "$out" | tail -n 1 | grep -q '^\[81 tokens: 63 127' && echo 0 || echo 1)" \
    "--chat --template chatml --print-prompt shows the rendered prompt and its ids"
printf '{%% for m in messages %%}[{{ m.role }}] {{ m.content }}\n{%% endfor %%}{%% if add_generation_prompt %%}[assistant] {%% endif %%}' >"$tmp/t.jinja"
out=$("$ms" run "$m" -p "hello there" --template "$tmp/t.jinja" --print-prompt 2>&1 | head -n 2)
tap_ok "$([ "$out" = "$(printf '[user] hello there\n[assistant] ')" ] && echo 0 || echo 1)" "--template FILE renders a template from a file"
check_err 1 "no chat_template" "--chat on a model without a template names the built-ins" -- run "$m" -p hi --chat
check_err 1 "neither a built-in" "--template of an unknown name" -- run "$m" -p hi --template nosuch
printf '{%% for x in y %%}' >"$tmp/bad.jinja"
check_err 1 "chat template" "a broken template file is reported" -- run "$m" -p hi --template "$tmp/bad.jinja"
check_err 1 "tokenizer.json" "-p on a model without a tokenizer" -- run "$fix/models/llama-tiny" -p "hello"
check_err 2 "not both" "-p and --prompt-ids together" -- run "$m" -p "hello" --prompt-ids 1

# perplexity: the negative log-likelihood of token t after a one-token
# prompt is -log softmax(logits)[t], with the logits from the reference.
g="$fix/golden/mixtral-tiny.json"
p0=$("$gt" "$g" 1 prompt)
want=$("$gt" "$g" 1 logits | awk -v t=17 '{m=$1; for(i=1;i<=NF;i++) if($i>m) m=$i; s=0; for(i=1;i<=NF;i++) s+=exp($i-m); printf "%.4f", -($(t+1)-m-log(s))}')
echo "$p0,17" >"$tmp/ppl.ids"
got=$("$ms" perplexity "$fix/models/mixtral-tiny" "$tmp/ppl.ids" --ids --k 2 --json 2>/dev/null | tr -d ' \t\n' | grep -o '"nll":[-0-9.e]*' | head -n 1 | cut -d: -f2)
tap_ok "$(awk -v a="$got" -v b="$want" 'BEGIN {d = a - b; exit !(a != "" && d < 1e-3 && d > -1e-3)}' && echo 0 || echo 1)" \
    "perplexity: the nll of one token equals -log softmax of the reference's logits ($got vs $want)"
# --lines: each line a document from a fresh context, so two copies of the
# one-token case score exactly as one does (as one text they would not)
printf '%s,17\n\n%s,17\n' "$p0" "$p0" >"$tmp/ppl2.ids"
"$ms" perplexity "$fix/models/mixtral-tiny" "$tmp/ppl2.ids" --ids --lines --k 2 --json >"$tmp/ppl2.json" 2>"$tmp/err"
got2=$(jq -r '.files[0] | "\(.documents) \(.scored) \(.nll)"' "$tmp/ppl2.json" 2>/dev/null)
tap_ok "$(echo "$got2" | awk -v b="$want" '{d = $3 - b; exit !($1 == 2 && $2 == 2 && d < 1e-3 && d > -1e-3)}' && echo 0 || echo 1)" \
    "perplexity --lines: two one-line documents, 2 tokens scored, each as the reference says (documents, scored, nll: $got2; want nll $want)"
one=$("$ms" perplexity "$fix/models/mixtral-tiny" "$tmp/ppl2.ids" --ids --k 2 --json 2>/dev/null | jq -r '.files[0].scored')
tap_ok "$([ "$one" = 3 ] && echo 0 || echo 1)" "perplexity without --lines: the file is one text (3 tokens scored: $one)"
"$ms" perplexity "$fix/models/mixtral-tiny" "$tmp/ppl.ids" "$tmp/ppl.ids" --ids >"$tmp/ppl.txt" 2>&1
tap_ok "$(grep -q '^(all files) *2 ' "$tmp/ppl.txt" && echo 0 || echo 1)" "perplexity: a table per file and for all files"
a=$("$ms" perplexity "$m" "$tmp/text.txt" --json 2>/dev/null | tr -d ' \t\n' | grep -o '"perplexity":[0-9.e+]*' | tail -n 1)
b=$("$ms" perplexity "$m" "$tmp/text.txt" --json --expert-off 0,1,2 2>/dev/null | tr -d ' \t\n' | grep -o '"perplexity":[0-9.e+]*' | tail -n 1)
tap_ok "$([ -n "$a" ] && [ -n "$b" ] && [ "$a" != "$b" ] && echo 0 || echo 1)" "perplexity: controls apply ($a, with experts 0-2 off $b)"

# Every family inspects, benches and runs: the MoE ones report routing.
for m in llama-tiny llama3-tiny mixtral-tiny mixtral-tiny-bf16 mixtral-tiny-fused olmoe-tiny qwen2moe-tiny \
    qwen3moe-tiny qwen3moe-tiny-fused micro-llama-tiny micro-olmo-tiny; do
    "$ms" inspect "$fix/models/$m" >"$tmp/fam" 2>&1 &&
        "$ms" bench "$fix/models/$m" -p 8 -n 4 -r 1 -t 2 >>"$tmp/fam" 2>&1
    rc=$?
    moe=$(grep -c '^experts per token' "$tmp/fam")
    tap_ok "$([ "$rc" = 0 ] && grep -q '| *pp8 *|' "$tmp/fam" && grep -q '| *tg4 *|' "$tmp/fam" &&
        { [ "$moe" = 1 ] || case $m in llama*) true ;; *) false ;; esac; } && echo 0 || echo 1)" \
        "$m: inspect and bench work ($(grep architecture "$tmp/fam" | tr -s ' '))"
done
grep -q 'shared expert *1 per MoE layer' "$tmp/fam" || "$ms" inspect "$fix/models/qwen2moe-tiny" >"$tmp/fam2" 2>&1
tap_ok "$(grep -q 'shared expert *1 per MoE layer, width 96' "$tmp/fam2" && grep -q '(1 dense' "$tmp/fam2" && echo 0 || echo 1)" \
    "qwen2moe-tiny: inspect reports the shared expert and the dense layer"
"$ms" inspect "$fix/models/qwen3moe-tiny" >"$tmp/fam3" 2>&1
tap_ok "$(grep -q '8 in 2 MoE layers (2 dense' "$tmp/fam3" && echo 0 || echo 1)" "qwen3moe-tiny: decoder_sparse_step 2 leaves 2 of 4 layers dense"

# inspect
"$ms" inspect "$fix/models/mixtral-tiny" >"$tmp/insp" 2>&1
tap_ok "$(grep -q 'architecture *mixtral' "$tmp/insp" && grep -q 'experts per token *2' "$tmp/insp" && grep -q 'experts *8 in 3 MoE layers' "$tmp/insp" && grep -q 'weight type *F32' "$tmp/insp" && echo 0 || echo 1)" \
    "inspect names the architecture, experts, k and weight type"
"$ms" inspect "$fix/models/mixtral-tiny-bf16" >"$tmp/insp2" 2>&1
tap_ok "$(grep -q 'weight type *BF16' "$tmp/insp2" && echo 0 || echo 1)" "inspect reports BF16 weights"
"$ms" inspect "$fix/gguf/mixtral-k-tiny-q4_k_m.gguf" >"$tmp/insp3" 2>&1
tap_ok "$(grep -q 'weight type *Q4_K$' "$tmp/insp3" && grep -q 'weight type mix .*Q8_0 .*%, Q4_K .*%, Q5_K .*%, Q6_K .*%' "$tmp/insp3" && echo 0 || echo 1)" \
    "inspect reports a Q4_K_M file's type mix ($(grep 'type mix' "$tmp/insp3" | tr -s ' '))"

# bench prints llama-bench's table and the BLAS core
"$ms" bench "$fix/models/mixtral-tiny" -p 16 -n 8 -r 3 -t 2 >"$tmp/bench" 2>&1
tap_ok "$(grep -q '| *pp16 *|' "$tmp/bench" && grep -q '| *tg8 *|' "$tmp/bench" && grep -q 'BLAS core' "$tmp/bench" && echo 0 || echo 1)" \
    "bench prints pp16 and tg8 rows and the BLAS core"
# bench at a depth, with an f16 cache and the trace compared
"$ms" bench "$fix/models/mixtral-tiny" -p 0 -n 8 -d 24 -r 2 -t 2 --kv-type f16 --trace >"$tmp/bench3" 2>&1
tap_ok "$(grep -q '| *tg8 @ d24 *|' "$tmp/bench3" && grep -q '| *tg8 @ d24 +trace *|' "$tmp/bench3" &&
    grep -q 'KV cache F16' "$tmp/bench3" && grep -q '^tg8 @ d24: with the routing trace recorded into a transcript, [0-9.]*% of the speed' "$tmp/bench3" &&
    grep -q 'MB of weights read per token' "$tmp/bench3" && grep -q '^resident during tg8 @ d24: .*: within' "$tmp/bench3" &&
    echo 0 || echo 1)" "bench -d 24 --kv-type f16 --trace: rows at depth with and without the trace, bytes per token, memory"
# a q8_0 cache: on a model whose head dimension (32) makes whole blocks,
# and refused with the reason on one whose (16) does not
"$ms" bench "$fix/models/qwen3moe-tiny" -p 0 -n 8 -d 24 -r 2 -t 2 --kv-type q8_0 >"$tmp/bench5" 2>&1
tap_ok "$(grep -q '| *tg8 @ d24 *|' "$tmp/bench5" && grep -q 'KV cache Q8_0' "$tmp/bench5" &&
    grep -q '^resident during tg8 @ d24: .*: within' "$tmp/bench5" && echo 0 || echo 1)" \
    "bench -d 24 --kv-type q8_0 on qwen3moe-tiny: the row at depth, the cache type, memory within"
"$ms" run "$fix/models/qwen3moe-tiny" --prompt-ids 1,2,3 -n 8 --temp 0 --ignore-eos --print-ids --kv-type q8_0 \
    >"$tmp/kvq8" 2>&1 && st=0 || st=$?
tap_ok "$([ "$st" = 0 ] && [ "$(tr -cd ' ' <"$tmp/kvq8" | wc -c)" = 7 ] && echo 0 || echo 1)" "run --kv-type q8_0 generates 8 tokens"
"$ms" run "$fix/models/mixtral-tiny" --prompt-ids 1,2,3 -n 4 --kv-type q8_0 >"$tmp/kvq8b" 2>&1 && st=0 || st=$?
tap_ok "$([ "$st" != 0 ] && grep -q 'q8_0 KV cache needs a head dimension that is a multiple of 32.*is 16' "$tmp/kvq8b" &&
    echo 0 || echo 1)" "run --kv-type q8_0 refused where the head dimension is 16, with the reason"
"$ms" bench "$fix/models/mixtral-tiny" --kv-type q4 >"$tmp/bench4" 2>&1 && st=0 || st=$?
tap_ok "$([ "$st" = 2 ] && grep -q 'kv-type takes f32, f16 or q8_0' "$tmp/bench4" && echo 0 || echo 1)" "bench refuses an unknown KV cache type"
# 8-bit activations for K-quant weights (--act-type): f32 gives the dequantised twin's greedy ids
q4="$fix/gguf/mixtral-k-tiny-q4_k_m"
"$ms" run "$q4.gguf" --prompt-ids 1,2,3 -n 8 --temp 0 --ignore-eos --print-ids --act-type f32 >"$tmp/act_f32" 2>&1
"$ms" run "$q4-deq.gguf" --prompt-ids 1,2,3 -n 8 --temp 0 --ignore-eos --print-ids >"$tmp/act_deq" 2>&1
"$ms" run "$q4.gguf" --prompt-ids 1,2,3 -n 8 --temp 0 --ignore-eos --print-ids --act-type q8 >"$tmp/act_q8" 2>&1
tap_ok "$(cmp -s "$tmp/act_f32" "$tmp/act_deq" && [ "$(wc -w <"$tmp/act_q8")" = 8 ] && echo 0 || echo 1)" \
    "run --act-type f32 on a Q4_K_M file gives its dequantised twin's greedy ids; --act-type q8 runs"
"$ms" bench "$q4.gguf" -p 8 -n 4 -r 1 --act-type q8 >"$tmp/bench_q8" 2>&1
"$ms" bench "$q4.gguf" -p 8 -n 4 -r 1 --act-type f32 >"$tmp/bench_f32" 2>&1
tap_ok "$(grep -q 'activations for K-quants q8' "$tmp/bench_q8" && grep -q 'activations for K-quants f32' "$tmp/bench_f32" && echo 0 || echo 1)" \
    "bench says which activations meet K-quant weights"
check_err 2 "takes f32 or q8" "--act-type with an unknown type" -- run "$q4.gguf" --prompt-ids 1 --act-type q4
if grep -q avx512f /proc/cpuinfo && grep -q avx512bw /proc/cpuinfo; then
    tap_ok "$(grep -q 'BLAS core: SkylakeX' "$tmp/bench" && echo 0 || echo 1)" "on an AVX-512 CPU OpenBLAS runs its SkylakeX kernels without the user setting anything"
    OPENBLAS_CORETYPE=Haswell "$ms" bench "$fix/models/mixtral-tiny" -p 8 -n 0 -r 1 >"$tmp/bench2" 2>&1
    tap_ok "$(grep -q 'BLAS core: Haswell' "$tmp/bench2" && echo 0 || echo 1)" "a core the user chose is kept"
else
    tap_skip "this CPU has no AVX-512, so the SkylakeX default cannot be checked"
    tap_skip "this CPU has no AVX-512"
fi

# Errors: a message that says what is wrong, an exit status, no crash.
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
