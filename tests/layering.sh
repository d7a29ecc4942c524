#!/bin/sh
# The engine stays free of the terminal: no curses or readline in src/ or
# the engine's public headers, tests link without them, and the library
# never prints or exits.
. "${top_srcdir:-.}/tests/tap.sh"
src=${top_srcdir:-.}
bld=${top_builddir:-.}

hits=$(grep -lE '#[[:space:]]*include[[:space:]]*[<"](n?curses|readline|term)' "$src"/src/*.[ch] "$src"/include/moescope/*.h 2>/dev/null)
tap_ok "$([ -z "$hits" ] && echo 0 || echo 1)" "src/ and include/ include no curses or readline${hits:+: $hits}"

for t in test_model test_safetensors test_kernels; do
    bin="$bld/tests/$t"
    if [ ! -x "$bin" ]; then
        tap_ok 1 "$t was built"
        continue
    fi
    libs=$(ldd "$bin" 2>/dev/null | grep -E 'ncurses|tinfo|readline')
    tap_ok "$([ -z "$libs" ] && echo 0 || echo 1)" "$t links without curses or readline${libs:+: $libs}"
done

lib="$bld/src/libmoescope.a"
bad=$(nm -u "$lib" 2>/dev/null | awk '{print $NF}' | grep -E '^(printf|puts|putchar|fputs|fputc|fprintf|vfprintf|vprintf|perror|exit|_exit|abort|initscr|readline)$' | sort -u | tr '\n' ' ')
tap_ok "$([ -s "$lib" ] && [ -z "$bad" ] && echo 0 || echo 1)" "the engine library never prints or exits${bad:+ (uses $bad)}"

# every engine-private header, by the names src/ gives them
private=$(cd "$src/src" && ls *.h | sed 's/\.h$//' | paste -sd '|')
ui_bad=$(grep -lE "include[[:space:]]*\"(\.\./)*src/|include[[:space:]]*\"(\.\./)*($private)\.h\"" \
    "$src"/ui/*.[ch] "$src"/ui/*/*.[ch] 2>/dev/null)
tap_ok "$([ -z "$ui_bad" ] && echo 0 || echo 1)" "ui/ uses only the public headers${ui_bad:+: $ui_bad}"
tap_done
