#!/bin/sh
# The explorer's responsiveness while it generates, through a private tmux
# server: the time from a key press (+ or -, the k dial) to the status bar
# showing the new k, over N presses made while a generation runs (median
# and 90th percentile; target: median under 50 ms); and its generation
# speed against `moescope run` on the same model, prompt and token count
# (target: at least 95%).
#   tests/bench/tui_latency.sh [MODEL]     (default: the bundled model)
# Environment: MOESCOPE_BIN (default build/moescope), PRESSES (default 30),
# TOKENS (default 1000), THREADS, ROUNDS (default 5: the explorer and
# `run` take turns, each generating TOKENS, and the medians are compared;
# one generation of a tiny model lasts a fraction of a second, which a
# busy machine disturbs by 10-30%).
# The latency includes tmux's own delay and one capture-pane per poll
# (a few ms), so it is an upper bound of the explorer's.
set -eu
cd "$(dirname "$0")/../.."
ms=${MOESCOPE_BIN:-$(pwd)/build/moescope}
[ -x "$ms" ] || tools/setup.sh
model=${1:-$(pwd)/assets/tiny-mixtral}
presses=${PRESSES:-30}
tokens=${TOKENS:-1000}
threads=${THREADS:-$(nproc)}
rounds=${ROUNDS:-5}
command -v tmux >/dev/null || { echo "tui_latency: needs tmux" >&2; exit 1; }

tmp=$(mktemp -d)
T="tmux -L moescope-bench-$$ -f /dev/null"
trap '$T kill-server 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
ms_now() { date +%s%N | cut -c1-13; }
screen() { $T capture-pane -t main -p 2>/dev/null; }
wait_for() { # PATTERN [SECONDS [POLL]]
    limit=$(($(date +%s) + ${2:-30}))
    while [ "$(date +%s)" -le "$limit" ]; do
        screen | grep -Eq -- "$1" && return 0
        sleep "${3:-0.01}"
    done
    echo "tui_latency: timed out waiting for '$1'" >&2
    screen >&2
    exit 1
}
keys() { $T send-keys -t main "$@"; }

start() { # a fresh explorer, its autosave in a fresh directory
    $T kill-session -t main 2>/dev/null || true
    rm -rf "$tmp/state"
    $T new-session -d -s main -x 160 -y 48 \
        "env TERM=screen-256color XDG_STATE_HOME=$tmp/state $ms $model --seed 1 --temp 0 --ignore-eos -t $threads -n $tokens; sleep 600"
    wait_for 'Type a prompt' 60
}
median() { sort -n | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# ---- generation speed -------------------------------------------------------
: >"$tmp/tui" && : >"$tmp/run"
r=0
while [ "$r" -lt "$rounds" ]; do
    start
    keys "Once upon a time" Enter
    # polled slowly: each poll (tmux capture-pane, grep) takes CPU from the
    # generation it waits for, which `run` below does not have to share
    wait_for '^(done|context full|end of text): [0-9]+ tokens' 600 0.5
    screen | grep -Eo '^(done|context full|end of text): [0-9]+ tokens, [0-9.]+ tok/s' | grep -Eo '[0-9.]+ tok/s' |
        cut -d' ' -f1 >>"$tmp/tui"
    tui_n=$(screen | grep -Eo '^(done|context full|end of text): [0-9]+' | grep -Eo '[0-9]+$')
    "$ms" run "$model" -p "Once upon a time" -n "$tui_n" --temp 0 --seed 1 --ignore-eos -t "$threads" 2>&1 >/dev/null |
        grep -Eo 'generated [0-9]+ tokens in [0-9.]+ s \([0-9.]+ t/s\)' | grep -Eo '\([0-9.]+' | tr -d '(' >>"$tmp/run"
    r=$((r + 1))
done
tui_tps=$(median <"$tmp/tui")
run_tps=$(median <"$tmp/run")
start

# ---- key latency while generating ------------------------------------------
keys Tab
: >"$tmp/lat"
k=$(screen | sed -n 1p | grep -Eo 'k=[0-9]+' | cut -d= -f2)
n=0
while [ "$n" -lt "$presses" ]; do
    if ! screen | sed -n 1p | grep -q generating; then
        keys ":clear" Enter
        wait_for '^new conversation' 30
        keys i "Once upon a time" Enter Tab
        wait_for '· generating' 30
    fi
    if [ "$k" = 2 ]; then key=+; want=3; else key=-; want=2; fi
    t0=$(ms_now)
    keys "$key"
    while ! screen | sed -n 1p | grep -q "· k=$want ·"; do :; done
    t1=$(ms_now)
    k=$want
    # count it only if the generation was still running
    if screen | sed -n 1p | grep -q generating; then
        echo $((t1 - t0)) >>"$tmp/lat"
        n=$((n + 1))
    fi
done
keys q

sort -n "$tmp/lat" >"$tmp/sorted"
cnt=$(wc -l <"$tmp/sorted")
median=$(sed -n "$(((cnt + 1) / 2))p" "$tmp/sorted")
p90=$(sed -n "$(((cnt * 9 + 9) / 10))p" "$tmp/sorted")
max=$(tail -n 1 "$tmp/sorted")
echo "model: $model ($threads threads)"
echo "key press -> screen, during generation: median ${median} ms, p90 ${p90} ms, max ${max} ms over $cnt presses (target: median < 50 ms)"
echo "generation: explorer ${tui_tps} tok/s, moescope run ${run_tps} tok/s over $tui_n tokens (medians of $rounds alternating" \
    "runs; explorer $(tr '\n' ' ' <"$tmp/tui")/ run $(tr '\n' ' ' <"$tmp/run"));" \
    "ratio $(awk -v a="$tui_tps" -v b="$run_tps" 'BEGIN { printf "%.3f", a / b }') (target >= 0.95)"
