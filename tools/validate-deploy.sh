#!/usr/bin/env bash
# Validate deploy/ offline:
#   1. deploy/systemd/ringlog.service with `systemd-analyze verify` (any
#      warning fails: verify exits 0 on unknown keys and bad values);
#   2. the unit's SystemCallFilter= against every system call a real
#      `ringlog serve` makes under strace while it starts, takes records
#      and shuts down (a missing one would be EPERM in production);
#   3. every manifest under deploy/kubernetes/ with kubernetes-validate
#      --strict (schemas ship in the PyPI package: no cluster, no network).
# Each checker is first shown a broken input and must reject it, so a
# checker that passes everything cannot pass CI.
# Installs systemd, strace (apt, needs root) and kubernetes-validate (pip,
# into a venv under the target dir) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$root/target}
unit=deploy/systemd/ringlog.service
work=$(mktemp -d)
node_pid=
cleanup() {
    [[ -n $node_pid ]] && kill "$node_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

say() { echo "validate-deploy: $*"; }
fail() {
    say "FAILED: $*" >&2
    exit 1
}

apt_install() { # package
    [[ $(id -u) -eq 0 ]] || fail "install the $1 package (needs root)"
    say "installing $1"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}

install_apt() { # command package
    command -v "$1" >/dev/null 2>&1 || apt_install "$2"
}

# Prints verify's complaints about the unit at $1 (nothing when clean).
verify_unit() {
    local output status=0
    output=$(systemd-analyze verify "$1" 2>&1) || status=$?
    if grep -F "$(basename "$1")" <<<"$output"; then
        return 0
    fi
    if ((status != 0)); then
        # Not about our unit: the tool itself cannot run here (a container
        # without systemd's directories, no /run/systemd…).
        say "note: systemd-analyze verify cannot run in this environment (exit $status): ${output//$'\n'/ }" >&2
        return 2
    fi
}

check_unit() {
    install_apt systemd-analyze systemd
    cargo build --quiet --bin ringlog
    # verify insists that ExecStart's binary exists: point it at ours.
    mkdir -p "$work/good" "$work/bad"
    sed "s#/usr/local/bin/ringlog#$target/debug/ringlog#" "$unit" >"$work/good/ringlog.service"
    sed 's/^NotifyAccess=/NotifyAcess=/' "$work/good/ringlog.service" >"$work/bad/ringlog.service"
    local complaints status=0
    complaints=$(verify_unit "$work/bad/ringlog.service") || status=$?
    if ((status == 2)); then
        say "systemd unit: NOT verified (see the note above)"
        return 0
    fi
    [[ -n $complaints ]] || fail "systemd-analyze verify accepted a unit with an unknown key"
    complaints=$(verify_unit "$work/good/ringlog.service") || true
    [[ -z $complaints ]] || fail "systemd-analyze verify $unit: $complaints"
    say "systemd unit: systemd-analyze verify clean ($(systemd-analyze --version | head -1))"
    if [[ $(cat /proc/1/comm 2>/dev/null) != systemd ]]; then
        # Type=notify itself is covered by tests/it/ops.rs over a real socket.
        say "note: PID 1 is not systemd here: the unit is verified, not started"
    fi
}

# Every system call name the unit's SystemCallFilter= allows, one a line.
allowed_syscalls() {
    local item
    expand_filter() {
        local entry
        for entry in "$@"; do
            if [[ $entry == @* ]]; then
                # The set's members, with nested sets still named @….
                expand_filter $(systemd-analyze syscall-filter "$entry" | awk 'NR > 1 && $1 !~ /^#/ { print $1 }')
            else
                echo "$entry"
            fi
        done
    }
    ! grep -q '^SystemCallFilter=~' "$unit" || fail "deny lists (SystemCallFilter=~) are not understood here"
    for item in $(sed -n 's/^SystemCallFilter=//p' "$unit"); do
        expand_filter "$item"
    done | sort -u
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

check_syscalls() {
    install_apt strace strace
    local binary=$target/debug/ringlog listen admin deadline strace_pid
    listen=127.0.0.1:$(free_port)
    admin=127.0.0.1:$(free_port)
    strace -f -qq -o "$work/trace" "$binary" serve --data-dir "$work/data" --listen "$listen" \
        --admin "$admin" --kafka-listen "" --shards 2 >"$work/serve.out" 2>"$work/serve.err" &
    strace_pid=$!
    deadline=$((SECONDS + 60))
    until grep -q listening "$work/serve.out"; do
        ((SECONDS < deadline)) || fail "ringlog serve under strace did not start: $(cat "$work/serve.err")"
        sleep 0.2
    done
    node_pid=$(pgrep -P "$strace_pid" -x ringlog)
    "$binary" topic create syscalls --partitions 2 --server "$listen" >/dev/null
    seq 1 1000 | "$binary" produce syscalls --server "$listen" >/dev/null
    "$binary" consume syscalls --server "$listen" >/dev/null
    kill -TERM "$node_pid"
    wait "$strace_pid" || fail "ringlog serve under strace did not shut down cleanly: $(cat "$work/serve.err")"
    node_pid=
    sed -nE 's/^[0-9]+ +(<\.\.\. )?([a-z0-9_]+)[( ].*/\2/p' "$work/trace" | sort -u >"$work/used"
    allowed_syscalls >"$work/allowed"
    [[ $(wc -l <"$work/allowed") -gt 100 ]] || fail "could not expand SystemCallFilter= of $unit"
    grep -qx read "$work/used" || fail "strace recorded no system calls"
    local missing
    missing=$(comm -23 "$work/used" "$work/allowed" | tr '\n' ' ')
    [[ -z $missing ]] || fail "$unit: SystemCallFilter= lacks system calls ringlog makes: $missing"
    say "systemd unit: SystemCallFilter= allows all $(wc -l <"$work/used") system calls a node made"
}

# Sets kubernetes_validate to the validator, installing it if need be.
find_kubernetes_validate() {
    if command -v kubernetes-validate >/dev/null 2>&1; then
        kubernetes_validate=kubernetes-validate
        return
    fi
    local venv=$target/validate-deploy-venv
    if [[ ! -x $venv/bin/kubernetes-validate ]]; then
        say "installing kubernetes-validate (PyPI) into $venv"
        install_apt python3 python3
        python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
        "$venv/bin/pip" install --quiet kubernetes-validate
    fi
    kubernetes_validate=$venv/bin/kubernetes-validate
}

check_manifests() {
    local manifests kubernetes_validate
    find_kubernetes_validate
    mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' | sort)
    ((${#manifests[@]} > 0)) || fail "no manifests under deploy/kubernetes"
    sed 's/replicas: 3/replicas: three/' deploy/kubernetes/statefulset.yaml >"$work/bad.yaml"
    if "$kubernetes_validate" --strict --quiet "$work/bad.yaml" >/dev/null 2>&1; then
        fail "kubernetes-validate accepted replicas: three"
    fi
    "$kubernetes_validate" --strict --quiet "${manifests[@]}" || fail "kubernetes manifests"
    say "kubernetes: ${#manifests[@]} manifests valid ($("$kubernetes_validate" --version))"
}

check_unit
check_syscalls
check_manifests
say "all checks passed"
