#!/bin/sh
# An exported transcript page in headless Chromium, used as a person would
# (tools/htmlcheck/check.mjs): it renders, tokens are coloured by expert,
# hovering a token shows its routing in every layer, and it makes no
# network request. Needs Debian's chromium and node; the driver
# (playwright-core) comes from npm. Skips, saying why, when they are absent.
. "${top_srcdir:-.}/tests/tap.sh"
src=${top_srcdir:-.}
bld=${top_builddir:-.}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -x /usr/bin/chromium ] || ! command -v node >/dev/null 2>&1; then
    tap_skip "chromium or node is not installed (apt-get install chromium nodejs): the HTML page is not checked in a browser"
    tap_done
    exit 0
fi
drv="$src/tools/htmlcheck"
if [ ! -d "$drv/node_modules/playwright-core" ]; then
    (cd "$drv" && npm ci --no-audit --no-fund >/dev/null 2>&1) || {
        tap_skip "npm could not install playwright-core in tools/htmlcheck: the HTML page is not checked in a browser"
        tap_done
        exit 0
    }
fi
"$bld/moescope" run "$src/tests/fixtures/models/mixtral-tiny" -p "The licence is free software." -n 12 --temp 0 \
    --expert-off L1:3 --save "$tmp/t.json" >/dev/null 2>&1
"$bld/moescope" export "$tmp/t.json" --html "$tmp/t.html" >/dev/null 2>&1
tap_ok $? "export --html writes the page"
out=$(cd "$drv" && node check.mjs "$tmp/t.html" 3 2>&1)
rc=$?
# renumber the driver's TAP lines into this script's
echo "$out" | grep -E '^(not )?ok ' | sed 's/^\(not \)\{0,1\}ok [0-9]* - //' >"$tmp/descr"
echo "$out" | grep -E '^(not )?ok ' | cut -c1-4 >"$tmp/state"
if [ ! -s "$tmp/descr" ]; then
    tap_ok 1 "the browser check ran ($(echo "$out" | tail -n 3 | tr '\n' ' '))"
else
    paste -d'|' "$tmp/state" "$tmp/descr" | while IFS='|' read -r st d; do
        case $st in not*) echo "not ok - $d" ;; *) echo "ok - $d" ;; esac
    done >"$tmp/lines"
    while read -r line; do
        case $line in "not ok"*) tap_ok 1 "${line#not ok - }" ;; *) tap_ok 0 "${line#ok - }" ;; esac
    done <"$tmp/lines"
fi
[ -n "${SCREENSHOT_DIR:-}" ] && cp "$tmp"/t*.png "$SCREENSHOT_DIR"/ 2>/dev/null
[ "$rc" = 0 ] || tap_diag "$out"
tap_done
