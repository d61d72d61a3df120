"""Root-only fault machinery for the nemesis: node-to-node network partitions
(iptables rules between per-node loopback addresses, told apart by cgroup)
and full disks (each node's data directory on its own small loop-mounted
ext4 filesystem). Stdlib only. Everything set up here is undone by
`cleanup()`, which the harness calls from atexit, its signal handlers and its
`finally`; `remove_stale()` undoes what a harness killed with SIGKILL left.

Why this mechanism (docs/RELIABILITY.md has the long form): each node listens
on its own 127.A.B.x address, so a partition is a pair of DROP rules on real
kernel packets, below ringlog's sockets, on the replication traffic itself
(no proxy to speak the protocol, nothing in ringlog to change). A follower
dials the leader from an unbound socket, whose source the kernel sets to
127.0.0.1 whoever dials; each node therefore runs in its own cgroup v2, and a
SNAT rule keyed on that cgroup gives its outgoing node-to-node connections
its own address. The DROP rules sit in mangle OUTPUT, which runs before NAT
rewrites anything: an outgoing packet is still told apart by its cgroup (its
source is not rewritten yet) and a reply by its source address (its
destination is not yet turned back into 127.0.0.1)."""

import errno
import os
import shutil
import subprocess
import sys
import threading
import time

CHAIN_PREFIX = "RLCHAOS-"


def _run(*args, check=True):
    if args[0] == "iptables":
        args = ("iptables", "-w", "10", *args[1:])  # wait for the xtables lock rather than fail
    result = subprocess.run(list(args), capture_output=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.decode(errors='replace').strip()}")
    return result


def cgroup2_root():
    """Where cgroup v2 is mounted (unified, or the hybrid 'unified' tree), or None."""
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return fields[1]
    except OSError:
        pass
    return None


def available():
    """None when partitions and full disks can be injected here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("iptables", "mkfs.ext4", "mount", "umount", "losetup"):
        if shutil.which(tool) is None:
            return f"{tool} not found (bash tools/install-deps.sh)"
    if cgroup2_root() is None:
        return "no cgroup v2 hierarchy mounted"
    return None


def _pid_alive(pid):
    """True while `pid` runs (a zombie, killed but not yet reaped, is dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Network:
    """Per-node loopback addresses, cgroups, SNAT and partition rules."""

    def __init__(self, node_names, extra_cgroups=()):
        token = int.from_bytes(os.urandom(2), "big")
        # A random /24 inside 127/8 per run: two runs at once never share
        # addresses, so the rules of one never touch the other's nodes.
        self.subnet = f"127.{token >> 8 or 1}.{token & 0xFF}"
        self.addresses = {name: f"{self.subnet}.{11 + i}" for i, name in enumerate(node_names)}
        self.chain = f"{CHAIN_PREFIX}{os.getpid()}"
        self.cgroup_root = cgroup2_root()
        self.cgroup_name = f"ringlog-chaos-{os.getpid()}"
        self.extra_cgroups = list(extra_cgroups)  # cgroups without an address (the harness's other children)
        self.rules = []   # (fault id, rule args) currently installed
        self.lock = threading.Lock()  # faults run in threads: one rule change at a time
        self.installed = False

    def cgroup_path(self, name):
        return f"{self.cgroup_name}/{name}"

    def cgroup_procs(self, name):
        return os.path.join(self.cgroup_root, self.cgroup_name, name, "cgroup.procs")

    def wrap(self, name, argv):
        """argv run inside the node's cgroup (joined before exec, so every socket it opens is in it)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', self.cgroup_procs(name), *argv]

    def setup(self):
        for name in list(self.addresses) + self.extra_cgroups:
            os.makedirs(os.path.join(self.cgroup_root, self.cgroup_name, name), exist_ok=True)
        for table in ("mangle", "nat"):
            _run("iptables", "-t", table, "-N", self.chain)
        self.installed = True
        _run("iptables", "-t", "mangle", "-A", "OUTPUT", "-j", self.chain)
        _run("iptables", "-t", "nat", "-A", "POSTROUTING", "-j", self.chain)
        for name, address in self.addresses.items():
            _run("iptables", "-t", "nat", "-A", self.chain, "-m", "cgroup", "--path", self.cgroup_path(name),
                 "-d", f"{self.subnet}.0/24", "-j", "SNAT", "--to-source", address)

    def _drop_rules(self, source, target):
        """The two rules that drop every packet from node `source` to node `target`."""
        return [["-m", "cgroup", "--path", self.cgroup_path(source), "-d", self.addresses[target], "-j", "DROP"],
                ["-s", self.addresses[source], "-d", self.addresses[target], "-j", "DROP"]]

    def cut(self, fault_id, source, target):
        """Drop everything `source` sends to `target` (one way)."""
        with self.lock:
            for rule in self._drop_rules(source, target):
                _run("iptables", "-t", "mangle", "-A", self.chain, *rule)
                self.rules.append((fault_id, rule))

    def can_connect(self, source, target_address, timeout_s=0.5):
        """Whether a process in `source`'s cgroup completes a TCP handshake
        with `target_address` (host:port): the check that a cut really
        drops packets, and that a heal really lifts it."""
        host, port = target_address.rsplit(":", 1)
        code = ("import socket,sys\n"
                "try:\n"
                f"    socket.create_connection(({host!r}, {int(port)}), timeout={timeout_s}).close()\n"
                "except OSError:\n"
                "    sys.exit(1)\n")
        result = subprocess.run(self.wrap(source, [sys.executable, "-c", code]), capture_output=True,
                                timeout=30)
        return result.returncode == 0

    def heal(self, fault_id):
        """Remove exactly the rules this fault added (others may still hold theirs)."""
        with self.lock:
            keep = []
            for owner, rule in self.rules:
                if owner == fault_id:
                    _run("iptables", "-t", "mangle", "-D", self.chain, *rule)
                else:
                    keep.append((owner, rule))
            self.rules = keep

    def holders(self):
        """Fault ids with rules installed."""
        with self.lock:
            return {owner for owner, _ in self.rules}

    def heal_all(self):
        with self.lock:
            if self.installed:
                _run("iptables", "-t", "mangle", "-F", self.chain)
            self.rules = []

    def rule_count(self):
        result = _run("iptables", "-t", "mangle", "-S", self.chain, check=False)
        return sum(1 for line in result.stdout.decode().splitlines() if line.startswith("-A"))

    def cleanup(self):
        if self.installed:
            remove_chain(self.chain)
            self.installed = False
        remove_cgroup_tree(os.path.join(self.cgroup_root, self.cgroup_name))


def remove_chain(chain):
    for table, hook in (("mangle", "OUTPUT"), ("nat", "POSTROUTING")):
        while _run("iptables", "-t", table, "-D", hook, "-j", chain, check=False).returncode == 0:
            pass
        _run("iptables", "-t", table, "-F", chain, check=False)
        _run("iptables", "-t", table, "-X", chain, check=False)


def remove_cgroup_tree(path, kill=False):
    """rmdir the run's cgroups; with `kill`, first SIGKILL the processes
    still in them (nodes a harness killed with SIGKILL left running)."""
    if not os.path.isdir(path):
        return
    for entry in os.listdir(path):
        child = os.path.join(path, entry)
        if not os.path.isdir(child):
            continue
        if kill:
            try:
                with open(os.path.join(child, "cgroup.procs")) as procs:
                    pids = [int(line) for line in procs if line.strip()]
            except OSError:
                pids = []
            for pid in pids:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            for _ in range(50):
                if not open(os.path.join(child, "cgroup.procs")).read().strip():
                    break
                time.sleep(0.1)
        _rmdir_when_empty(child)
    _rmdir_when_empty(path)


def _rmdir_when_empty(path):
    # A cgroup whose last process was just killed stays busy until it is
    # reaped: retry for a few seconds.
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


class Disks:
    """Each node's data directory on its own small ext4 image, loop-mounted."""

    def __init__(self, workdir, node_names, size_mb):
        self.workdir = workdir
        self.size_mb = size_mb
        self.mounts = {name: os.path.join(workdir, "disks", name) for name in node_names}
        self.mounted = []
        self.fillers = {}  # node name -> filler path

    def data_dir(self, name):
        return os.path.join(self.mounts[name], "data")

    def setup(self):
        with open(os.path.join(self.workdir, "harness.pid"), "w") as f:
            f.write(str(os.getpid()))
        for name, mount_point in self.mounts.items():
            image = os.path.join(self.workdir, "disks", f"{name}.img")
            os.makedirs(mount_point, exist_ok=True)
            with open(image, "wb") as f:
                f.truncate(self.size_mb << 20)
            # -m 0: no blocks reserved for root (the node runs as root and would use them).
            _run("mkfs.ext4", "-q", "-F", "-m", "0", image)
            _run("mount", "-o", "loop", image, mount_point)
            self.mounted.append(mount_point)
            os.makedirs(self.data_dir(name), exist_ok=True)

    def fill(self, name):
        """Take every free block of the node's filesystem; (bytes taken, bytes left free)."""
        path = os.path.join(self.mounts[name], f"filler-{len(self.fillers)}")
        self.fillers[name] = path
        before = self.free_bytes(name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # Most of it at once (fallocate cannot take the blocks its own
            # extent tree needs), then write until ENOSPC: 1 MiB, 4 KiB, then
            # smaller (a filesystem of 1 KiB blocks can keep 2 KiB back from
            # a 4 KiB write).
            if before > 4 << 20:
                os.posix_fallocate(fd, 0, before - (2 << 20))
            os.lseek(fd, 0, os.SEEK_END)
            for chunk in (b"\0" * (1 << 20), b"\0" * 4096, b"\0" * 512, b"\0"):
                for _ in range(1 << 12):
                    try:
                        os.write(fd, chunk)
                    except OSError as error:
                        if error.errno == errno.ENOSPC:
                            break
                        raise
            os.fsync(fd)
        except OSError as error:
            if error.errno != errno.ENOSPC:  # fsync of a full filesystem can say ENOSPC too
                raise
        finally:
            os.close(fd)
        return before - self.free_bytes(name), self.free_bytes(name)

    def free(self, name):
        path = self.fillers.pop(name, None)
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def free_bytes(self, name):
        stat = os.statvfs(self.mounts[name])
        return stat.f_bavail * stat.f_frsize

    def free_all(self):
        for name in list(self.fillers):
            self.free(name)

    def wipe(self, name):
        """A new, empty disk: the data directory removed and made again."""
        self.free(name)
        shutil.rmtree(self.data_dir(name), ignore_errors=True)
        os.makedirs(self.data_dir(name), exist_ok=True)

    def cleanup(self):
        """Unmount (the loop device goes with it: mount -o loop sets autoclear)."""
        for mount_point in self.mounted:
            unmount(mount_point)
        self.mounted = []


def unmount(mount_point):
    if _run("umount", mount_point, check=False).returncode != 0:
        # Still busy (a process not yet reaped): detach it now, freed when idle.
        _run("umount", "-l", mount_point, check=False)


def remove_stale():
    """Undo what an earlier harness, killed before it could clean up, left:
    its iptables chains, its cgroups and its loop mounts (by its pid)."""
    removed = []
    result = _run("iptables", "-t", "mangle", "-S", check=False)
    for line in result.stdout.decode().splitlines():
        if line.startswith(f"-N {CHAIN_PREFIX}"):
            chain = line.split()[1]
            pid = chain[len(CHAIN_PREFIX):]
            if pid.isdigit() and not _pid_alive(int(pid)):
                remove_chain(chain)
                removed.append(chain)
    root = cgroup2_root()
    if root and os.path.isdir(root):
        for entry in os.listdir(root):
            pid = entry[len("ringlog-chaos-"):] if entry.startswith("ringlog-chaos-") else ""
            if pid.isdigit() and not _pid_alive(int(pid)):
                remove_cgroup_tree(os.path.join(root, entry), kill=True)
                removed.append(entry)
    try:
        with open("/proc/mounts") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        mount_point = line.split()[1] if len(line.split()) > 1 else ""
        if "/ringlog-chaos-" not in mount_point or "/disks/" not in mount_point:
            continue
        pidfile = os.path.join(mount_point.split("/disks/")[0], "harness.pid")
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if not _pid_alive(pid):
            unmount(mount_point)
            removed.append(mount_point)
    return removed


def self_test():
    """Checks the machinery itself (root): a cut drops both ways and only
    between the two nodes, a heal lifts it; a filled disk has no byte
    left and takes writes again once freed; cleanup leaves nothing. Exit
    status 0 when all hold. .ci/run runs it before the nemesis."""
    import socket
    import tempfile
    why = available()
    if why is not None:
        raise SystemExit(f"rootfaults self-test: cannot run: {why}")
    workdir = tempfile.mkdtemp(prefix="ringlog-chaos-selftest-")
    network = Network(["a", "b"], extra_cgroups=["others"])
    disks = Disks(workdir, ["a"], 16)
    failures = []
    listeners = []
    try:
        network.setup()
        disks.setup()
        for name in ("a", "b"):
            listener = socket.socket()
            listener.bind((network.addresses[name], 0))
            listener.listen(64)
            listeners.append(listener)
        address = {name: "%s:%d" % sock.getsockname() for name, sock in zip(("a", "b"), listeners)}

        def expect(what, dialer, target, reachable):
            if network.can_connect(dialer, address[target]) != reachable:
                failures.append(f"{what}: {dialer} -> {target} {'unreachable' if reachable else 'reachable'}")
        expect("before any cut", "a", "b", True)
        expect("before any cut", "b", "a", True)
        network.cut("t", "a", "b")
        expect("a->b cut", "a", "b", False)   # a's SYN dropped
        expect("a->b cut", "b", "a", False)   # a's SYN-ACK dropped
        expect("a->b cut", "others", "b", True)
        expect("a->b cut", "others", "a", True)
        network.heal("t")
        expect("healed", "a", "b", True)
        expect("healed", "b", "a", True)
        disks.fill("a")
        if disks.free_bytes("a") != 0:
            failures.append(f"filled disk still has {disks.free_bytes('a')} bytes free")
        probe = os.path.join(disks.data_dir("a"), "probe")
        try:
            with open(probe, "wb") as f:
                f.write(b"x" * 65536)
                f.flush()
                os.fsync(f.fileno())
            failures.append("a 64 KiB write succeeded on the filled disk")
        except OSError as error:
            if error.errno != errno.ENOSPC:
                failures.append(f"the filled disk answered {error}, not ENOSPC")
        disks.free("a")
        with open(probe, "wb") as f:
            f.write(b"x" * 65536)
            f.flush()
            os.fsync(f.fileno())
    finally:
        for listener in listeners:
            listener.close()
        disks.cleanup()
        network.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    left = _run("iptables", "-t", "mangle", "-S", check=False).stdout.decode()
    if network.chain in left or network.chain in _run("iptables", "-t", "nat", "-S", check=False).stdout.decode():
        failures.append(f"chain {network.chain} left after cleanup")
    with open("/proc/mounts") as mounts:
        if workdir in mounts.read():
            failures.append(f"a mount under {workdir} left after cleanup")
    if os.path.exists(os.path.join(network.cgroup_root, network.cgroup_name)):
        failures.append("cgroups left after cleanup")
    for failure in failures:
        print(f"rootfaults self-test: FAIL: {failure}")
    print("rootfaults self-test: " + ("PASS" if not failures else "FAIL"))
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    self_test()
