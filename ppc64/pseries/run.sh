#!/usr/bin/env bash
# Build the bare-metal pseries kernel and its capture stage, and boot a crash scenario under QEMU.
#
#   ppc64/pseries/run.sh [--cpus N] [--scenario S] [--timeout SECS] [--slof] [--no-build] [-- extra qemu args]
#
# Scenarios: default (CPU 2 frozen mid-log-write + CPU 3 frozen holding the RTAS lock), freeze-in-log,
# rtas-held, rtas-in-call, deaf, baseline (the 2020 locked design: must deadlock), baseline-rtas, baseline-race.
# Exits 0 if QEMU exited 0 (RTAS power-off) and the capture stage printed its verdict: for the fixed
# design "capture: recovered=... ok", for the baselines "capture: deadlock ...".
# The console output is kept in target/pseries-<scenario>.log.
# Needs: qemu-system-ppc64 (Debian: apt-get install -y --no-install-recommends qemu-system-ppc) and the
# Rust target powerpc64le-unknown-linux-gnu (installed here through rustup if missing).
set -euo pipefail

cd "$(dirname "$0")"
cpus=4
secs=60
firmware=vof
build=1
scenario=default
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --cpus) cpus="$2"; shift 2 ;;
        --cpus=*) cpus="${1#*=}"; shift ;;
        --scenario) scenario="$2"; shift 2 ;;
        --scenario=*) scenario="${1#*=}"; shift ;;
        --timeout) secs="$2"; shift 2 ;;
        --slof) firmware=slof; shift ;;
        --no-build) build=0; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

target=powerpc64le-unknown-linux-gnu
elf=target/$target/release/nmilog-pseries
capture=target/$target/release/nmilog-capture
# Where QEMU stages the raw capture ELF (STAGING_BASE in src/bootparams.rs); the kernel loads it into
# the reserved crash region at boot, as kexec -p does.
staging=0x9800000

if ! command -v qemu-system-ppc64 >/dev/null; then
    echo "run.sh: qemu-system-ppc64 not found; install it with:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends qemu-system-ppc" >&2
    exit 2
fi

if [ "$build" = 1 ]; then
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
        rustup target add "$target"
    fi
    # The image needs exactly the flags and target of .cargo/config.toml, in ./target (where the
    # paths below look), whatever the environment says.
    env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_TARGET -u CARGO_BUILD_RUSTFLAGS \
        cargo build --release --quiet --target-dir target
fi

machine=pseries
[ "$firmware" = vof ] && machine=pseries,x-vof=on

mkdir -p target
log=target/pseries-$scenario.log
start=$(date +%s%N)
set +e
timeout "$secs" qemu-system-ppc64 \
    -M "$machine" -nodefaults -serial stdio -display none \
    -smp "$cpus" -accel tcg,thread=multi -m 512M \
    -kernel "$elf" -append "scenario=$scenario" \
    -device "loader,file=$capture,addr=$staging,force-raw=on" \
    "${extra[@]}" </dev/null 2> >(grep -v "TCG doesn't support requested feature" >&2) | tee "$log"
rc=${PIPESTATUS[0]}
set -e
end=$(date +%s%N)
echo "run.sh: qemu exit status $rc after $(( (end - start) / 1000000 )) ms (-smp $cpus, scenario $scenario, firmware $firmware)" >&2

if [ "$rc" = 124 ]; then
    echo "run.sh: FAILED: timed out after ${secs}s" >&2
    exit 1
fi
case "$scenario" in
    baseline*) want='^capture: deadlock ' ;;
    *) want='^capture: recovered=.* ok$' ;;
esac
if [ "$rc" != 0 ] || ! grep -q "$want" "$log"; then
    echo "run.sh: FAILED (wanted a line matching '$want')" >&2
    exit 1
fi
