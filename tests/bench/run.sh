#!/bin/sh
# Prompt processing and generation speed on the random-weight bench models,
# in llama-bench's table: the Mixtral-shaped f16 model (0.49 B parameters:
# dim 1024, 8 layers, 8 experts top-2, width 2048, vocab 32000) and the
# OLMoE-shaped one (0.94 B: dim 1024, 8 layers, 64 experts top-8, width 512,
# vocab 50304). Each is built once into tests/bench/models/ (1 and 1.9 GB;
# needs python3-numpy). Medians of 5 runs at 2 threads.
#   tests/bench/run.sh [mixtral|olmoe]... [-- extra moescope bench flags]
set -eu
cd "$(dirname "$0")/../.."
models=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    models="$models $1"
    shift
done
[ "${1:-}" = "--" ] && shift
[ -n "$models" ] || models="mixtral olmoe"
[ -x build/moescope ] || tools/setup.sh
# Debian's python3 (a python3 earlier on PATH may lack numpy)
py=/usr/bin/python3
[ -x "$py" ] || py=python3
for m in $models; do
    dir=tests/bench/models/$m-bench-f16
    if [ ! -f "$dir/config.json" ]; then
        if ! "$py" -c 'import numpy' 2>/dev/null; then
            echo "bench: installing python3-numpy to build the bench model" >&2
            sudo=""
            [ "$(id -u)" = 0 ] || sudo=sudo
            $sudo apt-get install -y -qq python3-numpy >&2
        fi
        case $m in
        mixtral) "$py" tools/gen_fixtures.py --bench "$dir" ;;
        olmoe) "$py" tools/gen_fixtures.py --bench-olmoe "$dir" ;;
        *) echo "bench: unknown model '$m' (mixtral, olmoe)" >&2; exit 2 ;;
        esac
    fi
    build/moescope inspect "$dir" | grep -E 'architecture|parameters|active|read per token'
    build/moescope bench "$dir" -p 128 -n 64 -t 2 -r 5 "$@"
    echo
done
