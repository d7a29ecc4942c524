#!/bin/sh
# Generation and prompt-processing speed on the Mixtral-shaped f16 bench
# model (0.49 B parameters), in llama-bench's table. Builds the model once
# into tests/bench/models/ (about 1 GB, needs python3-numpy).
#   tests/bench/run.sh [extra moescope bench flags]
set -eu
cd "$(dirname "$0")/../.."
model=tests/bench/models/mixtral-bench-f16
if [ ! -f "$model/config.json" ]; then
    # Debian's python3 (a python3 earlier on PATH may lack numpy)
    py=/usr/bin/python3
    [ -x "$py" ] || py=python3
    if ! "$py" -c 'import numpy' 2>/dev/null; then
        echo "bench: installing python3-numpy to build the bench model" >&2
        sudo=""
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get install -y -qq python3-numpy >&2
    fi
    "$py" tools/gen_fixtures.py --bench "$model"
fi
[ -x build/moescope ] || tools/setup.sh
build/moescope inspect "$model"
echo
build/moescope bench "$model" -p 128 -n 64 -t 2 -r 5 "$@"
