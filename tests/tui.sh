#!/bin/sh
# The explorer as a person uses it, driven through a private tmux server:
# start on the bundled model, type a prompt, watch tokens arrive in expert
# colours, move the cursor, switch experts off (and check the trace never
# routes to them afterwards), turn the k dial, add a neuron offset, resize,
# run without colour, and quit to a restored terminal. Every wait polls
# capture-pane with a timeout instead of sleeping a fixed time.
. "${top_srcdir:-.}/tests/tap.sh"
src=$(cd "${top_srcdir:-.}" && pwd)
bld=$(cd "${top_builddir:-.}" && pwd)
ms="$bld/moescope"

if ! command -v tmux >/dev/null 2>&1; then
    tap_skip "tmux is not installed (apt-get install tmux)"
    tap_done
    exit 0
fi

tmp=$(mktemp -d)
sock="moescope-test-$$"
T="tmux -L $sock -f /dev/null"
cleanup() {
    $T kill-server 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# start ENV...: a fresh session running the explorer (no model argument:
# the bundled one) in a 120x40 window; after it exits the pane shows its
# exit status and stays open so the test can look at the restored screen.
start() {
    $T kill-session -t main 2>/dev/null
    printf '#!/bin/sh\nprintf "shell-before\\n"\nenv TERM=screen-256color XDG_STATE_HOME="%s/state" %s "%s" --seed 7 "$@"\necho "MOESCOPE-EXIT=$?"\nexec sleep 600\n' \
        "$tmp" "$*" "$ms" >"$tmp/run.sh"
    chmod +x "$tmp/run.sh"
    $T new-session -d -s main -x 120 -y 40 "$tmp/run.sh"
}
screen() { $T capture-pane -t main -p 2>/dev/null; }
screen_e() { $T capture-pane -t main -e -p 2>/dev/null; }
# wait_for PATTERN [SECONDS]: poll the screen until grep -E finds PATTERN.
wait_for() {
    limit=$(($(date +%s) + ${2:-10}))
    while [ "$(date +%s)" -le "$limit" ]; do
        s=$(screen 2>/dev/null) || return 1 # the session is gone
        echo "$s" | grep -Eq -- "$1" && return 0
        sleep 0.05
    done
    return 1
}
keys() { $T send-keys -t main "$@"; }
# the transcript's token lines (below its legend), up to the router's border
transcript_e() { screen_e | awk 'NR >= 4 && NR <= 20' | sed 's/││.*//'; }
router_title() { screen | sed -n 2p | grep -o 'Router · token .*(#[0-9]*)'; }
ok() { tap_ok "$([ "$1" = 0 ] && echo 0 || echo 1)" "$2"; }

# ---- start, prompt, colours --------------------------------------------
start
wait_for 'Type a prompt' 15
ok $? "starts on the bundled model with the prompt line ready"
screen | grep -q 'tiny-mixtral · mixtral 8×top-2 · k=2'
ok $? "status bar: model, architecture, k"

keys "Once upon a time" Enter
wait_for '^(done|end of text): [0-9]+ tokens' 20
ok $? "typing a prompt and Enter generates (prompt had the focus)"
screen | grep -q 'Once upon a time'
ok $? "the prompt's text is in the transcript"
n_col=$(transcript_e | grep -o '38;5;[0-9]*m' | grep -v '38;5;244m' | sort -u | wc -l)
ok "$([ "$n_col" -ge 2 ] && echo 0 || echo 1)" "tokens in at least two expert colours ($n_col)"
screen | grep -Eq 'ctx [0-9]+/2048' && screen | grep -Eq '[1-9][0-9]* tok/s'
ok $? "status bar: context used and tokens/s"

# ---- cursor and router ---------------------------------------------------
keys Tab
before=$(router_title)
keys Left Left Left
i=0
while [ "$(router_title)" = "$before" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
after=$(router_title)
nb=$(echo "$before" | grep -o '#[0-9]*' | tr -d '#')
na=$(echo "$after" | grep -o '#[0-9]*' | tr -d '#')
ok "$([ -n "$nb" ] && [ "$na" = $((nb - 3)) ] && echo 0 || echo 1)" "Left x3 moves the router to token #$na (was #$nb)"
rows_before=$(screen | sed -n 4,8p | cut -c70-)
keys Home
wait_for 'Router · token .*\(#0\)' 5
ok $? "Home selects the first token"
[ "$(screen | sed -n 4,8p | cut -c70-)" != "$rows_before" ]
ok $? "the router's bars change with the selected token"

# ---- experts off: marked, never chosen afterwards ---------------------------
keys ":off 3" Enter
wait_for '^off 3 \(from token [0-9]+\)' 5
ok $? ":off 3 is applied and logged"
screen | grep -Eq '^│\[ \] 3 .*off'
ok $? "the experts pane marks expert 3 off"
keys Tab
keys Down Down Down Down Down " "
wait_for '^off 5 \(from token' 5
ok $? "Space on expert 5 in the experts pane switches it off"
screen | grep -Eq '^│\[ \] 5 .*off'
ok $? "the experts pane marks expert 5 off"

keys +
wait_for '· k=3 ·' 5
ok $? "+ turns the k dial: the status bar shows k=3"

keys ":offset 2:1:17=3.5" Enter
wait_for 'L2 e1 n17 +\+3\.5' 5
ok $? ":offset 2:1:17=3.5 shows in the steering pane"

keys i " and then" Enter
wait_for '^(done|end of text): [0-9]+ tokens' 20
ok $? "a second prompt continues the conversation under the controls"
keys Escape ":save $tmp/trace.json" Enter
wait_for "saved [0-9]+ tokens to" 10
ok $? ":save writes the trace"
if command -v python3 >/dev/null 2>&1; then
    why=$(python3 - "$tmp/trace.json" 2>&1 <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
ctl = {c["change"]: c["pos"] for c in d["controls"]}
bad = []
for verb, e in (("off 3", 3), ("off 5", 5)):
    p = ctl.get(verb)
    if p is None:
        bad.append("no '%s' in the control log %s" % (verb, list(ctl)))
        continue
    after = [t for t in d["tokens"] if t["pos"] >= p]
    if not after:
        bad.append("no tokens after '%s'" % verb)
    for t in after:
        for l in t["layers"]:
            if e in l["experts"]:
                bad.append("token %d layer %d chose %d" % (t["pos"], l["layer"], e))
k3 = ctl.get("k 3")
if k3 is not None and any(len(l["experts"]) != 3 for t in d["tokens"] if t["pos"] >= k3 for l in t["layers"]):
    bad.append("k 3 not honoured")
print("; ".join(bad[:5]))
EOF
)
    ok "$([ -z "$why" ] && echo 0 || echo 1)" "the trace: experts 3 and 5 never chosen after they went off, k=3 after +"
    [ -n "$why" ] && tap_diag "$why"
else
    tap_skip "python3 is missing: the trace is not checked"
fi

# ---- help, resize ----------------------------------------------------------
keys F1
wait_for 'Help · any key closes' 5
ok $? "F1 opens the help overlay"
keys x
$T resize-window -t main -x 60 -y 20
wait_for 'moescope needs 80x22; this terminal is 60x20' 5
ok $? "at 60x20 the explorer says it needs more room"
screen | grep -q 'Transcript'
ok "$([ $? != 0 ] && echo 0 || echo 1)" "... and draws no panes there"
$T resize-window -t main -x 200 -y 60
wait_for 'Transcript · colour' 5
ok $? "at 200x60 the panes come back"
s=$(screen)
[ "$(echo "$s" | wc -l)" = 60 ] && ! echo "$s" | grep -q 'moescope needs' &&
    echo "$s" | sed -n 1p | grep -q 'moescope · tiny-mixtral' && echo "$s" | sed -n 59p | grep -q '^>'
ok $? "at 200x60: status bar on top, prompt at the bottom, no size message"
n_corner=$(echo "$s" | grep -o '┌' | wc -l)
ok "$([ "$n_corner" = 5 ] && echo 0 || echo 1)" "at 200x60: five panes ($n_corner)"
screen_e >"$tmp/screenshot.ans"

# ---- Ctrl-C asks; q quits and restores ---------------------------------------
keys C-c
wait_for 'Quit moescope\? \(y/n\)' 5
ok $? "Ctrl-C on an idle screen asks before quitting"
keys n
keys q
wait_for 'MOESCOPE-EXIT=0' 10
ok $? "q quits with status 0"
screen | grep -q 'shell-before' && ! screen | grep -q 'Transcript'
ok $? "the terminal is restored (the shell's screen, no panes)"
[ -s "$tmp/state/moescope/history" ] && grep -q 'Once upon a time' "$tmp/state/moescope/history"
ok $? "prompt history is kept in \$XDG_STATE_HOME/moescope/history"

# ---- NO_COLOR ----------------------------------------------------------------
start NO_COLOR=1
wait_for 'Type a prompt' 15
keys "hello" Enter
wait_for '^(done|end of text): [0-9]+ tokens' 20
ok $? "NO_COLOR: generates"
n_col=$(screen_e | grep -c '38;5;\|\[3[0-7]m')
ok "$([ "$n_col" = 0 ] && echo 0 || echo 1)" "NO_COLOR: no colour escapes on the screen ($n_col lines)"
screen | grep -q 'experts A=0 B=1' && screen | grep -q 'no colour'
ok $? "NO_COLOR: experts named by letters"
keys Escape ":quit" Enter
wait_for 'MOESCOPE-EXIT=0' 10
ok $? "NO_COLOR: :quit quits"

# ---- SIGTERM restores the terminal ------------------------------------------
start
wait_for 'Type a prompt' 15
pane_pid=$($T display -p -t main '#{pane_pid}')
pid=$(ps -o pid= --ppid "$pane_pid" | tr -d ' ' | head -n 1)
[ -n "$pid" ] && kill -TERM "$pid"
wait_for 'MOESCOPE-EXIT=' 10
ok $? "SIGTERM ends the explorer"
screen | grep -q 'shell-before' && ! screen | grep -q 'Transcript'
ok $? "... and the terminal is restored"

# ---- the history comes back ----------------------------------------------------
start
wait_for 'Type a prompt' 15
keys Up
wait_for '^> hello' 5
ok $? "Up recalls the previous session's prompt"
keys C-u C-r "Once" 
wait_for "reverse-i-search.*Once upon a time" 5
ok $? "Ctrl-R searches the history"
keys C-g Escape q
wait_for 'MOESCOPE-EXIT=0' 10

# for the README: SCREENSHOT=FILE keeps the 200x60 capture
[ -n "${SCREENSHOT:-}" ] && cp "$tmp/screenshot.ans" "$SCREENSHOT"
tap_done
