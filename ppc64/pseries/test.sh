#!/usr/bin/env bash
# Runs every crash scenario of the pseries image under QEMU (each under `timeout`) and checks the
# console output. Exits non-zero if any check fails.
#
#   ppc64/pseries/test.sh [--no-build | --build-only] [--timeout SECS]
#
# Fixed design (default, freeze-in-log, rtas-held, rtas-in-call, deaf, deaf-logging, hard-lockup,
# machine-check; default, rtas-in-call and hard-lockup again on XIVE (`--ic-mode xive`); 4 CPUs,
# plus default on 8, 16 and 64 CPUs (one image: the CPU count from the device tree, the rings sized
# for it at boot; at 64 the rings lap and every lost record must be counted), freeze-in-log on 2, and freeze-in-log on 3 of 4 CPU slots (`--maxcpus 4`: CPU 3
# offline)): the flight recorder's timeline runs from "entered" to "switchover" in order, every CPU's
# outcome (answered the crash IPI / the escalation's system reset / never / offline) is the expected one; QEMU powers off with status 0; the capture stage's last line is
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
# Death mid-crash-path (`die-in-drain`, 4 CPUs, CPU 2 frozen mid-log-write): the crashing CPU dies at a
# point of its crash path (a system reset on itself); the firmware stand-in stops the other CPUs and
# enters the capture stage with memory only, which finds the log descriptor by scanning RAM (timed),
# rebuilds the image and checks it with the one verifier: "capture: recovered=N torn=T dropped=0
# cpus=4 mask=rtas|none from=memory die=POINT ok"; every CPU's records contiguous, every torn record
# explained, CPUs that never checked in named with their calls in flight, CPU 2's write torn or in
# flight, and exactly the crash path's messages logged before POINT (the breadcrumbs in the firmware's
# line must name POINT). The 16 points cover every step the crashing CPU can die at: each of the 7
# `CrashStage` hooks (entered, ipi-sent, checkins-done, masked, drained, image-start, image-written),
# and inside the two drains, which are loops whose every iteration does the same thing, the first, a
# middle and the last record of the first drain (drain:0, drain:60, drain:last) and the first and last
# record of both image passes (image-sized:0|last, image-copy:0|last), then the image writer's two
# remaining steps (image-tables, image-header). `last` also checks that the death was at the last
# record the pass delivers. At drain:60 QEMU also writes guest RAM to a file after the capture stage
# (`run.sh --dump-memory`), and `dmesg --from-memory FILE --base 0 --json` must print the same records
# as the capture stage (skipped, with a note, while examples/dmesg.rs has no --from-memory). Each
# death point's boot takes ~1-3 s (mostly the RAM scan): ~30-45 s in all.
set -uo pipefail
cd "$(dirname "$0")"

build=1
secs=60
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0; shift ;;
        --build-only) build=2; shift ;;
        --timeout) secs="$2"; shift 2 ;;
        -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
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
# want REGEX WHAT: some line of the output matches REGEX (passes WHAT, else fails "missing: WHAT");
# want_no REGEX WHAT: no line does.
want() { if has "$1"; then pass "$2"; else fail "missing: $2"; fi; }
want_no() { if has "$1"; then fail "unexpected: $2"; else pass "$2"; fi; }

# run NAME CPUS SCENARIO [run.sh options]: boots one scenario; sets $log, $rc and $run_ms.
run() {
    local name=$1 cpus=$2 scen=$3
    shift 3
    log=target/test-$name.log
    echo "== $name (--cpus $cpus --scenario $scen${*:+ $*})"
    scen_failures=$failures
    local t0=$(date +%s%N)
    timeout $((secs + 10)) ./run.sh --no-build --cpus "$cpus" --scenario "$scen" --timeout "$secs" "$@" >"$log" 2>&1
    rc=$?
    run_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    echo "  run.sh exit $rc after $run_ms ms; console in ppc64/pseries/$log"
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
        listed=$(grep -cE '^capture: C[0-9]+: [0-9]+ torn record\(s\) at depth [0-9]+ \([a-z]+\), explained: (the NMI stopped this CPU mid-write|its machine-check handler was writing it while the drain read it)$' "$log")
        [ "$listed" = "$t" ] && pass "every torn record explained by an NMI stop or a machine check ($listed)" || fail "$listed explained torn record lines for torn=$t"
        ! has 'UNEXPLAINED' || fail "an unexplained torn record"
        if [ "${drops_ok:-0}" = 1 ]; then
            pass "dropped=$d (records overwritten in their ring before anyone merged them, each counted)"
        else
            [ "$d" = 0 ] && pass "dropped=0" || fail "dropped=$d, expected 0"
        fi
        [ "$c" = "$cpus" ] && pass "cpus=$c" || fail "cpus=$c, expected $cpus"
        [ "$m" = "$mask" ] && pass "mask=$m" || fail "mask=$m, expected $mask"
        [ "$n" -gt $((cpus * 10)) ] && pass "recovered=$n" || fail "recovered=$n: too few"
    else
        fail "no 'capture: recovered=... ok' line (got: ${last:-nothing})"
    fi
    [ "$(grep -v '^run.sh: ' "$log" | tail -1)" = "$last" ] && pass "the verdict is the capture stage's last line" || fail "the verdict is not the last console line"
    for ((c = 0; c < cpus; c++)); do
        [ "${offline_cpus:-99}" -le "$c" ] && continue
        local line
        line=$(grep -E "^capture: C$c: task" "$log")
        if [[ "$line" =~ task\ n=0\.\.[0-9]+\ \([0-9]+,\ contiguous\)\ \|\ irq\ n=[0-9]+\.\.[0-9]+\ \([0-9]+,\ contiguous\) ]]; then
            pass "C$c: task and irq records, contiguous"
        elif [ "$c" = "$deaf" ] && [[ "$line" =~ task\ n=0\.\.[0-9]+\ \([0-9]+,\ (contiguous|gaps)\)\ \|\ irq\ n=[0-9]+\.\.[0-9]+\ \([0-9]+,\ (contiguous|gaps)\) ]] \
            && [[ "$line" != *FAILED* ]]; then
            # A CPU that never stopped keeps logging into its ring after the crash: its oldest
            # unmerged records may be overwritten (the capture stage checked each one is counted).
            pass "C$c: task and irq records, in order, every gap counted as overwritten"
        elif [ "${gaps_ok:-0}" = 1 ] && [[ "$line" =~ task\ n=[0-9]+\.\.[0-9]+\ \([0-9]+,\ (contiguous|gaps)\)\ \|\ irq\ n=[0-9]+\.\.[0-9]+\ \([0-9]+,\ (contiguous|gaps)\) ]] \
            && [[ "$line" != *FAILED* ]]; then
            # Many vCPUs on two host cores, rings sized down for the handover region: a ring may lap
            # before the flush gets to it (the capture stage checked each lost record is counted).
            pass "C$c: task and irq records, in order, every gap counted as overwritten"
        else
            fail "C$c: task/irq records missing or not contiguous: $line"
        fi
        if [ "$c" = 0 ]; then
            [[ "$line" == *"contexts task irq crash"* ]] && pass "C0: task, irq and crash contexts" || fail "C0 contexts: $line"
        elif [ "$c" = "$deaf" ]; then
            [[ "$line" == *"did not answer the NMI (no stopped record)"* ]] && pass "C$c: did not answer, no stopped record" || fail "C$c: $line"
            want "C0/crash crash: CPU $c did not answer the NMI IPI within [0-9]+ ms\$" "C0 logged that CPU $c did not answer"
            want "^capture: C$c: did not stop \(not checked in when the image was written\): [0-9]+ log call\(s\) in flight then, 0 torn" "capture: C$c named as not stopped"
        else
            [[ "$line" == *"stopped (NMI record)"*"contexts task irq nmi"* ]] && pass "C$c: stopped in NMI context" || fail "C$c: $line"
            has "^\[ *[0-9]+\.[0-9]{6}\] C$c/nmi CPU $c stopped \(NMI in " || fail "C$c: no 'CPU $c stopped' line in the dmesg"
        fi
    done
    want '^\[ *[0-9]+\.[0-9]{6}\] C0/crash IPI complete$' "C0/crash IPI complete"
    want '^\[ *[0-9]+\.[0-9]{6}\] C0/crash kexec: Starting switchover sequence\.$' "C0/crash kexec: Starting switchover sequence."
    want "\[mask_path=$mask\]$" "mask path logged by the sequence"
    # The flight recorder: the crash path's timeline, in order, outcomes as reported.
    want '^capture: flight recorder at 0x[0-9a-f]+: [0-9]+ breadcrumb\(s\), 0 overwritten, 0 torn; ' "flight recorder: breadcrumbs kept, none torn"
    want '^capture: flight: entered \.\. switchover, in order; per-CPU outcomes agree with the sequence.s report$' "flight timeline: entered .. switchover in order; outcomes agree"
    want '^capture: flight +[0-9]+\.[0-9]{3} ms C0 switchover \([0-9]+ bytes\)$' "flight: switchover breadcrumb"
    for ((c = 1; c < cpus; c++)); do
        [ "${offline_cpus:-99}" -le "$c" ] && continue
        if [ "$c" = "$deaf" ]; then
            want "^capture: C$c: crash stop: never answered\$" "C$c: outcome never answered"
        elif [ "$c" = "${reset_cpu:--}" ]; then
            want "^capture: C$c: crash stop: answered the system reset\$" "C$c: outcome answered the system reset"
            want "^capture: flight +[0-9]+\.[0-9]{3} ms C$c check-in \(after the escalation\)\$" "flight: C$c checked in after the escalation"
        else
            want "^capture: C$c: crash stop: answered the crash IPI\$" "C$c: outcome answered the crash IPI"
            # Every check-in leaves a breadcrumb up to the recorder's budget (32: CHECKIN_CRUMBS).
            [ "$cpus" -le 33 ] && { has "^capture: flight +[0-9]+\.[0-9]{3} ms C$c check-in \(answered the crash IPI\)\$" || fail "flight: no check-in breadcrumb for C$c"; }
        fi
    done
    if [ "$cpus" -gt 33 ]; then
        local crumbs
        crumbs=$(grep -cE '^capture: flight +[0-9]+\.[0-9]{3} ms C[0-9]+ check-in ' "$log")
        [ "$crumbs" = 32 ] && pass "flight: 32 check-in breadcrumbs (the budget) for $((cpus - 1)) check-ins" || fail "flight: $crumbs check-in breadcrumbs, expected the budget of 32"
    fi
    want "timestamps ordered, IPI complete yes, switchover yes, corruption none, mask path agrees \\(sequence report: [a-z-]+, $missing CPUs did not answer\\)" "capture checks: timestamps ordered, no corruption, mask path agrees with the sequence's report, $missing CPU(s) did not answer"
    # Crash notes: the crashing CPU's own, and one per stopped CPU equal to its stopped record's
    # NIP and LR (every online CPU but the crashing one and those that never answered).
    local online=$cpus
    [ -n "${offline_cpus:-}" ] && online=$offline_cpus
    want "^capture: C0: crash note: nip 0x[0-9a-f]+ lr 0x[0-9a-f]+ r1 0x[0-9a-f]+ msr 0x[0-9a-f]+ trap 0x0: the crashing CPU's own \\(saved by a call\\)\$" "C0: its own crash note"
    want "^capture: crash notes at 0x[0-9a-f]+ \\(536 bytes per CPU\\): [0-9]+ NT_PRSTATUS note\\(s\\) for $cpus CPUs, $((online - 1 - missing)) agree with their CPU's stopped record\$" "crash notes: $((online - 1 - missing)) agree with the stopped records"
    # The secondary hold: every CPU that answered went, after the go, to the capture stage's hold
    # loop with its presenter closed, and came back when the capture stage released it.
    local h=$((online - 1 - missing))
    want "^capture: secondary CPUs: $h of $h held at 0x8000060 \\(arrived within [0-9]+ ms; presenter torn down, CPPR 0, on $h( as each read its XIVE TIMA)?\\); $h came back into the capture stage in [0-9]+ ms\$" "secondary hold: $h held, presenters closed, all back"
    if [ "$frozen" != - ]; then
        local n
        n=$(sed -nE "s/.*CPU $frozen parked mid-write of \"cpu=$frozen n=([0-9]+)\".*/\1/p" "$log")
        if [ -n "$n" ]; then
            want_no "C$frozen cpu=$frozen n=$n\$" "C$frozen: in-flight record n=$n not delivered"
            # (With gaps_ok its oldest records may be gone: lapped, or lost to the main log's wrapping.)
            local from=0
            [ "${gaps_ok:-0}" = 1 ] && from='[0-9]+'
            want "^capture: C$frozen: task n=$from\.\.$((n - 1)) " "C$frozen: task records end at n=$((n - 1))"
            want "^capture: C$frozen: 1 torn record\(s\) at depth 0 \(task\), explained" "C$frozen: torn task record reported"
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
    want "^watchdog: CPU 0 stuck for [0-9]+ ms in the crash path" "watchdog fired on the crashing CPU"
    want "^watchdog: deadlock: $lock is held by CPU $holder, which the NMI IPI stopped" "names $lock and CPU $holder"
    want "^capture: deadlock lock=$lock holder=$holder\$" "capture: deadlock lock=$lock holder=$holder"
    want_no '^capture: recovered=' "no capture stage ran"
}

run default 4 default;             check_fixed 4 1 rtas-takeover 2; report
run freeze-in-log 4 freeze-in-log; check_fixed 4 1 rtas 2; report
run rtas-held 4 rtas-held;         check_fixed 4 0 rtas-takeover -; report
run rtas-in-call 4 rtas-in-call;   check_fixed 4 0 presenter -; report
run deaf 4 deaf;                   check_fixed 4 0 rtas - 1
want 'C0/crash crash: CPU 1 did not answer the system reset within 1000 ms either$' "C0: CPU 1 did not answer the escalation's system reset either"
report
run deaf-logging 4 deaf-logging;   drops_ok=1 check_fixed 4 1 rtas 2 1
want 'C0/crash crash: system reset to CPU 1: lost \(scenario deaf-logging\)$' "C0: the escalation's reset to CPU 1 is lost too"
report
deaf_after=$(grep -cE '^\[ *[0-9]+\.[0-9]{6}\] C1 cpu=1 n=' "$log")
last_c1=$(grep -E '^\[ *[0-9]+\.[0-9]{6}\] C1 cpu=1 n=' "$log" | tail -1 | sed -E 's/.*\[ *([0-9]+\.[0-9]{6})\].*/\1/')
# After the crash began: the crash path waits a whole second for CPU 1 (the IPI, then the reset), so
# a deaf CPU that goes on logging has records in that window however loaded the host is (the short
# window between "IPI complete" and the drain's snapshot is not: a busy host may not run CPU 1's vCPU
# in it, which made this check fail about one run in seven under load).
crash_at=$(grep -E 'C0/crash crash: CPU 0 crashing' "$log" | head -1 | sed -E 's/.*\[ *([0-9]+\.[0-9]{6})\].*/\1/')
if [ -n "$last_c1" ] && [ -n "$crash_at" ] && awk "BEGIN{exit !($last_c1 > $crash_at)}"; then
    pass "deaf-logging: CPU 1 kept logging after the crash began ($deaf_after task records recovered, the last at $last_c1 s)"
else
    fail "deaf-logging: no CPU 1 record after the crash began (last $last_c1, crash at $crash_at)"
fi
# Escalation: CPU 1 in a hard lockup misses the crash IPI; the system reset stops it.
run hard-lockup 4 hard-lockup;     reset_cpu=1 check_fixed 4 1 rtas 2; report
want 'C0/crash crash: CPU 1 did not answer the NMI IPI within 1000 ms$' "C0: CPU 1 did not answer the IPI"
want 'C0/crash crash: escalation: H_SIGNAL_SYS_RESET\([0-9]+\) to CPU 1 = 0$' "C0: system reset sent to CPU 1"
want 'C0/crash crash: Activate system reset \(dumprestart\) to stop other cpu\(s\): system reset sent to 1 CPU\(s\)' "C0: escalation announced"
want '^capture: flight +[0-9]+\.[0-9]{3} ms C0 escalated \(system reset to CPU mask 0x2\)$' "flight: escalated to CPU mask 0x2"
want '^capture: flight +[0-9]+\.[0-9]{3} ms C0 reset-wait-done \(0 CPU\(s\) still missing\)$' "flight: reset wait done, none missing"
want_no 'did not answer the system reset' "no CPU missed the reset"
report
# A machine check on a stopped CPU during the crash path: CPU 1 checks in, waits for the drain to
# start and takes a (synthesized) machine check; its handler leaves a breadcrumb and a record on the
# NMI-safe path and returns; CPU 1 then goes through the kexec handshake like the others. The record
# is in the image, torn (written while the drain read that ring: explained), or after the drain:
# each is correct, the breadcrumb says it happened either way.
run machine-check 4 machine-check; check_fixed 4 1 rtas 2; report
want '^capture: flight +[0-9]+\.[0-9]{3} ms C1 machine-check \(at nip 0x[0-9a-f]+\)$' "flight: C1's machine check"
mc_line=$(grep -nE '^capture: flight +[0-9]+\.[0-9]{3} ms C1 machine-check ' "$log" | head -1 | cut -d: -f1)
ci_line=$(grep -nE '^capture: flight +[0-9]+\.[0-9]{3} ms C1 check-in ' "$log" | head -1 | cut -d: -f1)
ds_line=$(grep -nE '^capture: flight +[0-9]+\.[0-9]{3} ms C0 drain-start$' "$log" | head -1 | cut -d: -f1)
[ -n "$mc_line" ] && [ -n "$ci_line" ] && [ -n "$ds_line" ] && [ "$ci_line" -lt "$mc_line" ] && [ "$ds_line" -lt "$mc_line" ] \
    && pass "flight: the machine check came after C1's check-in and the drain's start" \
    || fail "flight: machine check at line ${mc_line:-?}, C1 check-in ${ci_line:-?}, drain start ${ds_line:-?}"
# Which of the three it was (each correct; the capture stage's checks above cover them): shown only.
if has '^\[ *[0-9]+\.[0-9]{6}\] C1/nmi machine check on CPU 1: nip 0x[0-9a-f]+ srr1 0x[0-9a-f]+, recoverable: resuming$'; then
    echo "  (C1's machine-check record: in the image, whole)"
elif has '^capture: C1: [0-9]+ torn record\(s\) at depth [0-9]+ \(nmi\), explained: its machine-check handler'; then
    echo "  (C1's machine-check record: counted torn, written while the drain read it)"
else
    echo "  (C1's machine-check record: written after the drain had read C1's rings; the breadcrumb is there)"
fi
want '^capture: secondary CPUs: 3 of 3 held at 0x[0-9a-f]+ ' "all 3 secondaries, C1 too, reached the capture stage's hold"
report
# XIVE (ic-mode=xive, the POWER9/10 controller): the kernel negotiates exploitation mode through
# CAS, routes its sources with H_INT_SET_SOURCE_CONFIG (one event taken end to end at boot), and the
# crash path masks them with hypervisor calls whoever holds the RTAS lock — taken over from a holder
# stopped outside the call, left to one frozen inside it; the stopped CPUs close their presenter in
# their TIMA, and the crashing CPU tears down its queue and resets the controller before the jump.
check_xive() {
    want '^interrupt controller: XIVE, exploitation mode negotiated \(ibm,client-architecture-support, OV5 byte 23 = 0x40\); OS TIMA at 0x[0-9a-f]+$' "XIVE negotiated through CAS"
    want '^irq 0x1100: H_INT_SET_SOURCE_CONFIG\(target 0, prio 6\) = 0; H_INT_GET_SOURCE_CONFIG: target 0, priority 0x6; ESB PQ 00$' "vty source routed to CPU 0 at priority 6"
    want '^\[ *[0-9]+\.[0-9]{6}\] C0/irq cpu=0 external interrupt 0x1100$' "the boot-time vty event taken through the TIMA and the queue"
    want '^\[ *[0-9]+\.[0-9]{6}\] C0/crash crash: irq 0x1100: H_INT_SET_SOURCE_CONFIG\(prio 0xff\) = 0; H_INT_GET_SOURCE_CONFIG: priority 0xff$' "crash: vty source masked (priority 0xff read back)"
    want '^\[ *[0-9]+\.[0-9]{6}\] C0/crash crash: irq 0x1000: H_INT_SET_SOURCE_CONFIG\(prio 0xff\) = 0; H_INT_GET_SOURCE_CONFIG: priority 0xff$' "crash: EPOW source masked (priority 0xff read back)"
    want "C0/crash kexec: masked 2 of 2 interrupt sources via H_INT_SET_SOURCE_CONFIG, no firmware call \\(RTAS lock $1\\) \\[mask_path=hcall\\]\$" "crash: masked through the hypervisor (RTAS lock $1)"
    want '^capture: flight +[0-9]+\.[0-9]{3} ms C0 mask-path \(hcall\)$' "flight: mask path hcall"
    want '^capture: secondary CPUs: [0-9]+ of [0-9]+ held at 0x[0-9a-f]+ \(arrived within [0-9]+ ms; presenter torn down, CPPR 0, on [0-9]+ as each read its XIVE TIMA\)' "stopped CPUs closed their XIVE presenters"
    want '^capture: XIVE: the crashing CPU.s teardown before the jump: queue reset \(H_INT_SET_QUEUE_CONFIG = 0; H_INT_GET_QUEUE_CONFIG = 0: size 0\), controller reset \(H_INT_RESET = 0\), CPPR 0x0 in its TIMA$' "the crashing CPU's XIVE teardown (queue, controller, presenter), checked by the capture stage"
}
run default-xive 4 default --ic-mode xive; check_fixed 4 1 hcall 2
check_xive 'held by CPU 3, stopped outside the firmware call: taken over and released'; report
run rtas-in-call-xive 4 rtas-in-call --ic-mode xive; check_fixed 4 0 hcall -
check_xive 'held by CPU 3, frozen inside the firmware call: left to it'; report
# Escalation on XIVE: CPU 1 in a hard lockup misses the crash IPI; the system reset stops it.
run hard-lockup-xive 4 hard-lockup --ic-mode xive; reset_cpu=1 check_fixed 4 1 hcall 2
check_xive 'free'
want 'C0/crash crash: escalation: H_SIGNAL_SYS_RESET\([0-9]+\) to CPU 1 = 0$' "C0: system reset sent to CPU 1"
want '^capture: flight +[0-9]+\.[0-9]{3} ms C0 escalated \(system reset to CPU mask 0x2\)$' "flight: escalated to CPU mask 0x2"
want '^capture: C1: crash stop: answered the system reset$' "C1: outcome answered the system reset"
report
# Offline CPUs: -smp 3,maxcpus=4: CPU 3 is an empty slot: not waited for, reported offline.
run offline 3 freeze-in-log --maxcpus 4
offline_cpus=3 check_fixed 4 1 rtas 2; report
want 'C0/crash crash: CPU 3 is offline: not waited for$' "C0: CPU 3 offline, not waited for"
want '^capture: C3: offline: no records, no stopped record, not waited for$' "capture: C3 offline, no records"
want '^capture: C3: crash stop: offline$' "C3: outcome offline"
want 'C0/crash crash: sending NMI IPI to 2 other CPUs$' "IPI to the 2 online CPUs"
want_no 'C0/crash crash: CPU [0-9]+ did not answer' "no CPU 'did not answer'"
report
run default-8cpu 8 default;        check_fixed 8 1 rtas-takeover 2; report
# Larger machines, one image (the CPU count from the device tree, the rings sized for it at boot):
# 16 CPUs with 32 KiB rings, every record kept; 64 CPUs with 8 KiB rings and 256 CPUs (the most the
# image takes) with 2 KiB rings, which may lap while the vCPUs share two host cores (every lost
# record counted); the flight recorder's timeline whole at each. Beyond 16 CPUs the secondaries
# idle between records (H_CEDE) and take a slower tick, as most CPUs of a large machine do.
run default-16cpu 16 default;      check_fixed 16 1 rtas-takeover 2; report
run default-64cpu 64 default;      drops_ok=1 gaps_ok=1 check_fixed 64 1 rtas-takeover 2; report
run default-256cpu 256 default;    drops_ok=1 gaps_ok=1 check_fixed 256 1 rtas-takeover 2; report
# At 256 CPUs, one that did not stop: CPU 1 keeps logging through the crash, deaf to the IPI and to
# the escalation's system reset.
run deaf-logging-256cpu 256 deaf-logging; drops_ok=1 gaps_ok=1 check_fixed 256 1 rtas 2 1
want 'C0/crash crash: system reset to CPU 1: lost \(scenario deaf-logging\)$' "C0: the escalation's reset to CPU 1 is lost too"
report
run freeze-in-log-2cpu 2 freeze-in-log; check_fixed 2 1 rtas 1; report
run baseline 4 baseline;           check_deadlock logbuf_lock 2; report
run baseline-rtas 4 baseline-rtas; check_deadlock rtas_lock 3; report
run baseline-race 4 baseline-race; check_deadlock_either; report

# ---- die-in-drain: the crash path dies; the capture stage rebuilds the log from memory ----

# rank POINT: the death point's place in the crash sequence (as src/death_point.rs ranks it).
rank() {
    case "$1" in
        entered) echo 0 ;; ipi-sent) echo 1 ;; checkins-done) echo 2 ;; masked) echo 3 ;;
        drain:*) echo 4 ;; drained) echo 5 ;; image-start) echo 6 ;; image-sized:*) echo 7 ;;
        image-copy:*) echo 8 ;; image-tables) echo 9 ;; image-header) echo 10 ;; image-written) echo 11 ;;
        *) echo 99 ;;
    esac
}

# crumbs POINT: the breadcrumbs (last stage reached, then the last drain step) the firmware reports
# for a death at POINT, as an extended regex; `last` is a number, captured.
crumbs() {
    case "$1" in
        drain:last) echo 'masked, then drain:([0-9]+)' ;;
        drain:*) echo "masked, then $1" ;;
        image-sized:last | image-copy:last) echo "image-start, then ${1%last}([0-9]+)" ;;
        image-sized:* | image-copy:* | image-tables | image-header) echo "image-start, then $1" ;;
        *) echo "$1" ;;
    esac
}

scan_ms=()
die_ms=()

# check_die POINT: a die-in-drain run on 4 CPUs (CPU 2 frozen mid-log-write) whose crashing CPU died
# at POINT: the firmware stand-in stopped the other CPUs and entered the capture stage with memory
# only; the capture stage found the descriptor by scanning RAM, rebuilt the log, and its one verifier
# found every CPU's records contiguous, every loss counted, and exactly the crash path's messages
# logged before POINT.
check_die() {
    local point=$1 r cpus=4 frozen=2 line crumb n t d m
    r=$(rank "$point")
    die_ms+=("$run_ms")
    [ "$rc" = 0 ] && pass "booted, crashed, died at $point, captured from memory, powered off (exit 0)" || fail "run.sh exit $rc"
    line=$(grep -E '^fadump: system reset on CPU 0 ' "$log")
    if [[ "$line" =~ interrupted\ its\ crash\ path\ \(breadcrumbs:\ ([a-z0-9:, -]+)\)\;\ the\ firmware\ stopped\ 3\ of\ 3\ other\ CPU ]]; then
        crumb=${BASH_REMATCH[1]}
        if [[ "$crumb" =~ ^$(crumbs "$point")$ ]]; then
            pass "the system reset hit the crash path at $point (breadcrumbs: $crumb); the firmware stopped the 3 other CPUs"
        else
            fail "breadcrumbs '$crumb' for a death at $point"
        fi
    else
        fail "no 'fadump: system reset ... the firmware stopped 3 of 3' line (got: ${line:-nothing})"
    fi
    has "^capture: crash kernel running at 0x[0-9a-f]+ .*; no handover image and no report: the crash path died \(scenario die-in-drain, death point $point\); rebuilding the log from memory\$" \
        && pass "capture stage entered with memory only (r3 = 0, no report)" || fail "capture stage not entered with memory only"
    local desc
    desc=$(sed -nE 's/^recover: log descriptor at (0x[0-9a-f]+) .*/\1/p' "$log")
    line=$(grep -E '^capture: scanned [0-9]+ MiB of RAM ' "$log")
    if [[ "$line" =~ for\ the\ log\ descriptor\ in\ ([0-9]+)\ ms:\ found\ at\ (0x[0-9a-f]+)\ \(1\ valid ]] && [ "${BASH_REMATCH[2]}" = "$desc" ]; then
        scan_ms+=("${BASH_REMATCH[1]}")
        pass "found the descriptor the kernel placed at boot ($desc) by scanning RAM, in ${BASH_REMATCH[1]} ms"
    else
        fail "descriptor scan: ${line:-nothing} (the kernel placed it at ${desc:-?})"
    fi
    want '^capture: rebuilt a [0-9]+-byte handover image at 0x[0-9a-f]+ in [0-9]+ ms' "handover image rebuilt from the rings found in memory"
    if [ "$point" = image-written ]; then
        has '^capture: handover region at 0x[0-9a-f]+: the dead path.s image, byte-identical to the rebuilt one' \
            && pass "the dead path's finished image is byte-identical to the rebuilt one" || fail "the dead path's image and the rebuilt one differ"
    else
        want '^capture: handover region at 0x[0-9a-f]+: no valid image ' "no valid image in the handover region (a partial one never parses)"
    fi
    line=$(grep -E '^capture: recovered=' "$log" | tail -1)
    if [[ "$line" =~ ^capture:\ recovered=([0-9]+)\ torn=([0-9]+)\ dropped=([0-9]+)\ cpus=([0-9]+)\ mask=([a-z-]+)\ from=memory\ die=([a-z0-9:-]+)\ ok$ ]]; then
        n=${BASH_REMATCH[1]} t=${BASH_REMATCH[2]} d=${BASH_REMATCH[3]} m=${BASH_REMATCH[5]}
        [ "${BASH_REMATCH[6]}" = "$point" ] && pass "verdict names the death point $point" || fail "verdict names ${BASH_REMATCH[6]}"
        [ "${BASH_REMATCH[4]}" = "$cpus" ] && pass "cpus=$cpus" || fail "cpus=${BASH_REMATCH[4]}"
        [ "$d" = 0 ] && pass "dropped=0" || fail "dropped=$d, expected 0"
        [ "$n" -gt $((cpus * 10)) ] && pass "recovered=$n" || fail "recovered=$n: too few"
        if [ "$r" -ge 3 ]; then
            [ "$m" = rtas ] && pass "mask=rtas (masked before it died)" || fail "mask=$m, expected rtas"
        else
            [ "$m" = none ] && pass "mask=none (died before masking)" || fail "mask=$m, expected none"
        fi
        # CPU 2's frozen write is torn once CPU 2 checked in (always from checkins-done on), in flight
        # before; the NMI may stop other CPUs mid-write: each torn record must be explained.
        if [ "$r" = 0 ]; then
            [ "$t" = 0 ] && pass "torn=0 (no CPU stopped by the NMI: in flight instead)" || fail "torn=$t, expected 0"
        elif [ "$r" -ge 2 ]; then
            [ "$t" -ge 1 ] && pass "torn=$t" || fail "torn=$t, expected at least 1"
        fi
        local listed
        listed=$(grep -cE '^capture: C[0-9]+: [0-9]+ torn record\(s\) at depth [0-9]+ \([a-z]+\), explained: (the NMI stopped this CPU mid-write|its machine-check handler was writing it while the drain read it)$' "$log")
        [ "$listed" = "$t" ] && pass "every torn record explained by an NMI stop or a machine check ($listed)" || fail "$listed explained torn record lines for torn=$t"
        if [[ "$point" == *:last ]]; then
            local k
            [[ "$crumb" =~ ^$(crumbs "$point")$ ]] && k=${BASH_REMATCH[1]}
            [ "${k:-x}" = $((n - 1)) ] && pass "$point was record $k: the last of the $n the pass delivers" || fail "$point died at record ${k:-?}, but the log has $n records"
        fi
    else
        fail "no 'capture: recovered=... from=memory die=$point ok' line (got: ${line:-nothing})"
    fi
    [ "$(grep -v '^run.sh: ' "$log" | tail -1)" = "$line" ] && pass "the verdict is the capture stage's last line" || fail "the verdict is not the last console line"
    ! has 'MISSING|UNEXPECTED|UNEXPLAINED|FAILED' && pass "no check failed" || fail "a capture check failed: $(grep -E 'MISSING|UNEXPECTED|UNEXPLAINED|FAILED' "$log" | head -1)"
    # The crash path's messages: exactly those logged before the death point.
    expect_msg() { # RANK_FROM REGEX WHAT
        if [ "$r" -gt "$1" ]; then
            want "$2" "$3: logged before the death"
        else
            want_no "$2" "$3: absent (logged after the death point)"
        fi
    }
    expect_msg 0 '^\[ *[0-9]+\.[0-9]{6}\] C0/crash crash: CPU 0 crashing: simulated crash on the boot CPU$' "C0/crash crash entry"
    expect_msg 0 '^\[ *[0-9]+\.[0-9]{6}\] C0/crash crash: CPU 0: H_SIGNAL_SYS_RESET\(-2\) = 0 after' "C0/crash NMI IPI"
    expect_msg 2 '^\[ *[0-9]+\.[0-9]{6}\] C0/crash IPI complete$' "C0/crash IPI complete"
    expect_msg 2 '\[mask_path=rtas\]$' "mask path record"
    expect_msg 5 '^\[ *[0-9]+\.[0-9]{6}\] C0/crash crash: log drained: ' "C0/crash drain report"
    expect_msg 5 '^\[ *[0-9]+\.[0-9]{6}\] C0/crash kexec: Starting switchover sequence\.$' "C0/crash switchover"
    want '^capture: flight recorder at 0x[0-9a-f]+: [0-9]+ breadcrumb\(s\), 0 overwritten, 0 torn; ' "flight recorder read after the death: breadcrumbs kept, none torn"
    if [ "$r" -ge 3 ]; then
        want '^capture: flight +[0-9]+\.[0-9]{3} ms C0 masked ' "flight: the dead path's 'masked' breadcrumb"
    fi
    want '^capture: flight: the crash path.s last breadcrumb: [a-z-]+$' "flight: the dead path's last breadcrumb named"
    # The crash notes are in memory whatever the death point: each one found agrees with its CPU's
    # stopped record (the verdict fails otherwise); the crashing CPU saved its own on entry.
    want "^capture: crash notes at 0x[0-9a-f]+ \\(536 bytes per CPU\\): [0-9]+ NT_PRSTATUS note\\(s\\) for $cpus CPUs, [0-9]+ agree with their CPU's stopped record\$" "crash notes read back from memory"
    # The crash path died before its go: no CPU went to the hold.
    want "^capture: secondary CPUs: 0 of 0 held at 0x8000060 \\(arrived within [0-9]+ ms; presenter torn down, CPPR 0, on 0\\); 0 came back into the capture stage in [0-9]+ ms\$" "secondary hold: none (no go)"
    want "^capture: the crash path died at $point: its messages up to there: " "capture: the crash path's messages checked against the death point"
    for ((c = 0; c < cpus; c++)); do
        line=$(grep -E "^capture: C$c: task" "$log")
        [[ "$line" =~ task\ n=0\.\.[0-9]+\ \([0-9]+,\ contiguous\)\ \|\ irq\ n=[0-9]+\.\.[0-9]+\ \([0-9]+,\ contiguous\) ]] \
            && pass "C$c: task and irq records, contiguous" || fail "C$c: task/irq records missing or not contiguous: $line"
        if [ "$c" = 0 ]; then
            if [ "$r" = 0 ]; then
                [[ "$line" == *"crashing CPU | contexts task irq" ]] && pass "C0: task and irq contexts (died before logging in crash context)" || fail "C0: $line"
            else
                [[ "$line" == *"crashing CPU | contexts task irq crash" ]] && pass "C0: task, irq and crash contexts" || fail "C0: $line"
            fi
            continue
        fi
        local stopped=0 notin=0
        [[ "$line" == *"| stopped (NMI record) | contexts task irq nmi" ]] && stopped=1
        [[ "$line" == *"| did not answer the NMI (no stopped record) | contexts task irq" ]] && notin=1
        [[ "$line" == *"| stopped (NMI record) but never checked in | contexts task irq nmi" ]] && notin=2
        # Its "stopped" record was being written when the firmware stopped it: in flight, counted as
        # such by the drain (an accounting record in its NMI context), never delivered.
        [[ "$line" == *"| did not answer the NMI (no stopped record) | contexts task irq nmi" ]] \
            && has "^\[ *[0-9]+\.[0-9]{6}\] C$c/nmi nmilog: cpu $c nmi \(depth [0-9]+\): 0 torn, 0 overwritten, 0 dropped, 1 in flight \(CPU not stopped\)\$" \
            && notin=3
        if [ "$r" -ge 2 ] || { [ "$r" = 1 ] && [ "$stopped" = 1 ]; }; then
            [ "$stopped" = 1 ] && pass "C$c: stopped by the NMI, checked in" || fail "C$c: not stopped by the NMI: $line"
            has "^\[ *[0-9]+\.[0-9]{6}\] C$c/nmi CPU $c stopped \(NMI in " || fail "C$c: no 'CPU $c stopped' line in the dmesg"
        elif [ "$r" = 0 ] || [ "$notin" != 0 ]; then
            # Never checked in: the firmware stopped it wherever it was (before the NMI, or in its
            # NMI handler before the check-in): its log call then in flight, never torn.
            { [ "$notin" = 1 ] || { [ "$r" = 1 ] && [ "$notin" -ge 2 ]; }; } && pass "C$c: stopped in place by the firmware, not checked in" || fail "C$c: $line"
            has "^capture: C$c: did not stop \(not checked in when the image was written\): [0-9]+ log call\(s\) in flight then, 0 torn" \
                && pass "capture: C$c named as not checked in, no torn record" || fail "capture did not name CPU $c as not checked in"
        else
            fail "C$c: $line"
        fi
    done
    n=$(sed -nE "s/.*CPU $frozen parked mid-write of \"cpu=$frozen n=([0-9]+)\".*/\1/p" "$log")
    if [ -n "$n" ]; then
        want_no "C$frozen cpu=$frozen n=$n\$" "C$frozen: in-flight record n=$n not delivered"
        want "^capture: C$frozen: task n=0\.\.$((n - 1)) " "C$frozen: task records end at n=$((n - 1))"
        if has "^capture: C$frozen: task .*\| stopped \(NMI record\) \|"; then
            want "^capture: C$frozen: 1 torn record\(s\) at depth 0 \(task\), explained" "C$frozen: its write counted torn"
        else
            want "^capture: C$frozen: did not stop .*: [1-9][0-9]* log call\(s\) in flight then, 0 torn" "C$frozen: its write counted in flight (not checked in)"
        fi
    else
        fail "no 'CPU $frozen parked mid-write' line"
    fi
}

# check_dump MEMFILE: the memory dump QEMU wrote after the capture stage finished, read on the host by
# `dmesg --from-memory FILE --base 0 --json`: the records must be the ones the capture stage printed.
check_dump() {
    local mem=$1 json=target/test-die-dump.json err=target/test-die-dump.err cap=target/test-die-dump.capture host=target/test-die-dump.host
    has '^run.sh: guest memory \[0, [0-9]+\) in ' && pass "QEMU wrote all guest RAM to $mem (pmemsave) after the capture stage powered off" || { fail "no memory dump"; return; }
    if ! (cd ../.. && timeout 600 cargo run --release --quiet --example dmesg -- --help 2>/dev/null) | grep -q -- '--from-memory'; then
        echo "  SKIP: examples/dmesg.rs has no --from-memory (yet): the host side of the dump is not checked"
        rm -f "$mem"
        return
    fi
    local t0=$(date +%s%N) drc
    (cd ../.. && timeout 600 cargo run --release --quiet --example dmesg -- --from-memory "ppc64/pseries/$mem" --base 0 --json) >"$json" 2>"$err"
    drc=$?
    echo "  dmesg --from-memory: exit $drc after $(( ($(date +%s%N) - t0) / 1000000 )) ms (with the build); stderr: $(head -3 "$err" | tr '\n' ' ')"
    [ "$drc" = 0 ] && pass "dmesg --from-memory $mem --base 0 --json: exit 0" || { fail "dmesg --from-memory exit $drc"; rm -f "$mem"; return; }
    # The capture stage's dmesg, and dmesg's JSON records in the console's format.
    sed -n '/^capture: image v[0-9]*: .* dmesg follows$/,/^capture: end of dmesg$/p' "$log" | sed '1d;$d' >"$cap"
    # (Only the record lines: dmesg ends with a summary object, which has no "ts_ns".)
    awk '/"ts_ns":/ {
        match($0, /"ts_ns":[0-9]+/); ts = substr($0, RSTART + 8, RLENGTH - 8) + 0
        match($0, /"cpu":[0-9]+/); cpu = substr($0, RSTART + 6, RLENGTH - 6)
        match($0, /"ctx":"[a-z0-9]+"/); ctx = substr($0, RSTART + 7, RLENGTH - 8)
        i = index($0, "\"text\":\""); text = substr($0, i + 8)
        sub(/"(,"cont":true)?(,"raw":true)?}$/, "", text)
        gsub(/\\"/, "\"", text); gsub(/\\\\/, "\\", text)
        printf "[%5d.%06d] C%d%s %s\n", int(ts / 1000000000), int(ts / 1000) % 1000000, cpu, (ctx == "task" ? "" : "/" ctx), text
    }' "$json" >"$host"
    local nc nh
    nc=$(wc -l <"$cap") nh=$(wc -l <"$host")
    if [ "$nc" -gt 0 ] && cmp -s "$cap" "$host"; then
        pass "the $nh records dmesg rebuilt from the dump equal the $nc the capture stage printed (text, CPU, context, timestamp, order)"
    else
        fail "dmesg --from-memory: $nh records, the capture stage printed $nc; first difference: $(diff "$cap" "$host" | head -3 | tr '\n' ' ')"
    fi
    rm -f "$mem"
}

# The death points: every CrashStage; the first, a middle and the last record of the first drain;
# the first and last record of both image passes; the tables and the header. See the header comment.
for point in entered ipi-sent checkins-done masked drain:0 drain:60 drain:last drained image-start \
    image-sized:0 image-sized:last image-copy:0 image-copy:last image-tables image-header image-written; do
    if [ "$point" = drain:60 ]; then
        # The QEMU memory-dump path too: RAM to a file after the capture stage, dmesg on the host.
        run "die-${point/:/-}" 4 die-in-drain --die "$point" --dump-memory target/test-die.mem
        check_die "$point"
        check_dump target/test-die.mem
    else
        run "die-${point/:/-}" 4 die-in-drain --die "$point"
        check_die "$point"
    fi
    report
done
if [ "${#scan_ms[@]}" -gt 0 ]; then
    sorted=$(printf '%s\n' "${scan_ms[@]}" | sort -n)
    echo "die-in-drain: descriptor scan of the guest RAM under TCG: min $(head -1 <<<"$sorted") ms, median $(sed -n "$(( (${#scan_ms[@]} + 1) / 2 ))p" <<<"$sorted") ms, max $(tail -1 <<<"$sorted") ms over ${#scan_ms[@]} runs; run.sh per death point: $(printf '%s\n' "${die_ms[@]}" | sort -n | sed -n '1p;$p' | paste -sd- -) ms"
fi

if [ "$failures" = 0 ]; then
    echo "test.sh: all scenarios passed"
else
    echo "test.sh: $failures check(s) FAILED"
    exit 1
fi
