# TAP helpers for the shell tests (sourced).
tap_n=0
tap_failed=0
# tap_ok STATUS DESCRIPTION: STATUS 0 passes.
tap_ok() {
    tap_n=$((tap_n + 1))
    if [ "$1" = 0 ]; then
        echo "ok $tap_n - $2"
    else
        echo "not ok $tap_n - $2"
        tap_failed=$((tap_failed + 1))
    fi
}
tap_skip() {
    tap_n=$((tap_n + 1))
    echo "ok $tap_n # SKIP $1"
}
tap_diag() {
    printf '%s\n' "$@" | sed 's/^/# /'
}
tap_eq() { # DESCRIPTION WANT GOT: ok when the two strings are equal, both shown when not
    tap_ok "$([ "$2" = "$3" ] && echo 0 || echo 1)" "$1"
    [ "$2" = "$3" ] || tap_diag "want: $2" "got:  $3"
}
tap_done() {
    echo "1..$tap_n"
    [ "$tap_failed" = 0 ]
}
