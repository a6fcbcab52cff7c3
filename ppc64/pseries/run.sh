#!/usr/bin/env bash
# Build the bare-metal pseries image and boot it under QEMU.
#
#   ppc64/pseries/run.sh [--cpus N] [--timeout SECS] [--slof] [--no-build] [-- extra qemu args]
#
# Exits 0 only if QEMU exited 0 (RTAS power-off) and the console shows "pseries: demo ok".
# The console output is also kept in target/pseries-console.log.
# Needs: qemu-system-ppc64 (Debian: apt-get install -y --no-install-recommends qemu-system-ppc) and the
# Rust target powerpc64le-unknown-linux-gnu (installed here through rustup if missing).
set -euo pipefail

cd "$(dirname "$0")"
cpus=4
secs=60
firmware=vof
build=1
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --cpus) cpus="$2"; shift 2 ;;
        --cpus=*) cpus="${1#*=}"; shift ;;
        --timeout) secs="$2"; shift 2 ;;
        --slof) firmware=slof; shift ;;
        --no-build) build=0; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

target=powerpc64le-unknown-linux-gnu
elf=target/$target/release/nmilog-pseries

if ! command -v qemu-system-ppc64 >/dev/null; then
    echo "run.sh: qemu-system-ppc64 not found; install it with:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends qemu-system-ppc" >&2
    exit 2
fi

if [ "$build" = 1 ]; then
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
        rustup target add "$target"
    fi
    cargo build --release --quiet
fi

machine=pseries
[ "$firmware" = vof ] && machine=pseries,x-vof=on

log=target/pseries-console.log
start=$(date +%s%N)
set +e
timeout "$secs" qemu-system-ppc64 \
    -M "$machine" -nodefaults -serial stdio -display none \
    -smp "$cpus" -accel tcg,thread=multi -m 512M \
    -kernel "$elf" "${extra[@]}" </dev/null 2> >(grep -v "TCG doesn't support requested feature" >&2) | tee "$log"
rc=${PIPESTATUS[0]}
set -e
end=$(date +%s%N)
echo "run.sh: qemu exit status $rc after $(( (end - start) / 1000000 )) ms (-smp $cpus, firmware $firmware)" >&2

if [ "$rc" = 124 ]; then
    echo "run.sh: FAILED: timed out after ${secs}s" >&2
    exit 1
fi
if [ "$rc" != 0 ] || ! grep -q '^pseries: demo ok' "$log"; then
    echo "run.sh: FAILED" >&2
    exit 1
fi
