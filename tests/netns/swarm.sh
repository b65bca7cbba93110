#!/usr/bin/env bash
# The swarm test (issue 10): one seeder and many leechers started together on capped links, in
# network namespaces on this one machine. It shows that the leechers trade the chunks they already
# verified instead of all pulling from the seeder.
#
#   sudo tests/netns/swarm.sh            # builds the binaries first (cargo build --bins)
#   sudo SHOAL_BIN_DIR=target/release tests/netns/swarm.sh    # or uses these, without building
#   sudo SWARM_LEECHERS=16 tests/netns/swarm.sh               # more leechers (default 8, at least 8)
#
# Topology: a "switch" namespace holding a bridge, h1 the tracker, h2 the seeder of a 32 MiB file
# (256 KiB chunks), h3.. one leecher each, all on one /24 chosen at random per run. Every host's
# upload (the egress of its eth0) is capped at 50 Mbit/s with tc tbf, as in the issue; downloads
# are not capped. No namespace has a route out and discovery is off (P2P_NO_DISCOVERY=1).
#
# Checks: every leecher's copy is byte-identical to the seeder's (sha256sum); every leecher served
# chunks to other leechers before it finished (its summary says `uploaded U chunks while
# downloading` with U > 0, and its address is in another leecher's `chunks per peer:` list); the
# seeder's upload, counted by tc on its link (not by the seeder), is under 2 x the file size;
# every leecher's peak resident set is under 64 MiB;
# every program stops cleanly on Ctrl-C, and none panicked. The leechers keep seeding once they
# finish, as in a swarm, until every leecher is done.
#
# Needs root and iproute2 (ip, tc). Every wait has a timeout; everything it made is removed on
# exit. Ends with `N passed, M failed`; the exit status is non-zero if anything failed.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/netns/lib.sh
source "$here/lib.sh"

LEECHERS=${SWARM_LEECHERS:-8}
[[ $LEECHERS =~ ^[0-9]+$ ]] && ((LEECHERS >= 8 && LEECHERS <= 60)) ||
    die "SWARM_LEECHERS must be a number from 8 to 60, not '$LEECHERS'"
SIZE=$((32 * 1024 * 1024))
RATE=50mbit
# Today's leechers take LEECHERS x 5.4 s from one capped seeder; a swarm takes a few seconds.
# The bound is only there so that a hung run ends.
DEADLINE=$((LEECHERS * 8 + 30))
TRACKER=1
SEEDER=2
FIRST=3
LAST=$((FIRST + LEECHERS - 1))
HOSTS=($(seq 1 "$LAST"))
o2=$((RANDOM % 200 + 20))
o3=$((RANDOM % 250 + 1))
v4() { echo "10.$o2.$o3.$1"; }
PORT=7000

# sent_bytes HOST: bytes the host has sent on its link, as tc's qdisc counts them (headers too).
sent_bytes() {
    tc -n "$(ns "$1")" -s qdisc show dev eth0 | awk '$1 == "Sent" { print $2; exit }'
}

# summary_field LOG REGEX: the number in the leecher's summary line that REGEX (sed, with one
# group) captures; empty if the line or the field is missing.
summary_field() {
    grep -m1 '^downloaded ' "$1" | sed -n "s/.*$2.*/\1/p"
}

# --- The LAN --------------------------------------------------------------------------------------
mkdir -p "$work/logs" "$work/data" || die "cannot make $work"
ip netns add "$sw" || die "cannot create namespace $sw"
NAMESPACES+=("$sw")
ip -n "$sw" link add br0 type bridge || die "cannot create a bridge"
ip -n "$sw" link set br0 type bridge mcast_snooping 0 stp_state 0 forward_delay 0
ip -n "$sw" link set br0 up || die "cannot bring the bridge up"
for h in "${HOSTS[@]}"; do
    n=$(ns "$h")
    ip netns add "$n" || die "cannot create namespace $n"
    NAMESPACES+=("$n")
    mkdir -p "$work/h$h"
    ip -n "$n" link set lo up &&
        ip -n "$sw" link add "p$h" type veth peer name eth0 netns "$n" &&
        ip -n "$sw" link set "p$h" master br0 &&
        ip -n "$sw" link set "p$h" up &&
        ip -n "$n" addr add "$(v4 "$h")/24" dev eth0 &&
        ip -n "$n" link set eth0 up || die "cannot wire host h$h"
    # The host's upload only: the issue's setup.
    tc -n "$n" qdisc add dev eth0 root tbf rate $RATE burst 64kb latency 50ms ||
        die "tc tbf does not work here (h$h)"
done
for h in "${HOSTS[@]}"; do
    until_up=$(($(now_us) + 5000000))
    until ip -n "$(ns "$h")" link show eth0 | grep -q LOWER_UP; do
        (($(now_us) < until_up)) || die "h$h's link did not come up within 5 s"
        sleep 0.05
    done
    ip -n "$(ns "$h")" route show default | grep -q . && die "h$h has a default route"
done
pass "LAN: ${#HOSTS[@]} hosts on $(v4 0)/24 behind a bridge, every upload capped at $RATE (tbf)"

head -c "$SIZE" /dev/urandom >"$work/h$SEEDER/s.bin"
want=$(sha256sum <"$work/h$SEEDER/s.bin" | cut -d' ' -f1)

T=$(v4 $TRACKER):6969
quiet=(env P2P_NO_DISCOVERY=1)
start tracker $TRACKER "${quiet[@]}" "$bin/tracker" --listen 0.0.0.0:6969 --interval 1
tracker_pid=$PID
wait_for "$work/logs/tracker.out" '^tracker listening on ' 10 "$tracker_pid" ||
    die "the tracker did not start on h$TRACKER"
start seeder $SEEDER "${quiet[@]}" "$bin/seeder" --tracker "$T" --port $PORT --chunk-size 256K s.bin
seeder_pid=$PID
wait_for "$work/logs/seeder.err" 'registered with the tracker' 60 "$seeder_pid" ||
    die "the seeder did not register with the tracker within 60 s"
F=$(cut -d' ' -f1 "$work/logs/seeder.out")

# ---- The swarm -----------------------------------------------------------------------------------
echo "---- $LEECHERS leechers of a 32 MiB file start together"
seeder_sent0=$(sent_bytes $SEEDER)
LEECH_PIDS=()
for h in $(seq $FIRST $LAST); do
    start "leech-h$h" "$h" "${quiet[@]}" "$bin/leecher" --tracker "$T" --timeout 20 \
        --port $PORT "$F"
    LEECH_PIDS+=("$PID")
done
t0=$(now_us)
until_all=$((t0 + DEADLINE * 1000000))
for h in $(seq $FIRST $LAST); do
    pid=${LEECH_PIDS[h - FIRST]}
    left=$(((until_all - $(now_us)) / 1000000))
    ((left > 0)) || left=1
    wait_for "$work/logs/leech-h$h.err" '^downloaded ' "$left" "$pid" ||
        fail "h$h: no summary line within $DEADLINE s of the start"
done
seeder_sent=$(($(sent_bytes $SEEDER) - seeder_sent0))
took_ms=$((($(now_us) - t0) / 1000))
echo "     all leechers done or given up after $((took_ms / 1000)).$(printf '%03d' $((took_ms % 1000))) s"

# Every copy byte-identical.
for h in $(seq $FIRST $LAST); do
    path=$(awk 'NR == 1 { print $3 }' "$work/logs/leech-h$h.out" 2>/dev/null)
    [ -n "$path" ] && [ "${path#/}" = "$path" ] && path="$work/h$h/$path"
    if [ -n "$path" ] && [ -f "$path" ] && [ "$(sha256sum <"$path" | cut -d' ' -f1)" = "$want" ]; then
        pass "h$h: byte-identical copy ($(summary_field "$work/logs/leech-h$h.err" \
            ' in \([0-9.]* s\) ') after starting together)"
    else
        fail "h$h: no byte-identical copy (result line: $(head -n1 "$work/logs/leech-h$h.out" 2>/dev/null))"
    fi
done

# Every leecher served other leechers while it was still downloading.
for h in $(seq $FIRST $LAST); do
    # By host address: the port a leecher serves on while downloading is the engine's choice.
    me="$(v4 "$h"):"
    up=$(summary_field "$work/logs/leech-h$h.err" 'uploaded \([0-9]*\) chunks while downloading')
    listed=0
    for o in $(seq $FIRST $LAST); do
        [ "$o" = "$h" ] && continue
        summary_peers "$work/logs/leech-h$o.err" | grep -q -- "^${me//./\\.}" && listed=$((listed + 1))
    done
    if [ -z "$up" ]; then
        fail "h$h: its summary does not say 'uploaded U chunks while downloading' (in $listed other leechers' lists): $(grep -m1 '^downloaded ' "$work/logs/leech-h$h.err" | cut -c1-160)"
    elif ((up > 0 && listed > 0)); then
        pass "h$h served while downloading: uploaded $up chunks; in $listed other leechers' lists"
    else
        fail "h$h did not serve while downloading: uploaded $up chunks; in $listed other leechers' lists"
    fi
done

# Memory, with every leecher connected to the others (issue 10: the bounds
# hold with 32 peers each connected to 31 others: SWARM_LEECHERS=32). The peak resident set of
# every leecher must stay under 64 MiB, the single download's bound: chunk buffers come from a
# fixed pool and serving adds none (sendfile).
peak=0 rss_ok=1
for h in $(seq $FIRST $LAST); do
    pid=${LEECH_PIDS[h - FIRST]}
    kib=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$pid/status" 2>/dev/null)
    if [ -z "$kib" ]; then
        fail "h$h: no peak RSS for its leecher (pid $pid): it is not running"
        rss_ok=0
    elif ((kib >= 64 * 1024)); then
        fail "h$h: the leecher's peak RSS is $((kib / 1024)) MiB, not under 64 MiB"
        rss_ok=0
    fi
    [ -n "$kib" ] && ((kib > peak)) && peak=$kib
done
((rss_ok)) &&
    pass "every leecher's peak RSS is under 64 MiB (largest $((peak / 1024)) MiB)"

# Where the chunks came from, as the leechers tell it (for the reader; the checks are above).
from_s=0 from_l=0
for h in $(seq $FIRST $LAST); do
    s=$(summary_field "$work/logs/leech-h$h.err" 'from seeders: \([0-9]*\) chunks')
    l=$(summary_field "$work/logs/leech-h$h.err" 'from leechers: \([0-9]*\) chunks')
    [ -n "$s" ] && [ -n "$l" ] || { from_s=; break; }
    from_s=$((from_s + s)) from_l=$((from_l + l))
done
[ -n "$from_s" ] && echo "     the leechers got $from_s chunks from seeders and $from_l from leechers"

# The seeder's upload, as its link counted it.
ratio=$(awk -v s="$seeder_sent" -v f="$SIZE" 'BEGIN { printf "%.2f", s / f }')
if ((seeder_sent < 2 * SIZE)); then
    pass "the seeder sent $seeder_sent bytes on its link, $ratio x the file (< 2 x)"
else
    fail "the seeder sent $seeder_sent bytes on its link, $ratio x the file (not < 2 x)"
fi

# ---- Stop --------------------------------------------------------------------------------------
for pid in "${LEECH_PIDS[@]}"; do kill -INT "$pid" 2>/dev/null; done
clean=0
for h in $(seq $FIRST $LAST); do
    pid=${LEECH_PIDS[h - FIRST]}
    if wait_exit "$pid" 10 && [ "$RC" -eq 0 ]; then
        clean=$((clean + 1))
    else
        fail "leecher on h$h did not exit 0 within 10 s of Ctrl-C (status ${RC:-none})"
    fi
done
((clean == LEECHERS)) && pass "all $LEECHERS leechers stop cleanly on Ctrl-C"
stop "seeder" "$seeder_pid"
stop "tracker" "$tracker_pid"

if grep -l 'panicked' "$work"/logs/*.err >/dev/null 2>&1; then
    fail "a program panicked: $(grep -l 'panicked' "$work"/logs/*.err | xargs -n1 basename | tr '\n' ' ')"
fi
