#!/usr/bin/env bash
# Asks a shoal tracker for the peers of one file, the way a leecher does, and prints them one per
# line (`IP:PORT`, IPv6 as `[IP]:PORT`, both as Rust displays them). Used by run.sh to see exactly
# the peer list a host is handed. Plain bash: a connected UDP socket from /dev/udp, hand-encoded
# postcard datagrams (the layout of crates/proto/src/tracker.rs).
#
# usage: tracker_peers.sh TRACKER_IP TRACKER_PORT FILE_ID_HEX
# Exits 1 if the tracker does not answer (three tries, one second each) or answers oddly.
set -uo pipefail

ip=$1 port=$2 id=$3
[[ $id =~ ^[0-9a-f]{64}$ ]] || { echo "tracker_peers: bad file id $id" >&2; exit 2; }

# Bytes are kept as arrays of two-digit hex strings.
magic=(53 48 54 32) # "SHT2": the tracker protocol, version 2

varint() { # n -> hex bytes (postcard's unsigned LEB128)
    local n=$1 out=()
    while ((n >= 128)); do
        out+=("$(printf '%02x' $(((n & 127) | 128)))")
        n=$((n >> 7))
    done
    out+=("$(printf '%02x' "$n")")
    echo "${out[*]}"
}

exec 3<>"/dev/udp/$ip/$port" || exit 1

# Sends the hex bytes given and reads replies until one echoes `txn`; sets REPLY_BYTES to what
# follows the magic and the transaction id.
exchange() {
    local txn=$1
    shift
    local out="" b
    for b in "$@"; do out+="\\x$b"; done
    local try reply
    for try in 1 2 3; do
        # One write, one datagram: printf alone would flush at each newline byte.
        printf "$out" | dd bs=4096 iflag=fullblock status=none >&3
        local deadline=$((${EPOCHREALTIME/./} + 1000000))
        while ((${EPOCHREALTIME/./} < deadline)); do
            # One read is one datagram.
            reply=$(timeout 1 dd bs=2048 count=1 status=none <&3 | od -An -v -tx1 | tr "\n" " ") || break
            read -ra bytes <<<"$reply"
            ((${#bytes[@]} >= 5)) || continue
            [[ "${bytes[*]:0:4}" == "${magic[*]}" ]] || continue
            # Decode the transaction id.
            local i=4 shift_=0 val=0
            while :; do
                local x=$((16#${bytes[i]}))
                val=$((val | ((x & 127) << shift_)))
                i=$((i + 1))
                ((x & 128)) || break
                shift_=$((shift_ + 7))
            done
            ((val == txn)) || continue
            REPLY_BYTES=("${bytes[@]:i}")
            return 0
        done
    done
    return 1
}

txn=$((RANDOM * 32768 + RANDOM))
# Connect { padding: [0; 24] } with connection id 0.
zeros=()
for _ in $(seq 24); do zeros+=(00); done
exchange "$txn" "${magic[@]}" $(varint "$txn") 00 00 "${zeros[@]}" ||
    { echo "tracker_peers: no answer from $ip:$port" >&2; exit 1; }
[[ ${REPLY_BYTES[0]} == 00 ]] || { echo "tracker_peers: no connection id" >&2; exit 1; }
conn=("${REPLY_BYTES[@]:1}")

# GetPeers { file } is variant 4.
idbytes=()
for ((k = 0; k < 64; k += 2)); do idbytes+=("${id:k:2}"); done
txn=$((txn + 1))
exchange "$txn" "${magic[@]}" $(varint "$txn") "${conn[@]}" 04 "${idbytes[@]}" ||
    { echo "tracker_peers: no answer to get-peers" >&2; exit 1; }
r=("${REPLY_BYTES[@]}")
[[ ${r[0]} == 03 ]] || { echo "tracker_peers: unexpected reply ${r[*]}" >&2; exit 1; }

# An IPv6 address from its eight groups, as Rust (and RFC 5952) writes it: lowercase hex without
# leading zeros, the longest run of two or more zero groups as "::", IPv4-mapped as ::ffff:a.b.c.d.
v6_text() {
    local g=("$@") k
    if [[ "${g[*]:0:6}" == "0 0 0 0 0 65535" ]]; then
        echo "::ffff:$((g[6] >> 8)).$((g[6] & 255)).$((g[7] >> 8)).$((g[7] & 255))"
        return
    fi
    local best=-1 best_len=1 run_start=-1
    for ((k = 0; k <= 8; k++)); do
        if ((k < 8 && g[k] == 0)); then
            ((run_start < 0)) && run_start=$k
        elif ((run_start >= 0)); then
            if ((k - run_start > best_len)); then best=$run_start best_len=$((k - run_start)); fi
            run_start=-1
        fi
    done
    local out="" sep=""
    for ((k = 0; k < 8; k++)); do
        if ((best >= 0 && k == best)); then
            out+="::"
            sep=""
            k=$((best + best_len - 1))
            continue
        fi
        out+="$sep$(printf '%x' "${g[k]}")"
        sep=":"
    done
    echo "$out"
}

# Peers { interval_secs: varint, peers: Vec<SocketAddr> }.
i=1
read_varint() {
    local shift_=0 x
    VAL=0
    while :; do
        x=$((16#${r[i]}))
        VAL=$((VAL | ((x & 127) << shift_)))
        i=$((i + 1))
        ((x & 128)) || break
        shift_=$((shift_ + 7))
    done
}
read_varint # interval
read_varint
count=$VAL
for ((n = 0; n < count; n++)); do
    family=${r[i]}
    i=$((i + 1))
    if [[ $family == 00 ]]; then
        addr="$((16#${r[i]})).$((16#${r[i + 1]})).$((16#${r[i + 2]})).$((16#${r[i + 3]}))"
        i=$((i + 4))
        read_varint
        echo "$addr:$VAL"
    else
        g=()
        for ((k = 0; k < 16; k += 2)); do g+=($((16#${r[i + k]}${r[i + k + 1]}))); done
        i=$((i + 16))
        read_varint
        echo "[$(v6_text "${g[@]}")]:$VAL"
    fi
done
