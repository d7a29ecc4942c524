#!/bin/sh
# Everything a fresh Debian 12 machine needs before moescope builds:
# installs the missing build dependencies with apt-get, then configures
# and builds in build/ (or $BUILD_DIR). Extra configure flags come from
# $CONFIGURE_FLAGS (CI passes --enable-werror), compiler flags from $CFLAGS.
set -eu
cd "$(dirname "$0")/.."

pkgs="gcc make autoconf automake libtool pkg-config libncurses-dev libopenblas-dev libcjson-dev libreadline-dev libpcre2-dev libutf8proc-dev tmux python3 jq"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >&2
fi

[ -x configure ] && [ configure -nt configure.ac ] && [ configure -nt Makefile.am ] || autoreconf -fi >&2
build=${BUILD_DIR:-build}
mkdir -p "$build"
cd "$build"
flags=${CONFIGURE_FLAGS:-}
stamp="$flags CFLAGS=${CFLAGS:-}"
# Reconfigure when the flags change, so a CI build never reuses a lax one.
if [ ! -f Makefile ] || [ "$(cat .configure-flags 2>/dev/null)" != "$stamp" ]; then
    # shellcheck disable=SC2086
    ../configure -q $flags >&2
    echo "$stamp" >.configure-flags
fi
make -s -j"$(nproc)" >&2
