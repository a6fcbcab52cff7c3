#!/usr/bin/env bash
# Runs every crash scenario of the pseries image under QEMU (each under `timeout`) and checks the
# console output. Exits non-zero if any check fails.
#
#   ppc64/pseries/test.sh [--no-build | --build-only] [--timeout SECS]
#
# Fixed design (default, freeze-in-log, rtas-held, rtas-in-call, deaf, deaf-logging; 4 CPUs, plus default on 8 CPUs
# and freeze-in-log on 2): QEMU powers off with status 0; the capture stage's last line is
# "capture: recovered=N torn=T dropped=0 cpus=C mask=PATH ok" with the scenario's T and PATH; every CPU
# has contiguous task and interrupt records, every stopped CPU its NMI "stopped" record, the crashing
# CPU "IPI complete" and "kexec: Starting switchover sequence." in crash context; the record the frozen
# CPU was writing is absent and counted torn (other CPUs the NMI happened to stop mid-write may add
# torn records: each must be explained by its CPU's "stopped" record); a deaf CPU has no "stopped" record and the crashing CPU
# logged that it did not answer (after the bounded wait).
# Locked baseline: the crash path deadlocks; the watchdog names the lock and its holder and prints
# "capture: deadlock ...". `baseline` always hangs on logbuf_lock (CPU 2 frozen holding it),
# `baseline-rtas` always on the RTAS lock (CPU 3; every CPU logs lock-free there), `baseline-race` on
# whichever it meets first (every CPU logs under logbuf_lock while CPU 3 holds the RTAS lock).
set -uo pipefail
cd "$(dirname "$0")"

build=1
secs=60
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0; shift ;;
        --build-only) build=2; shift ;;
        --timeout) secs="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "test.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ "$build" != 0 ]; then
    env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_TARGET -u CARGO_BUILD_RUSTFLAGS \
        cargo build --release --quiet --target-dir target || exit 1
fi
[ "$build" = 2 ] && exit 0

failures=0
fail() { echo "  FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "  ok: $*"; }
has() { grep -qE -- "$1" "$log"; }

# run NAME CPUS SCENARIO: boots one scenario; sets $log and $rc.
run() {
    local name=$1 cpus=$2 scen=$3
    log=target/test-$name.log
    echo "== $name (--cpus $cpus --scenario $scen)"
    scen_failures=$failures
    local t0=$(date +%s%N)
    timeout $((secs + 10)) ./run.sh --no-build --cpus "$cpus" --scenario "$scen" --timeout "$secs" >"$log" 2>&1
    rc=$?
    echo "  run.sh exit $rc after $(( ($(date +%s%N) - t0) / 1000000 )) ms; console in ppc64/pseries/$log"
}

# report: after a scenario's checks, shows the end of its console output if any check failed (so a
# CI log cut to its tail still says what the machine printed).
report() {
    if [ "$failures" != "$scen_failures" ]; then
        echo "  ---- the last 40 console lines of ppc64/pseries/$log:"
        tail -40 "$log" | sed 's/^/  | /'
    fi
}

# check_fixed CPUS TORN MASK FROZEN_CPU(or -) [DEAF_CPU]
check_fixed() {
    local cpus=$1 torn=$2 mask=$3 frozen=$4 deaf=${5:--} missing=0
    [ "$deaf" != - ] && missing=1
    [ "$rc" = 0 ] && pass "booted, crashed, captured, powered off (exit 0)" || fail "run.sh exit $rc"
    local last
    last=$(grep -E '^capture: recovered=' "$log" | tail -1)
    if [[ "$last" =~ ^capture:\ recovered=([0-9]+)\ torn=([0-9]+)\ dropped=([0-9]+)\ cpus=([0-9]+)\ mask=([a-z-]+)\ ok$ ]]; then
        local n=${BASH_REMATCH[1]} t=${BASH_REMATCH[2]} d=${BASH_REMATCH[3]} c=${BASH_REMATCH[4]} m=${BASH_REMATCH[5]}
        # The scenario's frozen writer gives `torn`; the NMI may also stop other CPUs mid-write
        # (each explained by the capture stage, checked below).
        [ "$t" -ge "$torn" ] && pass "torn=$t (scenario: $torn)" || fail "torn=$t, expected at least $torn"
        local listed
        listed=$(grep -cE '^capture: C[0-9]+: [0-9]+ torn record\(s\) at depth [0-9]+ \([a-z]+\), explained: the NMI stopped this CPU mid-write$' "$log")
        [ "$listed" = "$t" ] && pass "every torn record explained by an NMI stop ($listed)" || fail "$listed explained torn record lines for torn=$t"
        ! has 'UNEXPLAINED' || fail "an unexplained torn record"
        if [ "${drops_ok:-0}" = 1 ]; then
            pass "dropped=$d (records the CPU that never stopped overwrote in its ring, each counted)"
        else
            [ "$d" = 0 ] && pass "dropped=0" || fail "dropped=$d, expected 0"
        fi
        [ "$c" = "$cpus" ] && pass "cpus=$c" || fail "cpus=$c, expected $cpus"
        [ "$m" = "$mask" ] && pass "mask=$m" || fail "mask=$m, expected $mask"
        [ "$n" -gt $((cpus * 10)) ] && pass "recovered=$n" || fail "recovered=$n: too few"
    else
        fail "no 'capture: recovered=... ok' line (got: ${last:-nothing})"
    fi
    [ "$(tail -2 "$log" | head -1)" = "$last" ] && pass "the verdict is the capture stage's last line" || fail "the verdict is not the last console line"
    for ((c = 0; c < cpus; c++)); do
        local line
        line=$(grep -E "^capture: C$c: task" "$log")
        if [[ "$line" =~ task\ n=0\.\.[0-9]+\ \([0-9]+,\ contiguous\)\ \|\ irq\ n=[0-9]+\.\.[0-9]+\ \([0-9]+,\ contiguous\) ]]; then
            pass "C$c: task and irq records, contiguous"
        elif [ "$c" = "$deaf" ] && [[ "$line" =~ task\ n=0\.\.[0-9]+\ \([0-9]+,\ (contiguous|gaps)\)\ \|\ irq\ n=[0-9]+\.\.[0-9]+\ \([0-9]+,\ (contiguous|gaps)\) ]] \
            && [[ "$line" != *FAILED* ]]; then
            # A CPU that never stopped keeps logging into its ring after the crash: its oldest
            # unmerged records may be overwritten (the capture stage checked each one is counted).
            pass "C$c: task and irq records, in order, every gap counted as overwritten"
        else
            fail "C$c: task/irq records missing or not contiguous: $line"
        fi
        if [ "$c" = 0 ]; then
            [[ "$line" == *"contexts task irq crash"* ]] && pass "C0: task, irq and crash contexts" || fail "C0 contexts: $line"
        elif [ "$c" = "$deaf" ]; then
            [[ "$line" == *"did not answer the NMI (no stopped record)"* ]] && pass "C$c: did not answer, no stopped record" || fail "C$c: $line"
            has "C0/crash crash: CPU $c did not answer the NMI IPI within [0-9]+ ms\$" && pass "C0 logged that CPU $c did not answer" || fail "no 'did not answer' record for CPU $c"
            has "^capture: C$c: did not stop \(not checked in when the image was written\): [0-9]+ log call\(s\) in flight then, 0 torn" && pass "capture: C$c named as not stopped" || fail "capture did not name CPU $c as not stopped"
        else
            [[ "$line" == *"stopped (NMI record)"*"contexts task irq nmi"* ]] && pass "C$c: stopped in NMI context" || fail "C$c: $line"
            has "^\[ *[0-9]+\.[0-9]{6}\] C$c/nmi CPU $c stopped \(NMI in " || fail "C$c: no 'CPU $c stopped' line in the dmesg"
        fi
    done
    has '^\[ *[0-9]+\.[0-9]{6}\] C0/crash IPI complete$' && pass "C0/crash IPI complete" || fail "no 'IPI complete' from C0 in crash context"
    has '^\[ *[0-9]+\.[0-9]{6}\] C0/crash kexec: Starting switchover sequence\.$' && pass "C0/crash kexec: Starting switchover sequence." || fail "no switchover line"
    has "\[mask_path=$mask\]$" && pass "mask path logged by the sequence" || fail "no [mask_path=$mask] record"
    has "timestamps ordered, IPI complete yes, switchover yes, corruption none, mask path agrees \\(sequence report: [a-z-]+, $missing CPUs did not answer\\)" && pass "capture checks: timestamps ordered, no corruption, mask path agrees with the sequence's report, $missing CPU(s) did not answer" || fail "capture checks"
    if [ "$frozen" != - ]; then
        local n
        n=$(sed -nE "s/.*CPU $frozen parked mid-write of \"cpu=$frozen n=([0-9]+)\".*/\1/p" "$log")
        if [ -n "$n" ]; then
            ! has "C$frozen cpu=$frozen n=$n\$" && pass "C$frozen: in-flight record n=$n not delivered" || fail "C$frozen: in-flight record n=$n delivered"
            has "^capture: C$frozen: task n=0\.\.$((n - 1)) " && pass "C$frozen: task records end at n=$((n - 1))" || fail "C$frozen: task records do not end at n=$((n - 1))"
            has "^capture: C$frozen: 1 torn record\(s\) at depth 0 \(task\), explained" && pass "C$frozen: torn task record reported" || fail "C$frozen: torn record not reported"
        else
            fail "no 'CPU $frozen parked mid-write' line"
        fi
    fi
}

# check_deadlock_either: baseline-race hangs on logbuf_lock (held by whichever CPU the NMI stopped
# inside printk: 1 or 2) or, if no CPU was inside printk, on the RTAS lock (CPU 3).
check_deadlock_either() {
    local line lock holder
    line=$(grep -E '^capture: deadlock lock=' "$log" | tail -1)
    if [[ "$line" =~ ^capture:\ deadlock\ lock=(logbuf_lock|rtas_lock)\ holder=([0-9]+)$ ]]; then
        lock=${BASH_REMATCH[1]} holder=${BASH_REMATCH[2]}
        echo "  (the race went to $lock, held by CPU $holder)"
        if [ "$lock" = rtas_lock ]; then
            [ "$holder" = 3 ] && pass "rtas_lock held by CPU 3" || fail "rtas_lock held by CPU $holder, expected 3"
        else
            [ "$holder" = 1 ] || [ "$holder" = 2 ] && pass "logbuf_lock held by CPU $holder (stopped inside printk)" || fail "logbuf_lock held by CPU $holder, expected 1 or 2"
        fi
        check_deadlock "$lock" "$holder"
    else
        fail "no 'capture: deadlock lock=... holder=N' line (got: ${line:-nothing})"
    fi
}

# check_deadlock LOCK HOLDER
check_deadlock() {
    local lock=$1 holder=$2
    [ "$rc" = 0 ] && pass "watchdog powered off (exit 0)" || fail "run.sh exit $rc"
    has "^watchdog: CPU 0 stuck for [0-9]+ ms in the crash path" && pass "watchdog fired on the crashing CPU" || fail "no watchdog report"
    has "^watchdog: deadlock: $lock is held by CPU $holder, which the NMI IPI stopped" && pass "names $lock and CPU $holder" || fail "lock/holder not named"
    has "^capture: deadlock lock=$lock holder=$holder\$" && pass "capture: deadlock lock=$lock holder=$holder" || fail "no 'capture: deadlock' line"
    ! has '^capture: recovered=' && pass "no capture stage ran" || fail "the capture stage ran"
}

run default 4 default;             check_fixed 4 1 rtas-takeover 2; report
run freeze-in-log 4 freeze-in-log; check_fixed 4 1 rtas 2; report
run rtas-held 4 rtas-held;         check_fixed 4 0 rtas-takeover -; report
run rtas-in-call 4 rtas-in-call;   check_fixed 4 0 presenter -; report
run deaf 4 deaf;                   check_fixed 4 0 rtas - 1; report
run deaf-logging 4 deaf-logging;   drops_ok=1 check_fixed 4 1 rtas 2 1; report
deaf_after=$(grep -cE '^\[ *[0-9]+\.[0-9]{6}\] C1 cpu=1 n=' "$log")
last_c1=$(grep -E '^\[ *[0-9]+\.[0-9]{6}\] C1 cpu=1 n=' "$log" | tail -1 | sed -E 's/.*\[ *([0-9]+\.[0-9]{6})\].*/\1/')
ipi_at=$(grep -E 'C0/crash IPI complete$' "$log" | sed -E 's/.*\[ *([0-9]+\.[0-9]{6})\].*/\1/')
if [ -n "$last_c1" ] && [ -n "$ipi_at" ] && awk "BEGIN{exit !($last_c1 > $ipi_at)}"; then
    pass "deaf-logging: CPU 1 kept logging after IPI complete ($deaf_after task records recovered, the last at $last_c1 s)"
else
    fail "deaf-logging: no CPU 1 record after IPI complete (last $last_c1, IPI complete $ipi_at)"
fi
run default-8cpu 8 default;        check_fixed 8 1 rtas-takeover 2; report
run freeze-in-log-2cpu 2 freeze-in-log; check_fixed 2 1 rtas 1; report
run baseline 4 baseline;           check_deadlock logbuf_lock 2; report
run baseline-rtas 4 baseline-rtas; check_deadlock rtas_lock 3; report
run baseline-race 4 baseline-race; check_deadlock_either; report

if [ "$failures" = 0 ]; then
    echo "test.sh: all scenarios passed"
else
    echo "test.sh: $failures check(s) FAILED"
    exit 1
fi
