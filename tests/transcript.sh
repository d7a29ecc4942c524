#!/bin/sh
# Transcripts through the command line as a user meets them: `run --save`,
# `export --html/--csv/--ansi` checked by parsing what they write, `replay`
# of a greedy and a seeded sampled session (identical) and of an edited one
# (diverges at the edited token), and the broken-transcript corpus, each
# file refused with exit status 1 and a message naming it.
. "${top_srcdir:-.}/tests/tap.sh"
src=${top_srcdir:-.}
bld=${top_builddir:-.}
ms="$bld/moescope"
m="$src/tests/fixtures/models/mixtral-tiny"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- save -------------------------------------------------------------------
"$ms" run "$m" -p "Programs are free." -n 12 --temp 0 --ignore-eos --expert-off L1:5 --k 3 \
    --save "$tmp/g.json" >"$tmp/out" 2>"$tmp/err"
tap_ok $? "run --save writes a transcript"
tap_ok "$(jq -e '.format == "moescope-transcript" and .version == 1 and .n_tokens == (.tokens | length)
    and (.tokens | length) == 26 and ([.tokens[] | select(.prompt)] | length) == 14
    and (.turns | map(.role)) == ["user", "assistant"] and .turns[0].text == "Programs are free."
    and .turns[1].token == 14 and (.controls | map(.change)) == ["off L1:5", "k 3"]
    and .model.moe_layers == [0, 1, 2] and .sampler.temp == 0' "$tmp/g.json" >/dev/null && echo 0 || echo 1)" \
    "the transcript has 14 prompt and 12 generated tokens, both turns and both controls"
tap_ok "$([ "$(jq -r .model.config_sha256 "$tmp/g.json")" = "$(sha256sum <"$m/config.json" | cut -d' ' -f1)" ] && echo 0 || echo 1)" \
    "model.config_sha256 is sha256sum of config.json"
# (bytes that are not whole UTF-8 characters become U+FFFD in a JSON string: compare the ASCII)
reply=$(jq -r '.turns[1].text' "$tmp/g.json" | LC_ALL=C tr -d '\200-\377')
tap_ok "$([ "Programs are free.$reply" = "$(LC_ALL=C tr -d '\200-\377' <"$tmp/out")" ] && echo 0 || echo 1)" "the assistant turn holds the text run printed"
# probabilities: 8 per layer, at most 5 decimals, summing to 1 within 1e-4
tap_ok "$(jq -e '[.tokens[].layers[].probs | (length == 8) and ((add - 1) | fabs) < 1e-4] | all' "$tmp/g.json" >/dev/null &&
    ! grep -Eq '[0-9]\.[0-9]{6,}' "$tmp/g.json" && echo 0 || echo 1)" "probabilities are compact fixed decimals that sum to 1"
"$ms" run "$m" -p "x" -n 2 --save "$tmp/no/such/dir/t.json" >/dev/null 2>"$tmp/err"
tap_ok "$([ $? = 1 ] && grep -q 'no/such/dir/t.json' "$tmp/err" && echo 0 || echo 1)" "a save into a missing directory is reported ($(tr '\n' ' ' <"$tmp/err"))"

# ---- export -----------------------------------------------------------------
"$ms" export "$tmp/g.json" --html "$tmp/g.html" --csv "$tmp/g.csv" 2>"$tmp/err"
tap_ok $? "export --html --csv ($(head -c 200 "$tmp/err"))"
spans=$(grep -o '<span class="t[ "][^>]*data-i="[0-9]*"' "$tmp/g.html" | wc -l)
coloured=$(grep -o '<span class="t[^"]* e[0-7]" data-i=' "$tmp/g.html" | wc -l)
prompt=$(grep -o '<span class="t p[ "]' "$tmp/g.html" | wc -l)
tap_ok "$([ "$spans" = 26 ] && [ "$coloured" = 26 ] && [ "$prompt" = 14 ] && echo 0 || echo 1)" \
    "the page has one coloured span per token, 14 marked prompt ($spans spans, $coloured coloured, $prompt prompt)"
tap_ok "$([ "$(grep -c '<li class="lg"><span class="sw e[0-7]">' "$tmp/g.html")" = 8 ] && echo 0 || echo 1)" "the legend lists the 8 experts"
tap_ok "$([ "$(grep -o 'class="ctl"[^<]*' "$tmp/g.html" | grep -c 'off L1:5\|k 3')" = 2 ] && echo 0 || echo 1)" "both control changes are marked inline"
tap_ok "$(grep -Eiq '(src|href)=|@import|url\(|https?:' "$tmp/g.html" && echo 1 || echo 0)" "the page loads nothing from outside (no src, href, url() or http)"
# the embedded routing equals the transcript's, token by token
sed -n '/<script id="routing" type="application\/json">/,/<\/script>/p' "$tmp/g.html" | sed '1d;$d' >"$tmp/routing.json"
tap_ok "$(jq -e --slurpfile t "$tmp/g.json" '(.tokens | length) == 26 and
    ([range(26) as $i | range(3) as $r | .tokens[$i][$r][0] == $t[0].tokens[$i].layers[$r].probs
        and .tokens[$i][$r][1] == $t[0].tokens[$i].layers[$r].experts] | all)' "$tmp/routing.json" >/dev/null && echo 0 || echo 1)" \
    "the page's routing data (hover panel) is the transcript's probabilities and choices"
# CSV: header + tokens x MoE layers x experts rows; chosen rows = tokens x layers x k
rows=$(($(wc -l <"$tmp/g.csv") - 1))
chosen=$(awk -F, 'NR > 1 && $(NF - 2) == 1' "$tmp/g.csv" | wc -l)
tap_ok "$([ "$rows" = $((26 * 3 * 8)) ] && [ "$chosen" = $((26 * 3 * 3)) ] && head -n 1 "$tmp/g.csv" | grep -qx 'token,pos,prompt,text,layer,expert,name,probability,chosen,rank,weight' && echo 0 || echo 1)" \
    "CSV: a header, 26 x 3 x 8 rows, 26 x 3 x 3 of them chosen ($rows rows, $chosen chosen)"
sums=$(awk -F, 'NR > 1 { s[$1 "," $(NF - 6)] += $(NF - 3) } END { for (k in s) if (s[k] < 0.9999 || s[k] > 1.0001) bad++; print bad + 0 }' "$tmp/g.csv")
tap_ok "$([ "$sums" = 0 ] && echo 0 || echo 1)" "CSV: each token's probabilities in each layer sum to 1 ($sums off)"
first=$(jq -r '.tokens[14].layers[1] | "\(.experts[0]),\(.probs[.experts[0]])"' "$tmp/g.json")
tap_ok "$(awk -F, -v want="$first" 'NR > 1 && $1 == 14 && $(NF - 6) == 1 && $(NF - 1) == 1 { print $(NF - 5) "," $(NF - 3) }' "$tmp/g.csv" | grep -qx "$first" && echo 0 || echo 1)" \
    "CSV: token 14's first choice in layer 1 and its probability match the transcript ($first)"
"$ms" export "$tmp/g.json" --ansi --colour always >"$tmp/ansi" 2>"$tmp/legend"
esc=$(grep -o "$(printf '\033')\[38;5;[0-9]*m" "$tmp/ansi" | wc -l)
tap_ok "$([ "$esc" = 26 ] && grep -q 'experts:' "$tmp/legend" && grep -q '\[off L1:5\]' "$tmp/ansi" && echo 0 || echo 1)" \
    "--ansi --colour always: 26 coloured tokens, the legend, the controls ($esc)"
NO_COLOR=1 "$ms" export "$tmp/g.json" --ansi >"$tmp/ansi2" 2>/dev/null
tap_ok "$(grep -q "$(printf '\033')" "$tmp/ansi2" && echo 1 || echo 0)" "--ansi honours NO_COLOR"
"$ms" export "$src/tests/data/transcripts/good-v0-trace.json" --csv "$tmp/v0.csv" 2>"$tmp/err"
tap_ok "$([ $? = 0 ] && [ "$(wc -l <"$tmp/v0.csv")" -gt 1 ] && echo 0 || echo 1)" "a version 0 file (an old run --trace) still exports"
"$ms" export "$tmp/g.json" 2>"$tmp/err"
tap_ok "$([ $? = 2 ] && grep -q 'say what to write' "$tmp/err" && echo 0 || echo 1)" "export without an output says what it needs"

# ---- replay -----------------------------------------------------------------
out=$("$ms" replay "$tmp/g.json" 2>&1)
tap_ok "$([ $? = 0 ] && echo "$out" | grep -q '^identical, 26 tokens (14 prompt, 12 generated)' && echo 0 || echo 1)" "greedy replay with controls: $out"
"$ms" run "$m" -p "Free software" -n 24 --temp 1.2 --seed 99 --ignore-eos --bias 2=1.5 --save "$tmp/s.json" >/dev/null 2>&1
out=$("$ms" replay "$tmp/s.json" "$m" -t 1 2>&1)
tap_ok "$([ $? = 0 ] && echo "$out" | grep -q '^identical, ' && echo 0 || echo 1)" "seeded sampled replay (temp 1.2, seed 99, bias): $out"
jq '.sampler.seed = "100"' "$tmp/s.json" >"$tmp/s2.json"
out=$("$ms" replay "$tmp/s2.json" 2>&1)
tap_ok "$([ $? = 3 ] && echo "$out" | grep -q '^diverges at token [0-9]* (generated token [0-9]*): recorded' && echo 0 || echo 1)" "another seed diverges: $out"
jq '.tokens[20].id = ((.tokens[20].id + 1) % 320)' "$tmp/g.json" >"$tmp/g2.json"
out=$("$ms" replay "$tmp/g2.json" 2>&1)
tap_ok "$([ $? = 3 ] && echo "$out" | grep -q '^diverges at token 20 (generated token 7)' && echo 0 || echo 1)" "an edited token is where it diverges: $out"
jq '.controls = []' "$tmp/g.json" >"$tmp/g3.json"
out=$("$ms" replay "$tmp/g3.json" 2>&1)
tap_ok "$([ $? = 3 ] && echo 0 || echo 1)" "without its controls the session does not replay: $out"
out=$("$ms" replay "$tmp/g.json" "$src/tests/fixtures/models/olmoe-tiny" 2>&1)
tap_ok "$([ $? = 1 ] && echo "$out" | grep -q 'transcript was made with mixtral' && echo 0 || echo 1)" "replay on another architecture is refused: $out"

# ---- the broken-transcript corpus --------------------------------------------
grep -v '^#' "$src/tests/data/transcripts/EXPECT" | while IFS='|' read -r f want; do
    "$ms" export "$src/tests/data/transcripts/$f" --csv "$tmp/c.csv" >/dev/null 2>"$tmp/err"
    rc=$?
    if [ -z "$want" ]; then
        tap_ok "$rc" "corpus: $f opens"
    else
        tap_ok "$([ $rc = 1 ] && grep -qF "$f: $want" "$tmp/err" && echo 0 || echo 1)" "corpus: $f refused ($(head -c 160 "$tmp/err"))"
    fi
done >"$tmp/corpus.tap"
# the loop ran in a subshell: renumber its results into ours
while read -r status rest; do
    case $status in
    ok) tap_ok 0 "${rest#* - }" ;;
    not) tap_ok 1 "${rest#ok * - }" ;;
    esac
done <"$tmp/corpus.tap"
tap_done
