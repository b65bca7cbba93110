#!/usr/bin/env bash
# The multi-host test: a small LAN of network namespaces on this one machine, and the real
# tracker, seeders and leechers on it, each using only the addresses its host really has.
#
#   sudo tests/netns/run.sh            # builds the binaries first (cargo build --bins, as $SUDO_USER)
#   sudo SHOAL_BIN_DIR=target/release tests/netns/run.sh      # or uses these, without building
#
# Topology: a "switch" namespace holding a bridge, and six "host" namespaces, each with lo and one
# veth link to the bridge (rate capped with tc tbf both ways), an IPv4 address in a subnet chosen
# at random per run and an IPv6 ULA address. Nothing is added to the root namespace and no
# namespace has a route out, so no packet leaves the namespaces this script makes.
#
#   h1 tracker            h2, h3 seeders of f.bin     h4, h5 leechers
#   h1 also a seeder of l.bin reaching the tracker over loopback (no --tracker)
#   h6 a seeder of a.bin with a second address, which it --advertise's
#
# Phase 1, IPv4 (`tracker --listen 0.0.0.0:6969`): --list and peer lists from other hosts (the
# peer list exactly as a leecher is handed it, by tracker_peers.sh), downloads verified with
# sha256sum, a seeder and a leecher that find the tracker by broadcast discovery, the loopback
# seeder reachable from elsewhere, --advertise, and a leecher re-seeding to a later leecher after
# the original seeders left, and a private swarm's tracker on h6 that discovery finds only with
# its secret (another secret: the one sentence). Phase 2, IPv6 (`tracker --listen [::]:6969`): peers over IPv6 and
# IPv4 to the same dual-stack tracker, no v4-mapped or loopback address in any list. Also: a host
# name that resolves to ::1 before 127.0.0.1 reaches an IPv4 tracker, --no-discovery and
# P2P_NO_DISCOVERY=1 turn discovery off, every program stops cleanly on Ctrl-C.
#
# Needs root and iproute2 (ip, tc). Every wait has a timeout; every namespace, link, process and
# file it made is removed on exit, whether it passed, failed or was interrupted. Ends with a line
# `N passed, M failed`; the exit status is non-zero if anything failed.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/netns/lib.sh
source "$here/lib.sh"

# --- This test's hosts and addresses --------------------------------------------------------------
HOSTS=(1 2 3 4 5 6)

# A random /24 in 10/8 and a random ULA /64, different each run (nothing outside these namespaces
# sees them, but two runs side by side must not be confused). Groups of four hex digits starting
# with 1-6, so Rust's display of an address and the one built here agree.
o2=$((RANDOM % 200 + 20))
o3=$((RANDOM % 250 + 1))
g2=$(printf '%x' $((RANDOM % 0x6000 + 0x1000)))
g3=$(printf '%x' $((RANDOM % 0x6000 + 0x1000)))
v4() { echo "10.$o2.$o3.$1"; }
v6() { echo "fd77:$g2:$g3::$1"; }
V4_EXTRA=$(v4 66) # h6's second address, the one it advertises

# --- Helpers --------------------------------------------------------------------------------------
# peers HOST TRACKER_IP ID: the peer list the tracker hands to HOST, sorted, one per line. A
# tracker that does not answer is a failure of its own, not an empty list.
peers() {
    local list
    if ! list=$(ip netns exec "$(ns "$1")" bash "$here/tracker_peers.sh" "$2" 6969 "$3" \
        2>"$work/logs/tracker_peers.err"); then
        echo "(tracker_peers failed: $(tr '\n' ' ' <"$work/logs/tracker_peers.err"))"
        return 1
    fi
    [ -z "$list" ] || sort <<<"$list"
}

# check_peers WHAT HOST TRACKER_IP ID EXPECTED...: the list is exactly EXPECTED.
check_peers() {
    local what=$1 host=$2 tracker=$3 id=$4
    shift 4
    local got want
    got=$(peers "$host" "$tracker" "$id" | tr '\n' ' ')
    want=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
    if [ "$got" = "$want" ]; then
        pass "$what: h$host is handed [ ${got}]"
    else
        fail "$what: h$host is handed [ ${got}], expected [ ${want}]"
    fi
    if grep -qE '(^| |\[)(::ffff:)?127\.|\[::1\]' <<<"$got"; then
        fail "$what: a loopback address was handed to h$host"
    fi
}
# check_download WHAT NAME HOST SOURCE ALLOWED...: the leecher NAME on HOST printed its result
# line, the file is byte-identical to SOURCE, and every peer in its summary is one of ALLOWED.
check_download() {
    local what=$1 name=$2 host=$3 src=$4
    shift 4
    local out="$work/logs/$name.out" err="$work/logs/$name.err" path
    path=$(awk 'NR == 1 { print $3 }' "$out")
    [ -n "$path" ] && [ "${path#/}" = "$path" ] && path="$work/h$host/$path"
    if [ -n "$path" ] && [ -f "$path" ] &&
        [ "$(sha256sum <"$path" | cut -d' ' -f1)" = "$(sha256sum <"$src" | cut -d' ' -f1)" ]; then
        pass "$what: byte-identical ($(wc -c <"$path") bytes)"
    else
        fail "$what: no byte-identical file (result line: $(head -n1 "$out"))"
        return
    fi
    local got
    got=$(summary_peers "$err")
    if [ -z "$got" ]; then
        fail "$what: no peers in the summary: $(grep 'downloaded' "$err")"
        return
    fi
    local a ok=1
    for a in $got; do
        printf '%s\n' "$@" | grep -qxF -- "$a" || ok=0
    done
    if ((ok)); then
        pass "$what: chunks came from $(echo "$got" | tr '\n' ' ')"
    else
        fail "$what: chunks came from $(echo "$got" | tr '\n' ' '), expected only from $*"
    fi
}

# list_seeders NAME: the seeders column of NAME's line in a leecher --list output on stdin.
list_seeders() { awk -v n="$1" '$4 == n { print $3 }'; }

# --- The LAN --------------------------------------------------------------------------------------
mkdir -p "$work/logs" "$work/data" || die "cannot make $work"
ip netns add "$sw" || die "cannot create namespace $sw"
NAMESPACES+=("$sw")
ip -n "$sw" link add br0 type bridge || die "cannot create a bridge"
# No multicast snooping (IPv6 neighbour discovery must flood), no STP delay.
ip -n "$sw" link set br0 type bridge mcast_snooping 0 stp_state 0 forward_delay 0
ip -n "$sw" link set br0 up || die "cannot bring the bridge up"
for h in "${HOSTS[@]}"; do
    n=$(ns "$h")
    ip netns add "$n" || die "cannot create namespace $n"
    NAMESPACES+=("$n")
    mkdir -p "$work/h$h"
    # Addresses as `ip addr add` makes them, without a broadcast address, except on h5 (`brd +`,
    # as DHCP clients set them): discovery must find its way on both (h3, h5).
    brd=""
    [ "$h" = 5 ] && brd="brd +"
    ip -n "$n" link set lo up &&
        ip -n "$sw" link add "p$h" type veth peer name eth0 netns "$n" &&
        ip -n "$sw" link set "p$h" master br0 &&
        ip -n "$sw" link set "p$h" up &&
        ip -n "$n" addr add "$(v4 "$h")/24" $brd dev eth0 &&
        ip -n "$n" addr add "$(v6 "$h")/64" dev eth0 nodad &&
        ip -n "$n" link set eth0 up || die "cannot wire host h$h"
    # 200 Mbit/s each way: egress of the host's end and of the switch's end.
    for side in "-n $n eth0" "-n $sw p$h"; do
        read -r flag where dev <<<"$side"
        tc "$flag" "$where" qdisc add dev "$dev" root tbf rate 200mbit burst 256kb latency 50ms ||
            die "tc tbf does not work here (dev $dev)"
    done
done
ip -n "$(ns 6)" addr add "$V4_EXTRA/24" dev eth0 || die "cannot add h6's second address"
for h in "${HOSTS[@]}"; do
    until_up=$(($(now_us) + 5000000))
    until ip -n "$(ns "$h")" link show eth0 | grep -q LOWER_UP; do
        (($(now_us) < until_up)) || die "h$h's link did not come up within 5 s"
        sleep 0.05
    done
done
# Nothing routes anywhere but the LAN itself.
for h in "${HOSTS[@]}"; do
    if ip -n "$(ns "$h")" route show default | grep -q . ||
        ip -n "$(ns "$h")" -6 route show default | grep -q .; then
        die "h$h has a default route"
    fi
done
pass "LAN: 6 hosts on $(v4 0)/24 and fd77:$g2:$g3::/64 behind a bridge, links capped at 200 Mbit/s (tbf)"

# Test data: the same bytes on h2 and h3, another file on h1, a third on h6.
head -c $((8 * 1024 * 1024 + 12345)) /dev/urandom >"$work/data/f.bin"
head -c $((3 * 1024 * 1024 + 7)) /dev/urandom >"$work/data/l.bin"
head -c $((2 * 1024 * 1024 + 99)) /dev/urandom >"$work/data/a.bin"
cp "$work/data/f.bin" "$work/h2/f.bin"
cp "$work/data/f.bin" "$work/h3/f.bin"
cp "$work/data/l.bin" "$work/h1/l.bin"
cp "$work/data/a.bin" "$work/h6/a.bin"
for h in 4 5; do mkdir -p "$work/h$h/p1" "$work/h$h/p2"; done

T4=$(v4 1):6969
T6="[$(v6 1)]:6969"

# ==== Phase 1: IPv4 ===============================================================================
echo "---- phase 1: IPv4, tracker --listen 0.0.0.0:6969"
start tracker4 1 "$bin/tracker" --listen 0.0.0.0:6969 --interval 1
tracker_pid=$PID
wait_for "$work/logs/tracker4.out" '^tracker listening on 0\.0\.0\.0:6969$' 10 "$tracker_pid" ||
    die "the tracker did not start on h1"

start seed-h2 2 "$bin/seeder" --tracker "$T4" --port 7002 --chunk-size 256K f.bin
seed2=$PID
# h3 is given no tracker at all: it must find the one on h1 by itself.
start seed-h3 3 "$bin/seeder" --port 7003 --chunk-size 256K f.bin
seed3=$PID
# h1 is given no tracker either, and has one on 127.0.0.1:6969: it registers over loopback.
start seed-h1 1 "$bin/seeder" --port 7001 l.bin
seed1=$PID
# h6 advertises its second address instead of the one its datagrams come from.
start seed-h6 6 "$bin/seeder" --tracker "$T4" --port 7006 --advertise "$V4_EXTRA" a.bin
seed6=$PID
for s in seed-h2:$seed2 seed-h3:$seed3 seed-h1:$seed1 seed-h6:$seed6; do
    wait_for "$work/logs/${s%:*}.err" 'registered with the tracker' 30 "${s#*:}" ||
        die "${s%:*} did not register with the tracker within 30 s"
done
pass "four seeders registered (h2 with --tracker, h3 by discovery, h1 over loopback, h6 advertising)"

if grep -qF "found a tracker at $T4 on the local network" "$work/logs/seed-h3.err"; then
    pass "discovery: the seeder on h3 says it found the tracker at $T4"
else
    fail "discovery: the seeder on h3 does not say it found $T4: $(grep -i tracker "$work/logs/seed-h3.err" | head -n 3)"
fi
if grep -q 'found a tracker' "$work/logs/seed-h1.err"; then
    fail "discovery: h1 has a tracker on 127.0.0.1:6969 but went looking on the LAN"
fi

F=$(cut -d' ' -f1 "$work/logs/seed-h2.out")
L=$(cut -d' ' -f1 "$work/logs/seed-h1.out")
A=$(cut -d' ' -f1 "$work/logs/seed-h6.out")
[ "$(cut -d' ' -f1 "$work/logs/seed-h3.out")" = "$F" ] ||
    fail "h2 and h3 share the same bytes but got different ids"

run list4-h4 4 20 "$bin/leecher" --tracker "$T4" --list
listing="$work/logs/list4-h4.out"
if [ "$RC" -eq 0 ] && [ "$(list_seeders f.bin <"$listing")" = 2 ] &&
    [ "$(list_seeders l.bin <"$listing")" = 1 ] && [ "$(list_seeders a.bin <"$listing")" = 1 ]; then
    pass "--list from h4: f.bin 2 seeders, l.bin 1, a.bin 1"
else
    fail "--list from h4 (status $RC): $(tr '\n' '|' <"$listing")"
fi
if grep -qE '(^|[^0-9])127\.[0-9]+\.' "$listing"; then fail "--list from h4 shows a loopback address"; fi

# Host names are resolved, and a name with both IPv6 and IPv4 addresses is reached over IPv4, which
# a tracker on 0.0.0.0 (the default) and one on [::] both answer. Here `localhost` is ::1 first, as
# in Debian's /etc/hosts: a private copy, bind-mounted in a private mount namespace.
printf '::1 localhost ip6-localhost\n127.0.0.1 localhost\n' >"$work/hosts"
run list4-h1-name 1 20 unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' \
    "$work/hosts" "$bin/leecher" --tracker localhost:6969 --list
if [ "$RC" -eq 0 ] && [ "$(list_seeders l.bin <"$work/logs/list4-h1-name.out")" = 1 ]; then
    pass "--tracker localhost:6969 (::1 listed first) reaches the IPv4 tracker on h1"
else
    fail "--tracker localhost:6969 (::1 listed first) on h1 (status $RC): $(tail -n 1 "$work/logs/list4-h1-name.err")"
fi

check_peers "peers of f.bin" 4 "$(v4 1)" "$F" "$(v4 2):7002" "$(v4 3):7003"
# The seeder that registered over loopback is reachable at h1's address from the LAN...
check_peers "peers of l.bin (seeder on the tracker's host)" 4 "$(v4 1)" "$L" "$(v4 1):7001"
# ...and at 127.0.0.1 from its own host, asking over loopback.
check_peers_local() {
    local got
    got=$(peers 1 127.0.0.1 "$L" | tr '\n' ' ')
    if [ "$got" = "127.0.0.1:7001 " ]; then
        pass "peers of l.bin: h1, asking over loopback, is handed [ $got]"
    else
        fail "peers of l.bin: h1, asking over loopback, is handed [ $got], expected [ 127.0.0.1:7001 ]"
    fi
}
check_peers_local
check_peers "--advertise: peers of a.bin" 5 "$(v4 1)" "$A" "$V4_EXTRA:7006"

# h4 downloads f.bin from h2 and h3, then keeps seeding it on a pinned port.
start leech-h4 4 "$bin/leecher" --tracker "$T4" --timeout 10 --port 7004 --out p1 f.bin
leech4=$PID
# A leecher registers as a partial peer at once; this line comes once the file is in place.
if wait_for "$work/logs/leech-h4.err" 'seeding f.bin; Ctrl-C to stop' 30 "$leech4"; then
    check_download "h4 downloads f.bin from h2 and h3" leech-h4 4 "$work/data/f.bin" \
        "$(v4 2):7002" "$(v4 3):7003"
else
    fail "h4 did not download f.bin and re-seed it within 30 s"
fi

run leech-h4-l 4 30 "$bin/leecher" --tracker "$T4" --timeout 10 --no-seed --out p1 l.bin
[ "$RC" -eq 0 ] || fail "h4's download of l.bin exited $RC"
check_download "h4 downloads l.bin from the loopback-registered seeder on h1" leech-h4-l 4 \
    "$work/data/l.bin" "$(v4 1):7001"

run leech-h5-a 5 30 "$bin/leecher" --tracker "$T4" --timeout 10 --no-seed --out p1 a.bin
[ "$RC" -eq 0 ] || fail "h5's download of a.bin exited $RC"
check_download "--advertise: h5 downloads a.bin from h6's advertised address" leech-h5-a 5 \
    "$work/data/a.bin" "$V4_EXTRA:7006"

# The original seeders leave; h4, which re-seeds, is the only one left.
stop "seeder on h2" "$seed2"
stop "seeder on h3" "$seed3"
for s in seed-h2 seed-h3; do
    grep -q 'unregistered from the tracker' "$work/logs/$s.err" ||
        fail "$s did not unregister from the tracker on Ctrl-C"
done

# h5 is given no tracker: discovery, for a listing and then the download.
run list4-h5 5 20 "$bin/leecher" --list f.bin
if [ "$RC" -eq 0 ] && [ "$(list_seeders f.bin <"$work/logs/list4-h5.out")" = 1 ]; then
    pass "--list by discovery from h5, after h2 and h3 left: f.bin has 1 seeder"
else
    fail "--list by discovery from h5 (status $RC): $(tr '\n' '|' <"$work/logs/list4-h5.out") $(tail -n 2 "$work/logs/list4-h5.err")"
fi
check_peers "peers of f.bin after the seeders left" 5 "$(v4 1)" "$F" "$(v4 4):7004"

run leech-h5 5 30 "$bin/leecher" --timeout 10 --no-seed --out p1 f.bin
[ "$RC" -eq 0 ] || fail "h5's download of f.bin by discovery exited $RC"
if grep -qF "found a tracker at $T4 on the local network" "$work/logs/leech-h5.err"; then
    pass "discovery: the leecher on h5 says it found the tracker at $T4"
else
    fail "discovery: the leecher on h5 does not say it found $T4: $(grep -i tracker "$work/logs/leech-h5.err" | head -n 3)"
fi
check_download "re-seeding: h5 downloads f.bin from h4 alone" leech-h5 5 "$work/data/f.bin" "$(v4 4):7004"

# Discovery can be turned off, by flag and by environment.
run nodisc-flag 5 20 "$bin/leecher" --list --no-discovery
if [ "$RC" -eq 1 ] && grep -q 'did not answer' "$work/logs/nodisc-flag.err" &&
    ! grep -q 'found a tracker' "$work/logs/nodisc-flag.err"; then
    pass "--no-discovery: h5 fails with \"$(tail -n 1 "$work/logs/nodisc-flag.err" | cut -c1-60)...\""
else
    fail "--no-discovery: expected exit 1 and 'did not answer', got $RC: $(tail -n 1 "$work/logs/nodisc-flag.err")"
fi
run nodisc-env 5 20 env P2P_NO_DISCOVERY=1 "$bin/leecher" --list
if [ "$RC" -eq 1 ] && ! grep -q 'found a tracker' "$work/logs/nodisc-env.err"; then
    pass "P2P_NO_DISCOVERY=1: h5 fails without looking on the LAN"
else
    fail "P2P_NO_DISCOVERY=1: expected exit 1 without discovery, got $RC"
fi

# A private swarm's tracker beside the open one (h6, port 6969): discovery with its secret finds
# it and not h1's (which does not open sealed probes), with another secret finds nothing and
# says so, and the open programs above never heard from it.
secret=$("$bin/tracker" --new-secret | head -n 1)
start private-tracker 6 env P2P_SECRET="$secret" "$bin/tracker"
private_tracker=$PID
wait_for "$work/logs/private-tracker.out" '^tracker listening on' 10 "$private_tracker" ||
    fail "the private tracker on h6 did not start"
run private-list 5 20 env P2P_SECRET="$secret" "$bin/leecher" --list
if [ "$RC" -eq 0 ] && grep -qF "found a tracker at $(v4 6):6969 on the local network" \
    "$work/logs/private-list.err" && [ ! -s "$work/logs/private-list.out" ]; then
    pass "private swarm: discovery with the secret finds h6's tracker (empty list), not h1's"
else
    fail "private swarm: discovery with the secret: $RC: $(tail -n 2 "$work/logs/private-list.err")"
fi
other=$("$bin/tracker" --new-secret | head -n 1)
run private-other 5 20 env P2P_SECRET="$other" "$bin/leecher" --list
if [ "$RC" -eq 1 ] && grep -q 'no tracker of this swarm answered' "$work/logs/private-other.err"; then
    pass "private swarm: another secret finds no tracker and says so"
else
    fail "private swarm: another secret: $RC: $(tail -n 2 "$work/logs/private-other.err")"
fi
stop "private tracker on h6" "$private_tracker"

stop "leecher re-seeding on h4" "$leech4"
stop "seeder on h1" "$seed1"
stop "seeder on h6" "$seed6"
stop "IPv4 tracker" "$tracker_pid"

# ==== Phase 2: IPv6 (and IPv4) to a dual-stack tracker ============================================
echo "---- phase 2: IPv6, tracker --listen [::]:6969"
start tracker6 1 "$bin/tracker" --listen "[::]:6969" --interval 1
tracker_pid=$PID
wait_for "$work/logs/tracker6.out" '^tracker listening on \[::\]:6969$' 10 "$tracker_pid" ||
    die "the IPv6 tracker did not start on h1"

start seed6-h2 2 "$bin/seeder" --tracker "$T6" --port 7002 --chunk-size 256K f.bin
seed2=$PID
# h3 reaches the same tracker over IPv4: it must be listed as 10.x.y.3, not ::ffff:10.x.y.3.
start seed6-h3 3 "$bin/seeder" --tracker "$T4" --port 7003 --chunk-size 256K f.bin
seed3=$PID
# h1 over loopback again: ::ffff:127.0.0.1 to this tracker, still loopback.
start seed6-h1 1 "$bin/seeder" --port 7001 l.bin
seed1=$PID
for s in seed6-h2:$seed2 seed6-h3:$seed3 seed6-h1:$seed1; do
    wait_for "$work/logs/${s%:*}.err" 'registered with the tracker' 30 "${s#*:}" ||
        die "${s%:*} did not register with the IPv6 tracker within 30 s"
done
pass "three seeders registered with the dual-stack tracker (h2 over IPv6, h3 over IPv4, h1 over loopback)"

check_peers "IPv6: peers of f.bin" 4 "$(v6 1)" "$F" "[$(v6 2)]:7002" "$(v4 3):7003"
check_peers "IPv6: peers of f.bin, asked over IPv4" 5 "$(v4 1)" "$F" "[$(v6 2)]:7002" "$(v4 3):7003"
check_peers "IPv6: peers of l.bin, asked over IPv6" 4 "$(v6 1)" "$L" "[$(v6 1)]:7001"
check_peers "IPv6: peers of l.bin, asked over IPv4" 5 "$(v4 1)" "$L" "$(v4 1):7001"

run list6-h4 4 20 "$bin/leecher" --tracker "$T6" --list
if [ "$RC" -eq 0 ] && [ "$(list_seeders f.bin <"$work/logs/list6-h4.out")" = 2 ] &&
    [ "$(list_seeders l.bin <"$work/logs/list6-h4.out")" = 1 ]; then
    pass "IPv6: --list from h4 over IPv6: f.bin 2 seeders, l.bin 1"
else
    fail "IPv6: --list from h4 (status $RC): $(tr '\n' '|' <"$work/logs/list6-h4.out")"
fi

run leech6-h4 4 30 "$bin/leecher" --tracker "$T6" --timeout 10 --no-seed --out p2 f.bin
[ "$RC" -eq 0 ] || fail "IPv6: h4's download of f.bin exited $RC"
check_download "IPv6: h4 downloads f.bin over IPv6 and IPv4" leech6-h4 4 "$work/data/f.bin" \
    "[$(v6 2)]:7002" "$(v4 3):7003"

run leech6-h5 5 30 "$bin/leecher" --tracker "$T6" --timeout 10 --no-seed --out p2 l.bin
[ "$RC" -eq 0 ] || fail "IPv6: h5's download of l.bin exited $RC"
check_download "IPv6: h5 downloads l.bin from the loopback-registered seeder on h1" leech6-h5 5 \
    "$work/data/l.bin" "[$(v6 1)]:7001"

# Discovery finds a tracker that listens on [::] too.
run list6-h5 5 20 "$bin/leecher" --list f.bin
if [ "$RC" -eq 0 ] && grep -qF "found a tracker at $T4 on the local network" "$work/logs/list6-h5.err" &&
    [ "$(list_seeders f.bin <"$work/logs/list6-h5.out")" = 2 ]; then
    pass "IPv6: discovery from h5 finds the [::] tracker at $T4; f.bin has 2 seeders"
else
    fail "IPv6: discovery from h5 (status $RC): $(tr '\n' '|' <"$work/logs/list6-h5.out") $(tail -n 2 "$work/logs/list6-h5.err")"
fi

stop "IPv6 seeder on h2" "$seed2"
stop "IPv6 seeder on h3" "$seed3"
stop "IPv6 seeder on h1" "$seed1"
stop "IPv6 tracker" "$tracker_pid"

# No log may show a panic.
if grep -l 'panicked' "$work"/logs/*.err >/dev/null 2>&1; then
    fail "a program panicked: $(grep -l 'panicked' "$work"/logs/*.err | xargs -n1 basename | tr '\n' ' ')"
fi
