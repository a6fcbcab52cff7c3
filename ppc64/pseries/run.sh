#!/usr/bin/env bash
# Build the bare-metal pseries kernel and its capture stage, and boot a crash scenario under QEMU.
#
#   ppc64/pseries/run.sh [--cpus N] [--maxcpus M] [--scenario S] [--die POINT] [--dump-memory FILE] [--timeout SECS]
#                        [--ic-mode xics|xive] [--slof] [--no-build] [-- extra qemu args]
#
# --ic-mode xive: the POWER9/10 interrupt controller (QEMU's default for pseries-7.2 is dual mode; the
# kernel then keeps XICS): the kernel negotiates XIVE exploitation through CAS and uses H_INT_* and
# the TIMA. --ic-mode xics: XICS only.
# --maxcpus M: M CPU slots, N of them plugged (`-smp N,maxcpus=M`): CPUs N..M-1 are offline.
# Scenarios: default (CPU 2 frozen mid-log-write + CPU 3 frozen holding the RTAS lock), freeze-in-log,
# rtas-held, rtas-in-call, deaf, deaf-logging, die-in-drain (the crashing CPU dies at --die POINT of
# its crash path; the capture stage rebuilds the log from memory), baseline (the 2020 locked design:
# must deadlock), baseline-rtas, baseline-race.
# --dump-memory FILE: once the capture stage has powered the guest off (QEMU runs with -no-shutdown and
# QMP on two FIFOs), QEMU writes all guest RAM to FILE (QMP `pmemsave` from 0, all of RAM) and quits.
# Exits 0 if QEMU exited 0 (RTAS power-off) and the capture stage printed its verdict: for the fixed
# design "capture: recovered=... ok", for the baselines "capture: deadlock ..."; with --dump-memory,
# also only if FILE holds all of RAM.
# The console output is kept in target/pseries-<scenario>[-<die>].log.
# Needs: qemu-system-ppc64 (Debian: apt-get install -y --no-install-recommends qemu-system-ppc) and the
# Rust target powerpc64le-unknown-linux-gnu (installed here through rustup if missing).
set -euo pipefail

cd "$(dirname "$0")"
cpus=4
maxcpus=
secs=60
firmware=vof
build=1
scenario=default
die=
dump=
icmode=
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --cpus) cpus="$2"; shift 2 ;;
        --cpus=*) cpus="${1#*=}"; shift ;;
        --maxcpus) maxcpus="$2"; shift 2 ;;
        --maxcpus=*) maxcpus="${1#*=}"; shift ;;
        --scenario) scenario="$2"; shift 2 ;;
        --scenario=*) scenario="${1#*=}"; shift ;;
        --die) die="$2"; shift 2 ;;
        --die=*) die="${1#*=}"; shift ;;
        --dump-memory) dump="$2"; shift 2 ;;
        --dump-memory=*) dump="${1#*=}"; shift ;;
        --timeout) secs="$2"; shift 2 ;;
        --ic-mode) icmode="$2"; shift 2 ;;
        --ic-mode=*) icmode="${1#*=}"; shift ;;
        --slof) firmware=slof; shift ;;
        --no-build) build=0; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

target=powerpc64le-unknown-linux-gnu
elf=target/$target/release/nmilog-pseries
capture=target/$target/release/nmilog-capture
# Where QEMU stages the raw capture ELF (STAGING_BASE in src/bootparams.rs); the kernel loads it into
# the reserved crash region at boot, as kexec -p does.
staging=0xB000000

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
[ -n "$icmode" ] && machine="$machine,ic-mode=$icmode"

mkdir -p target
log=target/pseries-$scenario${die:+-$die}.log
append="scenario=$scenario${die:+ die=$die}"
ram_mib=512
: >"$log"

# --dump-memory: QEMU keeps the machine after the guest powers off (-no-shutdown) and serves QMP on
# two FIFOs (MON.in: commands, MON.out: replies; opened read-write here, which never blocks). In the
# background: wait for the capture stage's verdict on the console, then until QMP reports the guest
# shut down, then `pmemsave` all of RAM and `quit`. Every wait is bounded ($secs; 5 s per reply).
dumper=
if [ -n "$dump" ]; then
    mon=target/qemu-qmp-$$
    rm -f "$mon.in" "$mon.out" "$dump"
    mkfifo "$mon.in" "$mon.out"
    extra=(-no-shutdown -chardev "pipe,id=qmp0,path=$mon" -mon chardev=qmp0,mode=control "${extra[@]}")
    dump_abs=$(realpath -m "$dump")
    dump_memory() {
        local deadline=$((SECONDS + secs)) reply=
        exec 3<>"$mon.in" 4<>"$mon.out"
        # qmp JSON: sends one command, reads until its reply (events and the greeting are skipped).
        qmp() {
            printf '%s\n' "$1" >&3
            while read -t 5 -r reply <&4; do
                [[ "$reply" == *'"return"'* || "$reply" == *'"error"'* ]] && return 0
            done
            echo "run.sh: QMP: no reply to $1" >&2
            return 1
        }
        qmp '{"execute":"qmp_capabilities"}' || return 1
        until grep -qE '^capture: (recovered=|FAILED|none|deadlock)' "$log"; do
            [ "$SECONDS" -lt "$deadline" ] || return 1
            sleep 0.1
        done
        until [[ "$reply" == *'"status": "shutdown"'* ]]; do
            [ "$SECONDS" -lt "$deadline" ] || return 1
            qmp '{"execute":"query-status"}' || return 1
            [[ "$reply" == *'"status": "shutdown"'* ]] || sleep 0.1
        done
        qmp "{\"execute\":\"pmemsave\",\"arguments\":{\"val\":0,\"size\":$((ram_mib << 20)),\"filename\":\"$dump_abs\"}}"
        echo "run.sh: guest shut down; QMP pmemsave 0 $((ram_mib << 20)) $dump: $reply" >&2
        qmp '{"execute":"quit"}'
    }
    dump_memory &
    dumper=$!
fi

start=$(date +%s%N)
set +e
timeout "$secs" qemu-system-ppc64 \
    -M "$machine" -nodefaults -serial stdio -display none \
    -smp "$cpus${maxcpus:+,maxcpus=$maxcpus}" -accel tcg,thread=multi -m ${ram_mib}M \
    -kernel "$elf" -append "$append" \
    -device "loader,file=$capture,addr=$staging,force-raw=on" \
    "${extra[@]}" </dev/null 2> >(grep -v "TCG doesn't support requested feature" >&2) | tee "$log"
rc=${PIPESTATUS[0]}
set -e
end=$(date +%s%N)
echo "run.sh: qemu exit status $rc after $(( (end - start) / 1000000 )) ms (-smp $cpus${maxcpus:+,maxcpus=$maxcpus}, $append, firmware $firmware${icmode:+, ic-mode $icmode})" >&2
if [ -n "$dumper" ]; then
    kill "$dumper" 2>/dev/null || true
    wait "$dumper" 2>/dev/null || true
    rm -f "$mon.in" "$mon.out"
    size=$(stat -c %s "$dump" 2>/dev/null || echo 0)
    if [ "$size" != $((ram_mib << 20)) ]; then
        echo "run.sh: FAILED: no memory dump in $dump ($size bytes, wanted $((ram_mib << 20)))" >&2
        exit 1
    fi
    echo "run.sh: guest memory [0, $((ram_mib << 20))) in $dump" >&2
fi

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
