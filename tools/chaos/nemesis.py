#!/usr/bin/env python3
"""Nemesis run against real processes: one etcd, three `ringlog serve` nodes,
idempotent acks=all producers, a tailing consumer and a group consumer, and
faults chosen by a seeded RNG. At the end everything is healed, the cluster
is given a settle period and a checker verifies the invariants listed in
docs/RELIABILITY.md. Exit 0 when no anomaly was found, 1 otherwise (the seed
and the fault schedule are printed), 2 on a harness/setup error.

Stdlib only. Everything listens on 127.0.0.1; every subprocess and every wait
is bounded; every process started is killed at exit (also on Ctrl-C)."""

import argparse
import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import rootfaults

TOPIC = "ledger"          # no retention: every acknowledged record must stay
ROLLING = "rolling"       # small segments + size retention: segments get cut
SCRATCH = "scratch"       # deleted and created again by the nemesis
PROBE = "probe"           # written by the disk-full fault's probes only (not checked)
PARTITIONS = 3
LEASE_TTL_S = 2

T0 = time.monotonic()


def now():
    return time.monotonic() - T0


def log(message):
    print(f"[{now():8.2f}s] {message}", flush=True)


# --------------------------------------------------------------------------
# process bookkeeping: every child is in its own process group and is killed
# at exit, whatever the exit path.

CHILDREN = []  # Popen objects still running (or not yet reaped)
CHILDREN_LOCK = threading.Lock()
SHUTTING_DOWN = threading.Event()


SPAWN_WRAP = None  # set when root faults are on: long-lived helpers join the run's "others" cgroup


def spawn(args, wrapped=False, **kwargs):
    """Start a child in its own process group. Unless `wrapped` (a node,
    already in its own cgroup), a root run puts it in the run's "others"
    cgroup, so that a harness killed with SIGKILL leaves nothing that the
    next run's stale cleanup cannot find and end."""
    if SPAWN_WRAP is not None and not wrapped:
        args = SPAWN_WRAP(args)
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    with CHILDREN_LOCK:
        # Forget reaped children (their pipes are closed by whoever read them).
        CHILDREN[:] = [proc for proc in CHILDREN if proc.returncode is None]
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)
        CHILDREN.append(proc)
    return proc


def close_pipes(proc):
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


def kill_all_children():
    SHUTTING_DOWN.set()
    with CHILDREN_LOCK:
        procs = list(CHILDREN)
    for proc in procs:
        if proc.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


CLEANUPS = []  # run once at exit, after every child is dead: rules, cgroups, mounts
CLEANUPS_LOCK = threading.Lock()


def shutdown():
    """Kill every child, then undo what the run set up in the kernel
    (partition rules, cgroups, loop mounts), whatever the exit path."""
    kill_all_children()
    with CLEANUPS_LOCK:
        pending = list(reversed(CLEANUPS))
        CLEANUPS.clear()
    for cleanup in pending:
        try:
            cleanup()
        except Exception as error:  # keep going: the next cleanup matters as much
            print(f"chaos: cleanup {cleanup.__qualname__} failed: {error}", file=sys.stderr, flush=True)


atexit.register(shutdown)


def _on_signal(signum, _frame):
    log(f"signal {signum}: killing every process started, healing and exiting")
    shutdown()
    os._exit(130)


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http_json(url, method="GET", timeout=2.0):
    """(status, parsed body or None); status 0 when unreachable."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = answer.read()
            return answer.status, (json.loads(body) if body else None)
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"null")
        except Exception:
            return error.code, None
    except Exception:
        return 0, None


def wait_until(what, seconds, condition, interval=0.2):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except Exception:
            pass
        time.sleep(interval)
    log(f"timed out after {seconds}s waiting for {what}")
    return False


# --------------------------------------------------------------------------
# a TCP proxy the harness controls: used between each node and etcd, so a
# node can be cut off from etcd (connections hang, as in a partition).

class Proxy:
    def __init__(self, name, upstream_port):
        self.name = name
        self.upstream = ("127.0.0.1", upstream_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.closed = False
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        # While cut, a new connection is accepted but nothing is forwarded.
        self.open.wait()
        try:
            upstream = socket.create_connection(self.upstream, timeout=2)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        pair = (client, upstream)
        with self.lock:
            self.conns.append(pair)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b, pair), daemon=True).start()

    def _pump(self, source, sink, pair):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                self.open.wait()  # a cut holds bytes back, as a dropped link does
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            if pair in self.conns:  # the first pump to finish closes both ends
                self.conns.remove(pair)
                for s in pair:
                    s.close()

    def cut(self):
        self.open.clear()

    def heal(self):
        self.open.set()

    def close(self):
        self.closed = True
        self.open.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for a, b in self.conns:
                for s in (a, b):
                    try:
                        s.close()
                    except OSError:
                        pass


# --------------------------------------------------------------------------

class Etcd:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "etcd")
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc = None
        self.stopped = False
        self.logfile = os.path.join(workdir, "logs", "etcd.log")

    def start(self):
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        out = open(self.logfile, "ab")
        self.proc = spawn(["etcd", "--name", "chaos", "--data-dir", self.dir,
                           "--listen-client-urls", client, "--advertise-client-urls", client,
                           "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                           "--initial-cluster", f"chaos={peer}"], stdout=out, stderr=out)
        out.close()
        self.stopped = False
        if not wait_until("etcd health", 30,
                          lambda: http_json(f"{client}/health")[0] == 200):
            raise SystemExit("chaos: etcd did not start")

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Node:
    def __init__(self, index, workdir, binary, etcd_proxy, host="127.0.0.1", data_dir=None, wrap=None):
        self.index = index
        self.name = f"n{index + 1}"
        self.binary = binary
        self.data_dir = data_dir or os.path.join(workdir, self.name)
        self.config = os.path.join(workdir, "node.toml")
        self.host = host
        self.client = f"{host}:{free_port(host)}"
        self.admin = f"{host}:{free_port(host)}"
        self.replication = f"{host}:{free_port(host)}"
        self.wrap = wrap or (lambda argv: argv)  # runs the node in its cgroup when partitions are on
        self.proxy = etcd_proxy
        self.logfile = os.path.join(workdir, "logs", f"{self.name}.log")
        self.proc = None
        self.incarnation = 0
        self.stopped = False
        self.expected_down = True

    def start(self):
        if self.alive():
            log(f"{self.name} already running: not started twice")
            return
        os.makedirs(self.data_dir, exist_ok=True)
        out = open(self.logfile, "ab")
        out.write(f"\n==== chaos: start incarnation {self.incarnation + 1} at {now():.2f}s\n".encode())
        out.flush()
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn,ringlog::cluster=info,ringlog::replication=info"))
        self.proc = spawn(self.wrap([self.binary, "serve", "--config", self.config, "--data-dir", self.data_dir,
                                     "--listen", self.client, "--admin", self.admin,
                                     "--replication-listen", self.replication, "--kafka-listen", "", "--shards", "1",
                                     "--etcd", f"http://127.0.0.1:{self.proxy.port}"]),
                          stdout=out, stderr=out, env=env, wrapped=True)
        out.close()
        self.incarnation += 1
        self.stopped = False
        self.expected_down = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        self.expected_down = True
        if self.alive():
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.stopped = False

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)
            self.stopped = sig == signal.SIGSTOP

    def health(self, timeout=1.0):
        return http_json(f"http://{self.admin}/api/health", timeout=timeout)

    def node_id(self):
        try:
            with open(os.path.join(self.data_dir, "node_id")) as f:
                return int(f.read().strip())
        except Exception:
            return None


# --------------------------------------------------------------------------
# workloads

class Producer:
    """One `ringlog produce --partition P --acks all --json` at a time per
    partition; a process that exits is replaced (new producer id). Values are
    unique; the k-th acknowledged record is the k-th line written, since the
    CLI sends one batch at a time in stdin order."""

    def __init__(self, harness, topic, partition, rate):
        self.h = harness
        self.topic = topic
        self.partition = partition
        self.rate = rate  # records per second
        self.acked = {}        # offset -> value
        self.ack_events = 0
        self.indeterminate = set()  # written but never acknowledged (process died)
        self.written = set()
        self.generation = 0
        self.failures = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            self.generation += 1
            self._one_process()
            if not self.stop.is_set():
                time.sleep(0.5)

    def _one_process(self):
        gen = self.generation
        servers = ",".join(n.client for n in self.h.nodes)
        errfile = open(os.path.join(self.h.workdir, "logs", f"produce-{self.topic}-{self.partition}-{gen}.err"), "wb")
        proc = spawn([self.h.binary, "produce", self.topic, "--partition", str(self.partition), "--acks", "all",
                      "--json", "--batch", "10", "--retry-ms", "20000", "--server", servers],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errfile)
        errfile.close()
        lines = []        # values written to this process, in order
        acked_upto = [0]  # how many of them are acknowledged
        lock = threading.Lock()

        def reader():
            for raw in proc.stdout:
                try:
                    ack = json.loads(raw)
                except ValueError:
                    continue
                with lock:
                    base, count = ack["base_offset"], ack["count"]
                    if ack["partition"] != self.partition:
                        self.h.anomaly("producer", f"{self.topic}/{self.partition}: ack for partition {ack['partition']}")
                    for i in range(count):
                        value = lines[acked_upto[0] + i]
                        offset = base + i
                        previous = self.acked.get(offset)
                        if previous is not None and previous != value:
                            self.h.anomaly("ack", f"{self.topic}/{self.partition}: offset {offset} acknowledged "
                                                  f"twice, for {previous!r} and for {value!r}")
                        self.acked[offset] = value
                    acked_upto[0] += count
                    self.ack_events += 1
        rt = threading.Thread(target=reader, daemon=True)
        rt.start()
        seq = 0
        interval = 10.0 / self.rate
        try:
            while not self.stop.is_set() and proc.poll() is None:
                with lock:
                    outstanding = len(lines) - acked_upto[0]
                if outstanding < 100:
                    chunk = []
                    for _ in range(10):
                        value = f"{self.topic[0]}{self.partition}-g{gen}-{seq:07d}-" + "x" * 40
                        seq += 1
                        chunk.append(value)
                    with lock:
                        lines.extend(chunk)
                        self.written.update(chunk)
                    proc.stdin.write(("\n".join(chunk) + "\n").encode())
                    proc.stdin.flush()
                time.sleep(interval)
        except (BrokenPipeError, OSError):
            pass
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=40)  # flush what is pending (bounded by --retry-ms)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        rt.join(timeout=10)
        close_pipes(proc)
        with lock:
            rest = lines[acked_upto[0]:]
        self.indeterminate.update(rest)
        if proc.returncode != 0:
            errpath = os.path.join(self.h.workdir, "logs", f"produce-{self.topic}-{self.partition}-{gen}.err")
            try:
                with open(errpath, errors="replace") as f:
                    err = f.read().strip().splitlines()[-1:]
            except OSError:
                err = []
            self.failures.append((now(), proc.returncode, err[0] if err else "", len(rest)))
            if err and "storage_failed" in err[0]:
                # Nothing here injects an I/O error: a full disk must answer
                # disk_full and resume, never fail-stop (SPEC §4).
                self.h.anomaly("failstop", f"producer {self.topic}/{self.partition}: {err[0]}")
            log(f"producer {self.topic}/{self.partition} gen {gen} exited {proc.returncode}: "
                f"{err[0] if err else ''} ({len(rest)} records unacknowledged)")


class ScratchProducer:
    """Small acks=all produce calls to SCRATCH, which the nemesis deletes and
    creates again. A call and a delete/create never overlap (self.h.scratch_lock),
    so an ack belongs to the incarnation current at the time. Records of an
    earlier incarnation must never show up in a later one."""

    def __init__(self, harness):
        self.h = harness
        self.incarnation = 1
        self.acked = {}      # offset -> value, current incarnation only
        self.written = set()
        self.indeterminate = set()
        self.failures = []
        self.calls = 0
        self.failed_calls = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def recreated(self):
        self.incarnation += 1
        self.acked = {}

    def _run(self):
        seq = 0
        while not self.stop.is_set():
            with self.h.scratch_lock:
                values = [f"s-i{self.incarnation}-{seq + i:07d}" for i in range(50)]
                seq += 50
                self.written.update(values)
                servers = ",".join(n.client for n in self.h.nodes)
                self.calls += 1
                try:
                    result = subprocess.run([self.h.binary, "produce", SCRATCH, "--partition", "0", "--acks", "all",
                                             "--json", "--batch", "10", "--retry-ms", "5000", "--server", servers],
                                            input=("\n".join(values) + "\n").encode(), capture_output=True,
                                            timeout=20)
                    lines = result.stdout.decode().splitlines()
                    ok = result.returncode == 0
                except subprocess.TimeoutExpired:
                    lines, ok = [], False
                if not ok:
                    self.failed_calls += 1
                index = 0
                for line in lines:
                    try:
                        ack = json.loads(line)
                    except ValueError:
                        continue
                    for i in range(ack["count"]):
                        self.acked[ack["base_offset"] + i] = values[index + i]
                    index += ack["count"]
            time.sleep(0.3)


class Consumer:
    """A tailing (`--follow`) consumer of one partition, or a group consumer
    (`--group`, committing). Records every (offset, value) it saw; replaced
    when it exits (from the next offset, or from the group's commit)."""

    def __init__(self, harness, topic, partition, group=None):
        self.h = harness
        self.topic = topic
        self.partition = partition
        self.group = group
        self.seen = {}          # offset -> value
        self.runs = []          # (start_time, first offset seen, last offset seen)
        self.last = -1
        self.stop = threading.Event()
        self.proc = None
        self.redelivered = 0
        self.rewinds = []       # (time, resumed at, had seen up to): a group resuming below what it committed
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def kill(self):
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def _run(self):
        while not self.stop.is_set():
            self._one_process()
            if not self.stop.is_set():
                time.sleep(0.5 if self.h.args.consumers == "follow" else 0.2)

    def _one_process(self):
        servers = ",".join(n.client for n in self.h.nodes)
        args = [self.h.binary, "consume", self.topic, "--partition", str(self.partition),
                "--format", "json", "--server", servers]
        if self.h.args.consumers == "follow":
            args.append("--follow")
        if self.group:
            args += ["--group", self.group]
        else:
            args += ["--from", str(self.last + 1)]
        kind = "group" if self.group else "tail"
        errpath = os.path.join(self.h.workdir, "logs", f"consume-{kind}-{self.topic}-{self.partition}.err")
        errfile = open(errpath, "ab")
        self.proc = proc = spawn(args, stdout=subprocess.PIPE, stderr=errfile)
        errfile.close()
        first = None
        previous = None
        for raw in proc.stdout:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            offset, value = record["offset"], record.get("value", record.get("value_b64"))
            if first is None:
                first = offset
                if self.group and offset <= self.last:
                    self.rewinds.append((now(), offset, self.last))
                if self.group and offset > self.last + 1:
                    self.h.anomaly("group", f"{self.topic}/{self.partition} group {self.group}: resumed at "
                                            f"{offset} after seeing up to {self.last}: offsets "
                                            f"{self.last + 1}..{offset - 1} skipped")
                if not self.group and offset != self.last + 1 and self.topic != ROLLING:
                    self.h.anomaly("tail", f"{self.topic}/{self.partition}: asked from {self.last + 1}, "
                                           f"first record at {offset}")
            elif offset != previous + 1:
                self.h.anomaly(kind, f"{self.topic}/{self.partition}: offset {offset} after {previous} "
                                     f"(gap or going backwards) within one consumer run")
            previous = offset
            old = self.seen.get(offset)
            if old is not None:
                if old != value:
                    self.h.anomaly(kind, f"{self.topic}/{self.partition}: offset {offset} was {old!r}, "
                                         f"now {value!r}: a record changed")
                else:
                    self.redelivered += 1
            self.seen[offset] = value
            self.last = max(self.last, offset)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        close_pipes(proc)
        self.runs.append((now(), first, previous, proc.returncode))


class Sampler:
    """Polls every node's /api/health and /api/topics/NAME: the high
    watermark a node serves must never fall while the process lives, and a
    new leader must not serve less than an earlier leader committed."""

    def __init__(self, harness):
        self.h = harness
        self.stop = threading.Event()
        self.hw = {}            # (node, incarnation, topic, partition) -> hw
        self.reported = set()
        self.leader_hw = {}     # (topic, partition) -> (hw, epoch, node)
        self.samples = 0
        self.leaders_seen = []  # (time, node name, epoch)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            for node in self.h.nodes:
                if not node.alive() or node.stopped:
                    continue
                self.sample(node)
            time.sleep(0.2)

    def sample(self, node):
        incarnation = node.incarnation
        status, before = node.health(timeout=0.5)
        if not isinstance(before, dict):
            return
        reason = str(before.get("reason", ""))
        failed = [part for part in reason.split("; ") if part.split("/")[0] in (TOPIC, ROLLING, SCRATCH, PROBE)]
        if before.get("status") == "failed" and failed and (node.name, incarnation) not in self.reported:
            # No fault here injects an I/O error: a fail-stopped partition
            # (e.g. a full disk taken for a failed write) is a defect.
            self.reported.add((node.name, incarnation))
            self.h.anomaly("failstop", f"{node.name} (run {incarnation}) /api/health: {'; '.join(failed)}")
        for topic in (TOPIC, ROLLING):
            status, described = http_json(f"http://{node.admin}/api/topics/{topic}", timeout=0.5)
            if status != 200 or not isinstance(described, dict):
                continue
            status, after = node.health(timeout=0.5)
            if not isinstance(after, dict) or node.incarnation != incarnation:
                return
            self.samples += 1
            leading = (before.get("role") == "leader" and after.get("role") == "leader"
                       and before.get("leader_epoch") == after.get("leader_epoch")
                       and before.get("status") == "ok")
            if leading and (not self.leaders_seen or self.leaders_seen[-1][1:] != (node.name, before.get("leader_epoch"))):
                self.leaders_seen.append((now(), node.name, before.get("leader_epoch")))
            for p in described.get("partitions", []):
                key = (node.name, incarnation, topic, p["partition"])
                hw = p["high_watermark"]
                if hw is None:
                    # null: not re-established yet after a restart or a
                    # leader change; nothing is shown to consumers.
                    continue
                old = self.hw.get(key)
                if old is not None and hw < old and key not in self.reported:
                    self.reported.add(key)
                    self.h.anomaly("hw", f"{node.name} (run {incarnation}, {before.get('role')}, epoch "
                                         f"{before.get('leader_epoch')}) {topic}/{p['partition']}: high "
                                         f"watermark fell from {old} to {hw}")
                self.hw[key] = max(hw, old or 0)
                if leading:
                    lk = (topic, p["partition"])
                    epoch = before.get("leader_epoch")
                    prev = self.leader_hw.get(lk)
                    if prev is not None and epoch is not None and prev[1] is not None and epoch > prev[1] \
                            and hw < prev[0] and (lk, epoch) not in self.reported:
                        self.reported.add((lk, epoch))
                        # Its own kind: anomaly G (docs/RELIABILITY.md), open.
                        self.h.anomaly("hw_term", f"{topic}/{p['partition']}: new leader {node.name} (epoch {epoch}) "
                                             f"serves high watermark {hw}, below {prev[0]} served by leader "
                                             f"{prev[2]} (epoch {prev[1]})")
                    if prev is None or hw > prev[0] or (epoch or 0) > (prev[1] or 0):
                        self.leader_hw[lk] = (max(hw, prev[0] if prev else 0), epoch, node.name)


# --------------------------------------------------------------------------
# the fault schedule: generated up front from the seed alone, so the same
# seed replays the same schedule (which node is "the leader" is resolved at
# run time and logged).

FAULTS = [
    # kind, weight
    ("kill_leader", 4),
    ("kill_follower", 4),
    ("stop_leader", 3),
    ("stop_follower", 3),
    ("stop_etcd", 2),
    ("kill_etcd", 1),
    ("cut_leader_etcd", 2),
    ("cut_follower_etcd", 2),
    ("kill_all", 1),
    ("replace_follower_disk", 1),
    ("kill_group_consumer", 1),
    ("recreate_topic", 1),
    ("partition_leader", 3),
    ("partition_follower", 2),
    ("partition_one_way", 2),
    ("disk_full_leader", 2),
    ("disk_full_follower", 2),
    ("forget_rejoin_follower", 1),
]

# Kinds that need root (iptables, cgroups, loop mounts): left out of the
# default draw when the harness cannot inject them, refused when asked for.
ROOT_FAULTS = {"partition_leader", "partition_follower", "partition_one_way", "disk_full_leader",
               "disk_full_follower"}


def make_schedule(seed, seconds, only=None, overlap=0.5, max_concurrent=3):
    """Start times, kinds, durations and picks, from the seed alone: each
    allowed kind once (seeded order), then drawn by weight. With
    probability `overlap` a fault starts 1-6 s after the previous one
    started, whether or not it is over (so two or three can be active at
    once, never more than `max_concurrent`); otherwise 1-6 s after every
    active fault ended."""
    rng = random.Random(seed)
    schedule = []
    t = 4.0
    ends = []
    kinds = [k for k, _ in FAULTS if not only or k in only]
    weights = [w for k, w in FAULTS if not only or k in only]
    # Every kind once first, in a seeded order, so that a short run (CI's)
    # injects each kind it may draw; then by weight.
    first = rng.sample(kinds, len(kinds))
    while True:
        gap = rng.uniform(1.0, 6.0)
        kind = first[len(schedule)] if len(schedule) < len(first) else rng.choices(kinds, weights)[0]
        duration = round(rng.choice([rng.uniform(0.2, 1.5), rng.uniform(1.5, 4.0), rng.uniform(4.0, 9.0)]), 2)
        pick = rng.randrange(1 << 30)
        overlapping = rng.random() < overlap
        t = t + gap if overlapping or not ends else max(ends) + gap
        ends = [end for end in ends if end > t]
        while len(ends) >= max_concurrent:
            t = min(ends)
            ends = [end for end in ends if end > t]
        if t + duration > seconds:
            break
        schedule.append({"id": len(schedule), "at": round(t, 2), "kind": kind, "duration": duration, "pick": pick})
        ends.append(t + duration)
    return schedule


def max_overlap(schedule):
    """The largest number of scheduled faults active at one time."""
    edges = sorted([(f["at"], 1) for f in schedule] + [(f["at"] + f["duration"], -1) for f in schedule])
    active = best = 0
    for _, step in edges:
        active += step
        best = max(best, active)
    return best


class Harness:
    def __init__(self, args):
        self.args = args
        self.binary = args.binary
        self.workdir = args.workdir or tempfile.mkdtemp(prefix="ringlog-chaos-")
        os.makedirs(os.path.join(self.workdir, "logs"), exist_ok=True)
        self.anomalies = []
        self.anomaly_lock = threading.Lock()
        self.executed = []   # (time, description)
        self.etcd = None
        self.nodes = []
        self.proxies = []
        self.forgotten = []
        self.scratch_lock = threading.Lock()
        self.scratch = None
        self.busy = {}       # resource claimed by a running fault -> fault id
        self.busy_lock = threading.Lock()
        self.network = None  # rootfaults.Network when partitions can be injected
        self.disks = None    # rootfaults.Disks when full disks can be injected
        self.probe_answers = {}  # disk-full probe answer -> count

    def anomaly(self, kind, message):
        with self.anomaly_lock:
            if len(self.anomalies) < 10000:
                self.anomalies.append((now(), kind, message))
        log(f"ANOMALY [{kind}] {message}")

    # ---- cluster
    def write_config(self):
        with open(os.path.join(self.workdir, "node.toml"), "w") as f:
            f.write(f"""
[storage]
segment_bytes = 262144
index_interval_bytes = 4096
preallocate_bytes = 1048576
max_batch_bytes = 32768

[limits]
retention_check_interval_ms = 1000
max_record_bytes = 16384

[cluster]
lease_ttl_s = {LEASE_TTL_S}
election_poll_interval_ms = 100
etcd_request_timeout_ms = 1000
replica_lag_max_ms = 5000
min_insync_replicas = 2
""")

    def start_cluster(self):
        self.write_config()
        global SPAWN_WRAP
        names = [f"n{i + 1}" for i in range(3)]
        if self.args.root_faults:
            # Cleanups are registered before each setup step, so a failure
            # half-way still undoes what was done.
            self.network = rootfaults.Network(names, extra_cgroups=["others"])
            with CLEANUPS_LOCK:
                CLEANUPS.append(self.network.cleanup)
            self.network.setup()
            SPAWN_WRAP = lambda argv: self.network.wrap("others", argv)  # noqa: E731
            self.disks = rootfaults.Disks(self.workdir, names, self.args.disk_mb)
            with CLEANUPS_LOCK:
                CLEANUPS.append(self.disks.cleanup)
            self.disks.setup()
        self.etcd = Etcd(self.workdir)
        self.etcd.start()
        if self.network is not None:
            log(f"nodes on {', '.join(self.network.addresses.values())} (cgroups {self.network.cgroup_name}, "
                f"iptables chain {self.network.chain}); data directories on {self.args.disk_mb} MiB loop-mounted ext4")
        for i, name in enumerate(names):
            proxy = Proxy(f"{name}-etcd", self.etcd.client_port)
            self.proxies.append(proxy)
            if self.network is not None:
                self.nodes.append(Node(i, self.workdir, self.binary, proxy, host=self.network.addresses[name],
                                       data_dir=self.disks.data_dir(name),
                                       wrap=lambda argv, name=name: self.network.wrap(name, argv)))
            else:
                self.nodes.append(Node(i, self.workdir, self.binary, proxy))
        # First node alone, so it becomes the first leader, then the others.
        self.nodes[0].start()
        if not wait_until("n1 leading", 30, lambda: not self.nodes[0].alive()
                          or self.nodes[0].health()[1]["role"] == "leader") or not self.nodes[0].alive():
            with open(self.nodes[0].logfile, errors="replace") as f:
                tail = f.read().strip().splitlines()[-3:]
            raise SystemExit(f"chaos: the first node did not become leader: {' | '.join(tail)}")
        for node in self.nodes[1:]:
            node.start()
        if not wait_until("all three in sync", 60, lambda: self.all_in_sync()):
            raise SystemExit("chaos: the cluster did not form")
        leader = self.leader()
        for name, extra in ((TOPIC, ["--partitions", str(PARTITIONS)]),
                            (ROLLING, ["--partitions", "1", "--segment-bytes", "32768",
                                       "--retention-bytes", "131072"]),
                            (SCRATCH, ["--partitions", "1"]),
                            (PROBE, ["--partitions", "1", "--segment-bytes", "32768"])):
            result = subprocess.run([self.binary, "topic", "create", name, *extra, "--server", leader.client],
                                    capture_output=True, timeout=30)
            if result.returncode != 0:
                raise SystemExit(f"chaos: topic create {name}: {result.stderr.decode().strip()}")
        wait_until("topics on every node", 20, lambda: all(
            http_json(f"http://{n.admin}/api/topics/{ROLLING}")[0] == 200 for n in self.nodes))

    def create_scratch(self):
        """Create SCRATCH (again); retried while there is no leader. True once it exists."""
        servers = ",".join(n.client for n in self.nodes)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            result = subprocess.run([self.binary, "topic", "create", SCRATCH, "--partitions", "1",
                                     "--server", servers], capture_output=True, timeout=30)
            if result.returncode == 0 or b"exists" in result.stderr:
                return True
            time.sleep(0.5)
        return False

    def leader(self):
        for node in self.nodes:
            if node.alive() and not node.stopped:
                status, body = node.health(timeout=1.0)
                if isinstance(body, dict) and body.get("role") == "leader" and body.get("status") == "ok":
                    return node
        return None

    def nodes_view(self):
        leader = self.leader()
        if leader is None:
            return None
        status, body = http_json(f"http://{leader.admin}/api/nodes", timeout=2.0)
        return body if status == 200 and isinstance(body, list) else None

    def all_in_sync(self):
        view = self.nodes_view()
        return (view is not None and len(view) == 3
                and all(entry.get("in_sync") and entry.get("connected") for entry in view))

    # ---- faults
    # Faults run in threads of their own and may overlap. A fault claims what
    # it acts on ("proc:n2", "disk:n2", "etcdlink:n2", "etcd", ...) for its
    # whole duration, so two faults never fight over one thing (two restarts
    # of one node, a heal that lifts another fault's cut); a fault whose
    # target is claimed picks another one, or is skipped and says so.

    def claim(self, fault_id, resources):
        with self.busy_lock:
            if any(resource in self.busy for resource in resources):
                return False
            for resource in resources:
                self.busy[resource] = fault_id
            return True

    def release(self, fault_id):
        with self.busy_lock:
            for resource in [r for r, owner in self.busy.items() if owner == fault_id]:
                del self.busy[resource]

    def claim_node(self, fault_id, role, pick, needs):
        """The leader, or a follower chosen by `pick` among those whose
        `needs` are free, claimed for this fault; None if there is none."""
        leader = self.leader()
        live = [n for n in self.nodes if n.alive() and not n.stopped]
        if role == "leader":
            candidates = [leader] if leader is not None else live[pick % len(live):][:1] if live else []
        else:
            candidates = [n for n in live if n is not leader]
        free = [n for n in candidates if not any(f"{need}:{n.name}" in self.busy for need in needs)]
        for offset in range(len(free)):
            node = free[(pick + offset) % len(free)]
            if self.claim(fault_id, [f"{need}:{node.name}" for need in needs]):
                return node, leader
        return None, leader

    def run_fault(self, fault):
        try:
            return self._run_fault(fault)
        finally:
            self.release(fault["id"])

    def _run_fault(self, fault):
        kind = fault["kind"]
        if kind.startswith(("kill_leader", "kill_follower", "stop_leader", "stop_follower")):
            return self.fault_process(fault)
        if kind in ("stop_etcd", "kill_etcd"):
            return self.fault_etcd(fault)
        if kind in ("cut_leader_etcd", "cut_follower_etcd"):
            return self.fault_etcd_link(fault)
        if kind.startswith("partition_"):
            return self.fault_partition(fault)
        if kind.startswith("disk_full_"):
            return self.fault_disk_full(fault)
        handler = {"kill_all": self.fault_kill_all, "replace_follower_disk": self.fault_replace_disk,
                   "forget_rejoin_follower": self.fault_forget_rejoin, "recreate_topic": self.fault_recreate_topic,
                   "kill_group_consumer": self.fault_kill_group_consumer}[kind]
        return handler(fault)

    def fault_process(self, fault):
        kind, duration = fault["kind"], fault["duration"]
        node, _ = self.claim_node(fault["id"], "leader" if "leader" in kind else "follower", fault["pick"], ["proc"])
        if node is None:
            return "skipped (no such node free)"
        if kind.startswith("kill_"):
            node.kill()
            time.sleep(duration)
            node.start()
            return f"SIGKILL {node.name}, restarted after {duration}s"
        node.signal(signal.SIGSTOP)
        time.sleep(duration)
        node.signal(signal.SIGCONT)
        return f"SIGSTOP {node.name} for {duration}s"

    def fault_etcd(self, fault):
        duration = fault["duration"]
        if not self.claim(fault["id"], ["etcd"]):
            return "skipped (etcd busy with another fault)"
        if fault["kind"] == "stop_etcd":
            self.etcd.signal(signal.SIGSTOP)
            time.sleep(duration)
            self.etcd.signal(signal.SIGCONT)
            return f"SIGSTOP etcd for {duration}s"
        self.etcd.kill()
        time.sleep(duration)
        self.etcd.start()
        return f"SIGKILL etcd, restarted after {duration}s"

    def fault_etcd_link(self, fault):
        role = "leader" if "leader" in fault["kind"] else "follower"
        node, _ = self.claim_node(fault["id"], role, fault["pick"], ["etcdlink"])
        if node is None:
            return "skipped (no such node free)"
        node.proxy.cut()
        time.sleep(fault["duration"])
        node.proxy.heal()
        return f"cut {node.name} from etcd for {fault['duration']}s"

    def fault_partition(self, fault):
        """Drop node-to-node packets (replication traffic) with iptables; etcd
        and the clients still reach every node. partition_leader: the leader
        from both followers, both ways (it keeps etcd, so it keeps its
        lease); partition_follower: one follower from the leader, both ways;
        partition_one_way: leader to follower or follower to leader only."""
        kind, duration, pick = fault["kind"], fault["duration"], fault["pick"]
        leader = self.leader()
        if leader is None:
            return "skipped (no leader)"
        followers = [n for n in self.nodes if n is not leader]
        if kind == "partition_leader":
            cuts = [(leader, f) for f in followers] + [(f, leader) for f in followers]
        elif kind == "partition_follower":
            follower = followers[pick % len(followers)]
            cuts = [(leader, follower), (follower, leader)]
        else:
            follower = followers[(pick >> 1) % len(followers)]
            cuts = [(leader, follower)] if pick % 2 == 0 else [(follower, leader)]
        started = time.monotonic()
        for source, target in cuts:
            self.network.cut(fault["id"], source.name, target.name)
        # The cut must really drop: neither side completes a handshake
        # (dialling, or answering the other's dial).
        # (in parallel: together they take one connect timeout, 0.5 s, of the cut's duration).
        leaks = []
        checks = [threading.Thread(target=lambda d=dialer, l=listener, s=source, t=target: leaks.append(
            f"partition {s.name}->{t.name} installed, yet {d.name} connected to {l.name}")
            if self.network.can_connect(d.name, l.replication) else None)
            for source, target in cuts for dialer, listener in ((source, target), (target, source))]
        for check in checks:
            check.start()
        for check in checks:
            check.join(timeout=60)
        if leaks:
            raise RuntimeError("; ".join(leaks))
        time.sleep(max(0.0, duration - (time.monotonic() - started)))
        self.network.heal(fault["id"])
        if not self.network.holders():
            for source, target in cuts:  # healed, no other partition holds: a live target answers again
                if target.alive() and not wait_until(
                        f"{source.name} to reach {target.name} after healing", 10,
                        lambda: not target.alive() or self.network.can_connect(source.name, target.replication)):
                    raise RuntimeError(f"partition {source.name}->{target.name} healed, yet {source.name} cannot "
                                       f"connect to {target.name}")
        arrows = ", ".join(f"{s.name}->{t.name}" for s, t in cuts)
        return f"dropped {arrows} (leader {leader.name}) for {duration}s (checked: no handshake while cut)"

    def fault_kill_all(self, fault):
        duration = min(fault["duration"], 3.0)
        if not self.claim(fault["id"], [f"proc:{n.name}" for n in self.nodes]):
            return "skipped (a node is busy with another fault)"
        for node in self.nodes:
            node.kill()
        time.sleep(duration)
        for node in self.nodes:
            node.start()
        return f"SIGKILL all three nodes, restarted after {duration}s"

    def forget(self, node, old_id, via_cli):
        """Forget `old_id` through another live node, once its lease expired
        and the leader no longer counts it as connected (409 until then)."""
        deadline = time.monotonic() + LEASE_TTL_S * 4 + 15
        answer = None
        while time.monotonic() < deadline and old_id is not None:
            other = next((n for n in self.nodes if n is not node and n.alive() and not n.stopped), None)
            if other is not None:
                if via_cli:
                    result = subprocess.run([self.binary, "forget-node", str(old_id), "--admin", other.admin],
                                            capture_output=True, timeout=15)
                    if result.returncode == 0:
                        return True, "ok"
                    answer = result.stderr.decode(errors="replace").strip()[-120:]
                else:
                    status, body = http_json(f"http://{other.admin}/api/nodes/{old_id}", method="DELETE",
                                             timeout=5)
                    if 200 <= status < 300:
                        return True, f"HTTP {status}"
                    answer = f"HTTP {status} {body}"
            time.sleep(0.5)
        return False, f"FAILED ({answer})"

    def fault_replace_disk(self, fault):
        node, _ = self.claim_node(fault["id"], "follower", fault["pick"], ["proc", "disk"])
        if node is None:
            return "skipped (no such node free)"
        old_id = node.node_id()
        node.kill()
        forgotten, how = self.forget(node, old_id, via_cli=True)
        shutil.rmtree(node.data_dir, ignore_errors=True)
        node.start()
        if forgotten:
            self.forgotten.append(old_id)
        return (f"SIGKILL {node.name} (id {old_id}), forget-node {old_id} {how}, data dir wiped, "
                f"restarted as a new replica")

    def fault_forget_rejoin(self, fault):
        """SPEC §5: a forgotten node that starts again is given a new id and
        resynchronises from scratch. Killed, forgotten with DELETE
        /api/nodes/ID, then started again on its old disk: it must take a new
        id (checked here) and be back in sync at the end (checked by `sync`)."""
        node, _ = self.claim_node(fault["id"], "follower", fault["pick"], ["proc", "disk"])
        if node is None:
            return "skipped (no such node free)"
        old_id = node.node_id()
        node.kill()
        forgotten, how = self.forget(node, old_id, via_cli=False)
        time.sleep(fault["duration"])
        node.start()
        if not forgotten:
            return f"SIGKILL {node.name} (id {old_id}), DELETE /api/nodes/{old_id} {how}, restarted"
        self.forgotten.append(old_id)
        if wait_until(f"{node.name} to take a new id", 30,
                      lambda: node.node_id() not in (None, old_id) or not node.alive()) and node.alive():
            new_id = node.node_id()
        else:
            new_id = node.node_id()
            if node.alive():
                self.anomaly("forget", f"{node.name} was forgotten as id {old_id} and started again on its old "
                                       f"disk, but still has id {new_id} 30 s later (SPEC §5: a new id)")
        return (f"SIGKILL {node.name} (id {old_id}), DELETE /api/nodes/{old_id} {how}, restarted on its old "
                f"disk after {fault['duration']}s with id {new_id}")

    def fault_recreate_topic(self, fault):
        servers = ",".join(n.client for n in self.nodes)
        with self.scratch_lock:
            deleted = subprocess.run([self.binary, "topic", "delete", SCRATCH, "--server", servers],
                                     capture_output=True, timeout=30)
            if deleted.returncode != 0:
                leader = self.leader()
                if leader is None or http_json(f"http://{leader.admin}/api/topics/{SCRATCH}")[0] != 404:
                    return f"topic delete {SCRATCH} failed ({deleted.stderr.decode().strip()}); not recreated"
            time.sleep(fault["duration"])
            created = self.create_scratch()
            self.scratch.recreated()
        return f"topic delete {SCRATCH}, created again after {fault['duration']}s: {'ok' if created else 'FAILED'}"

    def fault_kill_group_consumer(self, fault):
        if not self.group_consumers:
            return "skipped (no group consumer)"
        index = fault["pick"] % len(self.group_consumers)
        if not self.claim(fault["id"], [f"group:{index}"]):
            return "skipped (that group consumer is busy with another fault)"
        consumer = self.group_consumers[index]
        consumer.kill()
        time.sleep(fault["duration"])
        return f"SIGKILL group consumer of {consumer.topic}/{consumer.partition}"

    def probe(self, node):
        """One produce of 40 KB to PROBE straight to `node` (more than a
        PROBE segment, so the leader must open a new segment file): the
        answer's error code, or "ok"."""
        values = "\n".join(f"probe-{now():.3f}-{i:03d}-" + "p" * 980 for i in range(40)) + "\n"
        try:
            result = subprocess.run([self.binary, "produce", PROBE, "--partition", "0", "--acks", "leader", "--json",
                                     "--batch", "10", "--retry-ms", "1000", "--server", node.client],
                                    input=values.encode(), capture_output=True, timeout=20)
        except subprocess.TimeoutExpired:
            return "no answer within 20 s"
        if result.returncode == 0:
            return "ok"
        error = (result.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        for code in ("disk_full", "storage_failed", "not_leader", "timeout"):
            if code in error:
                return code
        return error[-160:]

    def fault_disk_full(self, fault):
        """Fill the node's filesystem, hold it full, free it. While full, a
        leader must answer disk_full (or still accept what fits), never
        fail-stop; once freed it must accept appends again (SPEC §4)."""
        role = "leader" if fault["kind"].endswith("leader") else "follower"
        duration = fault["duration"]
        node, _ = self.claim_node(fault["id"], role, fault["pick"], ["disk"])
        if node is None:
            return "skipped (no such node free)"
        deadline = time.monotonic() + duration
        taken, left = self.disks.fill(node.name)
        while_full = "not probed (not the leader)"
        if self.leader() is node:
            while_full = self.probe(node)
            self.probe_answers[while_full] = self.probe_answers.get(while_full, 0) + 1
            if while_full == "storage_failed":
                self.anomaly("failstop", f"{node.name} answered storage_failed with a full disk (SPEC §4: "
                                         f"disk_full, and appends resume once space is freed)")
        time.sleep(max(0.0, deadline - time.monotonic()))
        self.disks.free(node.name)
        after = "not probed (not the leader)"
        if while_full not in ("ok", "not probed (not the leader)") and self.leader() is node:
            started = time.monotonic()
            answer = "?"
            while time.monotonic() - started < 30 and self.leader() is node:
                answer = self.probe(node)
                if answer == "ok":
                    break
                time.sleep(1)
            after = f"{answer} {time.monotonic() - started:.1f}s after"
            if answer in ("disk_full", "storage_failed"):
                self.anomaly("disk_full", f"{node.name} still answers {answer} 30 s after its disk was freed")
        return (f"filled {node.name}'s disk ({taken >> 20} MiB, {left} bytes left) for {duration}s; probe while full: "
                f"{while_full}; "
                f"once freed: {after}")

    def watch_nodes(self):
        """A node that exits without being killed by the nemesis is an anomaly
        (crash, panic, abort); it is restarted so the run goes on."""
        while not self.watch_stop.is_set() and not SHUTTING_DOWN.is_set():
            for node in self.nodes:
                if SHUTTING_DOWN.is_set():
                    return
                if node.proc is not None and not node.expected_down and node.proc.poll() is not None:
                    code = node.proc.returncode
                    node.expected_down = True
                    tail = ""
                    try:
                        with open(node.logfile, errors="replace") as f:
                            tail = " | ".join(line.strip() for line in f.readlines()[-3:])
                    except OSError:
                        pass
                    self.anomaly("crash", f"{node.name} exited by itself with status {code}: {tail}")
                    time.sleep(0.5)
                    node.start()
            time.sleep(0.2)

    # ---- heal and check
    def heal(self):
        log("healing: SIGCONT everything, restore links, free the disks, restart what is down")
        for proxy in self.proxies:
            proxy.heal()
        if self.network is not None:
            self.network.heal_all()
            left = self.network.rule_count()
            if left:
                raise RuntimeError(f"{left} partition rules still installed after healing")
        if self.disks is not None:
            self.disks.free_all()
        if self.etcd.proc.poll() is not None:
            self.etcd.start()
        self.etcd.signal(signal.SIGCONT)
        for node in self.nodes:
            node.signal(signal.SIGCONT)
            node.stopped = False
            if not node.alive():
                node.start()
        with self.scratch_lock:
            if not wait_until("a leader after healing", 30, lambda: self.leader() is not None):
                return
            leader = self.leader()
            if leader is not None and http_json(f"http://{leader.admin}/api/topics/{SCRATCH}")[0] == 404:
                self.create_scratch()
                self.scratch.recreated()

    def read_partition(self, node, topic, partition):
        try:
            result = subprocess.run([self.binary, "consume", topic, "--partition", str(partition), "--from",
                                     "earliest", "--format", "json", "--server", node.client],
                                    capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            return None, "no answer within 60 s"

        if result.returncode != 0:
            return None, result.stderr.decode(errors="replace").strip()
        records = []
        for line in result.stdout.decode(errors="replace").splitlines():
            record = json.loads(line)
            records.append((record["offset"], record.get("value", record.get("value_b64"))))
        return records, None

    def describe(self, node, topic):
        status, body = http_json(f"http://{node.admin}/api/topics/{topic}", timeout=3)
        if status != 200:
            return None
        return {p["partition"]: p for p in body["partitions"]}

    def check(self, producers, tails, groups):
        log("checker: waiting for every replica to be back in sync")
        started = time.monotonic()
        synced = wait_until("every replica connected and in sync", self.args.sync_bound,
                            self.all_in_sync, interval=0.5)
        if not synced:
            self.anomaly("sync", f"not every replica back in sync {self.args.sync_bound}s after healing: "
                                 f"nodes view {self.nodes_view()}")
        else:
            log(f"checker: all replicas in sync {time.monotonic() - started:.1f}s after the workload stopped")
        leader = self.leader()
        if leader is None:
            self.anomaly("sync", "no leader after healing")
            return
        partitions = [(TOPIC, p) for p in range(PARTITIONS)] + [(ROLLING, 0), (SCRATCH, 0)]
        # Every replica reaches the leader's high watermark (one bound for all).
        final = {topic: self.describe(leader, topic) or {} for topic in (TOPIC, ROLLING, SCRATCH)}
        targets = {(topic, p): final[topic].get(p, {}).get("high_watermark") or 0 for topic, p in partitions}
        behind = {}

        def replicas_at_high_watermark():
            behind.clear()
            for node in self.nodes:
                described = {topic: self.describe(node, topic) or {} for topic in (TOPIC, ROLLING, SCRATCH)}
                for (topic, p), hw in targets.items():
                    have = described[topic].get(p, {}).get("high_watermark")
                    if have is None or have < hw:
                        behind[(node.name, topic, p)] = (have, hw)
            return not behind
        if not wait_until("every replica at the leader's high watermark", 30, replicas_at_high_watermark, 0.5):
            for (name, topic, p), (have, hw) in sorted(behind.items()):
                self.anomaly("sync", f"{name} {topic}/{p}: high watermark {have} never reached the leader's {hw}"
                                     + (" (the admin API did not answer)" if have is None else ""))
        totals = {"acked": 0, "checked": 0, "retention_excused": 0}
        for topic, p in partitions:
            producer = producers[(topic, p)]
            logs = {}
            for node in self.nodes:
                records, error = self.read_partition(node, topic, p)
                if records is None:
                    self.anomaly("read", f"{node.name} {topic}/{p}: consume --from earliest failed: {error}")
                    continue
                logs[node.name] = records
            ref = logs.get(leader.name)
            if ref is None:
                continue
            start = ref[0][0] if ref else (self.describe(leader, topic) or {}).get(p, {}).get("log_start_offset", 0)
            if topic == ROLLING:
                # Retention must really have cut segments, or `rolling` tested nothing.
                self.retention = f"{ROLLING} log start {start} on the leader"
                if start == 0 and len(producer.acked) > 4000:
                    self.anomaly("retention", f"{ROLLING}/{p}: {len(producer.acked)} records acknowledged "
                                              f"(more than retention_bytes holds) and the log start is still 0")
            # Dense offsets.
            for i, (offset, _) in enumerate(ref):
                if offset != start + i:
                    self.anomaly("dense", f"{leader.name} {topic}/{p}: offset {offset} at position {i} "
                                          f"(expected {start + i})")
                    break
            by_offset = dict(ref)
            # Nothing duplicated, nothing foreign, nothing from a deleted incarnation of the topic.
            seen_values = {}
            for offset, value in ref:
                if value in seen_values:
                    self.anomaly("duplicate", f"{topic}/{p}: {value!r} at offsets {seen_values[value]} and {offset}")
                seen_values[value] = offset
                if value not in producer.written:
                    self.anomaly("foreign", f"{topic}/{p}: offset {offset} holds {value!r}, never produced")
                elif topic == SCRATCH and not value.startswith(f"s-i{producer.incarnation}-"):
                    self.anomaly("resurrected", f"{topic}/{p}: offset {offset} holds {value!r}, written before the "
                                                f"topic was deleted (incarnation now {producer.incarnation})")
            # Every acknowledged record exactly at its offset.
            lost = []
            for offset, value in sorted(producer.acked.items()):
                totals["acked"] += 1
                if offset < start:
                    if topic == ROLLING:
                        totals["retention_excused"] += 1
                        continue
                    lost.append((offset, value, "below log start"))
                    continue
                have = by_offset.get(offset)
                if have != value:
                    lost.append((offset, value, f"offset holds {have!r}" if have is not None else "offset missing"))
                    if value in seen_values:
                        lost[-1] = (offset, value, f"moved to offset {seen_values[value]}; {lost[-1][2]}")
                else:
                    totals["checked"] += 1
            if lost:
                head = "; ".join(f"{o}={v!r} {why}" for o, v, why in lost[:5])
                self.anomaly("lost", f"{topic}/{p}: {len(lost)} acknowledged records not at their offset "
                                     f"(offsets {lost[0][0]}..{lost[-1][0]}): {head}")
            # Replicas agree record by record up to the high watermark.
            for name, records in logs.items():
                if name == leader.name:
                    continue
                theirs = dict(records)
                common = [o for o in theirs if o in by_offset]
                differ = [o for o in common if theirs[o] != by_offset[o]]
                # A replica still behind is reported by the catch-up check; here: holes inside what it serves.
                last = records[-1][0] if records else -1
                missing = [o for o in by_offset if o not in theirs and (records[0][0] if records else 0) <= o <= last]
                extra = [o for o in theirs if o not in by_offset and o >= start]
                if differ or missing or extra:
                    self.anomaly("replicas", f"{topic}/{p}: {name} differs from leader {leader.name}: "
                                             f"{len(differ)} records differ (first {differ[:3]}), "
                                             f"{len(missing)} missing (first {missing[:3]}), "
                                             f"{len(extra)} extra (first {extra[:3]})")
            # What the consumers saw is what the log holds.
            for consumer in [c for c in tails + groups if c.topic == topic and c.partition == p]:
                kind = "group" if consumer.group else "tail"
                wrong = [(o, v) for o, v in consumer.seen.items() if o >= start and by_offset.get(o) != v]
                if wrong:
                    o, v = wrong[0]
                    self.anomaly(kind, f"{topic}/{p}: the {kind} consumer saw {len(wrong)} records that the final "
                                       f"log does not hold (first: offset {o} was {v!r}, now {by_offset.get(o)!r})")
        self.totals = totals

    # ---- main
    def run(self):
        args = self.args
        seconds = args.minutes * 60
        only = set(args.faults.split(",")) if args.faults else None
        unknown = (only or set()) - {k for k, _ in FAULTS}
        if unknown:
            raise SystemExit(f"chaos: unknown fault kinds {sorted(unknown)}; known: {[k for k, _ in FAULTS]}")
        if only and not args.root_faults and only & ROOT_FAULTS:
            raise SystemExit(f"chaos: {sorted(only & ROOT_FAULTS)} need root, iptables, cgroup v2 and loop mounts: "
                             f"{args.root_unavailable}")
        if only is None and not args.root_faults:
            only = {k for k, _ in FAULTS} - ROOT_FAULTS
            log(f"chaos: partitions and full disks left out ({args.root_unavailable})")
        schedule = [] if args.no_faults else make_schedule(args.seed, seconds, only, args.overlap)
        log(f"chaos: seed {args.seed}, {args.minutes} min, {len(schedule)} faults scheduled "
            f"(up to {max_overlap(schedule)} at once), workdir {self.workdir}")
        self.start_cluster()
        log(f"cluster up: etcd 127.0.0.1:{self.etcd.client_port}; " +
            ", ".join(f"{n.name} client {n.client} admin {n.admin}" for n in self.nodes))
        producers = {(TOPIC, p): Producer(self, TOPIC, p, rate=args.rate) for p in range(PARTITIONS)}
        producers[(ROLLING, 0)] = Producer(self, ROLLING, 0, rate=args.rate)
        self.scratch = producers[(SCRATCH, 0)] = ScratchProducer(self)
        tails = [Consumer(self, TOPIC, p) for p in range(PARTITIONS)] + [Consumer(self, ROLLING, 0)]
        self.group_consumers = groups = [Consumer(self, TOPIC, p, group="chaos-group") for p in range(PARTITIONS)]
        if args.no_consumers:
            tails, groups = [], []
            self.group_consumers = []
        sampler = Sampler(self)
        self.watch_stop = threading.Event()
        watcher = threading.Thread(target=self.watch_nodes, daemon=True)
        for worker in list(producers.values()) + tails + groups + [sampler]:
            worker.start()
        watcher.start()
        run_start = time.monotonic()
        fault_threads = []
        fault_errors = []

        def one_fault(fault, at):
            try:
                what = self.run_fault(fault)
            except Exception as error:  # a harness failure: reported, the run ends with status 2
                what = f"harness error: {error!r}"
                fault_errors.append(what)
            with self.anomaly_lock:
                self.executed.append((round(at, 2), fault["kind"], what))
            log(f"  #{fault['id']} {fault['kind']} -> {what}")
        for fault in schedule:
            delay = fault["at"] - (time.monotonic() - run_start)
            if delay > 0:
                time.sleep(delay)
            at = time.monotonic() - run_start
            active = sum(1 for thread in fault_threads if thread.is_alive())
            log(f"fault #{fault['id']} @{fault['at']:.2f}: {fault['kind']} ({fault['duration']}s; "
                f"{active} other faults active)")
            thread = threading.Thread(target=one_fault, args=(fault, at), daemon=True)
            thread.start()
            fault_threads.append(thread)
        remaining = seconds - (time.monotonic() - run_start)
        if remaining > 0:
            time.sleep(remaining)
        for thread in fault_threads:
            thread.join(timeout=120)  # every fault's own waits are bounded well below this
        if any(thread.is_alive() for thread in fault_threads) or fault_errors:
            raise RuntimeError(f"faults did not finish cleanly: {fault_errors or 'a fault thread hung'}")
        self.executed.sort(key=lambda entry: entry[0])
        self.heal()
        log(f"settling {args.settle}s with the workload running")
        time.sleep(args.settle)
        log("stopping the producers")
        for producer in producers.values():
            producer.stop.set()
        for producer in producers.values():
            producer.thread.join(timeout=60)
        # Let the consumers reach the end, then stop them.
        self.watch_stop.set()
        watcher.join(timeout=5)
        time.sleep(3)
        if self.args.self_test:
            self.plant_errors(producers, tails)
        self.check(producers, tails, groups)
        time.sleep(2)
        for consumer in tails + groups:
            consumer.stop.set()
            consumer.kill()
        sampler.stop.set()
        sampler.thread.join(timeout=10)
        for consumer in tails + groups:
            consumer.thread.join(timeout=10)
        # Final consumer cross-check after they stopped (late observations).
        self.report(producers, tails, groups, sampler, schedule)

    def plant_errors(self, producers, tails):
        """--self-test: falsify what the harness recorded, so that a working
        checker must report one lost acknowledged record and one record a
        tailing consumer saw change."""
        producer = producers[(TOPIC, 0)]
        if producer.acked:
            offset = min(producer.acked)
            producer.acked[offset] = producer.acked[offset] + "-planted"
            self.planted = {"lost"}
        tail = next((c for c in tails if c.topic == TOPIC and c.seen), None)
        if tail is not None:
            offset = min(tail.seen)
            tail.seen[offset] = tail.seen[offset] + "-planted"
            self.planted = getattr(self, "planted", set()) | {"tail"}
        log(f"self-test: planted errors the checker must report: {sorted(getattr(self, 'planted', set()))}")

    def report(self, producers, tails, groups, sampler, schedule):
        acked = sum(len(p.acked) for p in producers.values())
        indeterminate = sum(len(p.indeterminate) for p in producers.values())
        failures = sum(len(p.failures) for p in producers.values())
        seen = sum(len(c.seen) for c in tails)
        group_seen = sum(len(c.seen) for c in groups)
        redelivered = sum(c.redelivered for c in groups)
        rewinds = [r for c in groups for r in c.rewinds]
        faults = sum(1 for _, _, what in self.executed if not what.startswith("skipped"))
        by_kind = {}
        for _, kind, what in self.executed:
            if not what.startswith("skipped"):
                by_kind[kind] = by_kind.get(kind, 0) + 1
        totals = getattr(self, "totals", {})
        print()
        print("==== chaos summary")
        print(f"seed {self.args.seed}; {self.args.minutes} min; faults injected {faults} of {len(schedule)} scheduled "
              f"(up to {max_overlap(schedule)} scheduled at once): {dict(sorted(by_kind.items()))}")
        print(f"disk-full probes: {self.probe_answers or 'none'}; retention: {getattr(self, 'retention', '?')}")
        print(f"acknowledged records {acked} (checked at their offset {totals.get('checked', 0)}, "
              f"below log start of {ROLLING} by retention {totals.get('retention_excused', 0)}); "
              f"unacknowledged when a producer exited {indeterminate}; producer restarts {failures}")
        print(f"tailing consumers saw {seen} records; group consumers saw {group_seen} "
              f"(redelivered after a restart {redelivered}; resumed below its last commit {len(rewinds)} times, "
              f"by up to {max((last + 1 - at for _, at, last in rewinds), default=0)} offsets); "
              f"high-watermark samples {sampler.samples}; "
              f"leaders {[(round(t, 1), n, e) for t, n, e in sampler.leaders_seen]}")
        kinds = {}
        for _, kind, _ in self.anomalies:
            kinds[kind] = kinds.get(kind, 0) + 1
        print(f"anomalies: {len(self.anomalies)} {kinds if kinds else ''}")
        tolerated = [a for a in self.anomalies if a[1] in self.args.tolerate]
        if tolerated:
            print(f"of which tolerated (--tolerate {','.join(sorted(self.args.tolerate))}: known, open, documented in "
                  f"docs/RELIABILITY.md): {len(tolerated)}")
        if self.anomalies:
            print("---- anomalies (first 40)")
            for at, kind, message in self.anomalies[:40]:
                print(f"  [{at:8.2f}s] {kind}: {message}")
            print("---- fault schedule (seed %s; times from the start of the workload)" % self.args.seed)
            for at, kind, what in self.executed:
                print(f"  @{at:7.2f}s {kind}: {what}")
            print(f"replay: {replay_command(self.args)}")
            print(f"logs: {self.workdir}/logs")
        return not self.failing()

    def failing(self):
        """The anomalies that fail the run: all but the --tolerate kinds."""
        return [a for a in self.anomalies if a[1] not in self.args.tolerate]


def replay_command(args):
    command = f"tools/chaos.sh --minutes {args.minutes:g} --seed {args.seed}"
    if args.consumers != "follow":
        command += f" --consumers {args.consumers}"
    if args.faults:
        command += f" --faults {args.faults}"
    if args.no_faults:
        command += " --no-faults"
    if args.no_consumers:
        command += " --no-consumers"
    if args.self_test:
        command += " --self-test"
    if args.rate != 400.0:
        command += f" --rate {args.rate:g}"
    if args.overlap != 0.5:
        command += f" --overlap {args.overlap:g}"
    if args.no_root_faults:
        command += " --no-root-faults"
    if args.tolerate:
        command += f" --tolerate {','.join(sorted(args.tolerate))}"
    return command


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--workdir", default=None, help="default: a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory even when the run passes")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of workload after healing")
    parser.add_argument("--sync-bound", type=float, default=60.0,
                        help="seconds within which every replica must be back in sync")
    parser.add_argument("--rate", type=float, default=400.0, help="records per second per producer")
    parser.add_argument("--consumers", choices=["follow", "poll"], default="follow",
                        help="follow: long-polling `consume --follow` (default); poll: repeated `consume` "
                             "without --follow (no long poll; see docs/RELIABILITY.md, anomaly A)")
    parser.add_argument("--faults", default=None,
                        help="comma-separated fault kinds to draw from (default: all; see docs/RELIABILITY.md)")
    parser.add_argument("--self-test", action="store_true",
                        help="plant a lost record and a changed record in the harness's own bookkeeping before the "
                             "check; pass only if the checker reports exactly those (use with --no-faults)")
    parser.add_argument("--overlap", type=float, default=0.5,
                        help="probability that a fault starts while earlier ones are still active (0: one at a time)")
    parser.add_argument("--disk-mb", type=int, default=512,
                        help="size of each node's loop-mounted filesystem (root runs)")
    parser.add_argument("--no-root-faults", action="store_true",
                        help="no partitions, no full disks: nodes on 127.0.0.1, data on the work directory's disk")
    parser.add_argument("--tolerate", default="",
                        help="comma-separated anomaly kinds that are printed but do not fail the run (known, open "
                             "anomalies; .ci/run tolerates hw_term, anomaly G)")
    parser.add_argument("--no-faults", action="store_true", help="control run: the workload without faults")
    parser.add_argument("--no-consumers", action="store_true", help="producers only (no tailing or group consumer)")
    args = parser.parse_args()
    unknown = set(args.faults.split(",")) - {k for k, _ in FAULTS} if args.faults else set()
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(k for k, _ in FAULTS)}")
    if args.seed is None:
        args.seed = random.randrange(1, 1 << 31)
    args.tolerate = {kind for kind in args.tolerate.split(",") if kind}
    args.root_unavailable = "--no-root-faults" if args.no_root_faults else rootfaults.available()
    args.root_faults = args.root_unavailable is None
    if args.root_faults:
        stale = rootfaults.remove_stale()
        if stale:
            log(f"chaos: removed what a killed earlier run left: {stale}")
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    harness = Harness(args)
    # A hard bound on the whole run, whatever happens.
    hard_limit = args.minutes * 60 + args.settle + args.sync_bound + 400

    def watchdog():
        time.sleep(hard_limit)
        log(f"chaos: hard time limit {hard_limit:.0f}s exceeded (seed {args.seed}); killing everything")
        for at, kind, what in harness.executed:
            print(f"  @{at:7.2f}s {kind}: {what}", flush=True)
        shutdown()
        os._exit(1)
    threading.Thread(target=watchdog, daemon=True).start()
    ok = False
    try:
        harness.run()
        ok = not harness.failing()
        if args.self_test:
            planted = getattr(harness, "planted", set())
            found = {kind for _, kind, message in harness.anomalies if "-planted" in message}
            ok = bool(planted) and found == planted
            print(f"self-test: planted {sorted(planted)}, the checker reported {sorted(found)}", flush=True)
    except SystemExit as error:
        log(str(error))
        print(f"seed {args.seed}; logs: {harness.workdir}/logs")
        shutdown()
        sys.exit(2)
    except BaseException:
        import traceback
        traceback.print_exc()
        print(f"chaos: harness error (seed {args.seed}); logs: {harness.workdir}/logs")
        shutdown()
        sys.exit(2)
    finally:
        shutdown()
        for proxy in harness.proxies:
            proxy.close()
    if ok and not args.keep:
        shutil.rmtree(harness.workdir, ignore_errors=True)
    print("chaos: PASS" if ok else f"chaos: FAIL (seed {args.seed})", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
