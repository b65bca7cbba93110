# Shared by the tests in network namespaces (run.sh, swarm.sh); sourced, not run. Checks what the
# tests need (root, iproute2, coreutils, the binaries: built with `cargo build --bins`, or taken
# from SHOAL_BIN_DIR), keeps the pass/fail count, and removes every namespace, process and file a
# test made on exit (the EXIT trap), then prints `N passed, M failed`.
#
# The sourcing script sets `here` (its folder) and `repo` first, then makes its namespaces with
# names from `ns HOST` (and `$sw` for the switch), adding each to NAMESPACES, and starts programs
# with `start`/`run`, which add them to PIDS and log to $work/logs/NAME.{out,err}.

started=${EPOCHREALTIME/./}

passed=0
failed=0
failures=()
pass() {
    passed=$((passed + 1))
    echo "PASS $*"
}
fail() {
    failed=$((failed + 1))
    failures+=("$*")
    echo "FAIL $*"
}
# Fails the whole run at once (setup went wrong): the EXIT trap cleans up and summarises.
die() {
    fail "$*"
    exit 1
}

# --- What it needs --------------------------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    echo "netns: this test makes network namespaces and must run as root" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
for tool in ip tc; do
    if ! command -v "$tool" >/dev/null; then
        echo "netns: '$tool' is missing; install iproute2 (apt-get install iproute2)" >&2
        echo "0 passed, 1 failed"
        exit 1
    fi
done
for tool in sha256sum timeout od dd unshare mount; do
    command -v "$tool" >/dev/null || {
        echo "netns: '$tool' is missing (coreutils, util-linux)" >&2
        echo "0 passed, 1 failed"
        exit 1
    }
done

if [ -n "${SHOAL_BIN_DIR:-}" ]; then
    bin=$(cd "$SHOAL_BIN_DIR" && pwd) || {
        echo "netns: SHOAL_BIN_DIR=$SHOAL_BIN_DIR is not a directory" >&2
        echo "0 passed, 1 failed"
        exit 1
    }
else
    echo "netns: building the binaries (cargo build --bins)"
    build=(cargo build --bins --quiet)
    # Run through sudo: build as the user who asked, so that target/ gets no files only root can
    # replace (a later `cargo test` as that user would fail on them).
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && command -v sudo >/dev/null; then
        build=(sudo -u "$SUDO_USER" env "PATH=$PATH" "${build[@]}")
    fi
    (cd "$repo" && "${build[@]}") || {
        echo "netns: cargo build failed" >&2
        echo "0 passed, 1 failed"
        exit 1
    }
    bin=${CARGO_TARGET_DIR:-$repo/target}/debug
fi
for b in tracker seeder leecher; do
    [ -x "$bin/$b" ] || {
        echo "netns: no $b binary in $bin" >&2
        echo "0 passed, 1 failed"
        exit 1
    }
done

# --- State, and its removal -----------------------------------------------------------------------
run_id=$(printf '%04x' $((RANDOM)))
while ip netns list | grep -q "^shoal-$run_id-"; do run_id=$(printf '%04x' $((RANDOM))); done
sw=shoal-$run_id-sw
ns() { echo "shoal-$run_id-h$1"; }
NAMESPACES=()
PIDS=()
work=$(mktemp -d "${TMPDIR:-/tmp}/shoal-netns.XXXXXX")


cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # Ask nicely, then make sure: everything still running in our namespaces is ours.
    local pid
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null; done
    local until=$((${EPOCHREALTIME/./} + 3000000))
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((${EPOCHREALTIME/./} < until)); do sleep 0.05; done
    done
    local n left
    for n in "${NAMESPACES[@]}"; do
        left=$(ip netns pids "$n" 2>/dev/null)
        # shellcheck disable=SC2086
        [ -n "$left" ] && kill -KILL $left 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    # Deleting the switch takes the bridge and every veth pair with it.
    for n in "${NAMESPACES[@]}"; do ip netns del "$n" 2>/dev/null; done
    if ip netns list | grep -q "^shoal-$run_id-"; then
        fail "cleanup: namespaces left behind: $(ip netns list | grep "^shoal-$run_id-" | tr '\n' ' ')"
    fi
    if ((failed > 0)) && [ -d "$work" ]; then
        echo
        echo "---- logs ----"
        local f
        for f in "$work"/logs/*; do
            [ -s "$f" ] || continue
            echo "== ${f##*/} (last 25 lines)"
            tail -n 25 "$f"
        done
    fi
    rm -rf "$work"
    local ms=$(((${EPOCHREALTIME/./} - started) / 1000))
    local took="$((ms / 1000)).$(printf '%03d' $((ms % 1000))) s"
    echo
    if ((failed == 0 && rc != 0)); then
        fail "the script itself stopped with status $rc"
    fi
    if ((failed > 0)); then
        echo "netns: FAIL after $took:"
        local f
        for f in "${failures[@]}"; do echo "  - $f"; done
    else
        echo "netns: PASS after $took"
    fi
    echo "$passed passed, $failed failed"
    ((failed == 0)) || exit 1
    exit 0
}
trap cleanup EXIT
trap 'echo "netns: interrupted"; failed=$((failed + 1)); failures+=(interrupted); exit 130' INT
trap 'echo "netns: terminated"; failed=$((failed + 1)); failures+=(terminated); exit 143' TERM

# --- Helpers --------------------------------------------------------------------------------------
now_us() { echo "${EPOCHREALTIME/./}"; }

# wait_for FILE REGEX SECS [PID]: until a line of FILE matches (grep -E); fails when the time is
# up or when process PID has exited without writing it.
wait_for() {
    local file=$1 re=$2 until=$(($(now_us) + $3 * 1000000)) pid=${4:-}
    until grep -qE -- "$re" "$file" 2>/dev/null; do
        (($(now_us) < until)) || return 1
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            grep -qE -- "$re" "$file" 2>/dev/null
            return
        fi
        sleep 0.05
    done
}

# wait_exit PID SECS: until the process has exited; sets RC to its status (or fails).
wait_exit() {
    local pid=$1 until=$(($(now_us) + $2 * 1000000))
    while kill -0 "$pid" 2>/dev/null; do
        (($(now_us) < until)) || return 1
        sleep 0.05
    done
    wait "$pid"
    RC=$?
}

# start NAME HOST CMD ARGS...: runs a command in a host's namespace, in the background, with
# stdout and stderr in logs/NAME.out and logs/NAME.err, and a clean environment: no tracker or
# discovery setting inherited from whoever runs the test. Sets PID.
start() {
    local name=$1 host=$2
    shift 2
    (cd "$work/h$host" && exec ip netns exec "$(ns "$host")" \
        env -u P2P_TRACKER -u P2P_NO_DISCOVERY RUST_LOG=info NO_COLOR=1 "$@" \
        >"$work/logs/$name.out" 2>"$work/logs/$name.err") &
    PID=$!
    PIDS+=("$PID")
}

# run NAME HOST SECS CMD ARGS...: runs to completion (killed after SECS); sets RC.
run() {
    local name=$1 host=$2 secs=$3
    shift 3
    (cd "$work/h$host" && exec ip netns exec "$(ns "$host")" \
        env -u P2P_TRACKER -u P2P_NO_DISCOVERY RUST_LOG=info NO_COLOR=1 timeout -s KILL "$secs" "$@" \
        >"$work/logs/$name.out" 2>"$work/logs/$name.err")
    RC=$?
}

# stop NAME PID: Ctrl-C, and the process must exit 0 within 10 s.
stop() {
    local name=$1 pid=$2
    kill -INT "$pid" 2>/dev/null
    if wait_exit "$pid" 10 && [ "$RC" -eq 0 ]; then
        pass "$name stops cleanly on Ctrl-C"
    else
        fail "$name did not exit 0 within 10 s of Ctrl-C (status ${RC:-none})"
    fi
}


# summary_peers LOG: the ADDR of every `ADDR=N` in a leecher's "chunks per peer:" summary.
summary_peers() {
    sed -n 's/.*chunks per peer: \([^;]*\).*/\1/p' "$1" | tr ' ' '\n' | sed -n 's/=[0-9]*$//p' | sort
}

