#!/usr/bin/env python3
"""Layer check (docs/ARCHITECTURE.md): every `crate::`/`super::` path in src/
must point down the floors, or sideways only into `state`.

Usage: tools/layers.py [--root DIR] [--allow FILE] [--list] [--graph] [--self-test]

--graph prints the module-level import graph (unit -> units it imports,
allowed debt included) and any circle in it.

Prints `file:line: <from floor> imports <to floor> (<path>)` for every import
against the rule that the allow-list does not excuse, and exits 1 if there is
any, or if an allow-list entry no longer matches anything (so the list only
shrinks). Python 3 standard library only.
"""

import os
import re
import sys
import tempfile

# Unit -> floor. Units on one floor may not import each other, except that
# anything may import `state`. Deeper path prefixes win over shorter ones, so a
# file that belongs to another floor than its directory is named here too.
FLOORS = {
    "runtime::clock": -1,  # std-only leaf: every floor, state included, reads the time
    "runtime": 0,
    "systemd": 0,  # sd_notify: OS glue, counts as runtime
    "state": 0,
    "storage": 1,
    "protocol": 1,
    "security": 1,  # TLS setup, SCRAM, users and roles: pure, below the network
    "config": 1.5,  # the node's config: wraps StorageConfig, read by shard and up
    "shard": 2,
    "replication": 3,
    "requests": 4,
    "net": 5,
    "cluster": 5,
    "admin": 5,
    "node": 6,
    "cli": 7,
    "main": 8,
    "lib": 8,
}
# Which unit a module prefix counts as (default: the prefix itself).
UNIT = {"systemd": "runtime", "runtime::clock": "clock"}
# Units that anything may import sideways (same floor).
SHARED = {"state"}

USE_RE = re.compile(r"\b(?:pub(?:\([^)]*\))?\s+)?use\s+((?:crate|super|self)\b[^;]*);", re.S)
INLINE_RE = re.compile(r"\b((?:crate|super)(?:::(?:super|[A-Za-z_][A-Za-z0-9_]*))+)")


def module_of(rel):
    """src-relative file path -> module path list (`net/server.rs` -> [net, server])."""
    parts = rel[:-3].split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def unit_of(mod):
    """module path list -> (unit, floor) by the longest matching prefix."""
    for n in range(len(mod), 0, -1):
        key = "::".join(mod[:n])
        if key in FLOORS:
            return UNIT.get(key, key), FLOORS[key]
    return None, None


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (as segment lists)."""
    tree = re.sub(r"\s+as\s+", "@", tree)
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, s):
        i = s.find("{")
        if i < 0:
            seg = s.split("@")[0]
            segs = [x for x in seg.split("::") if x]
            out.append(prefix + segs)
            return
        head = [x for x in s[:i].split("::") if x]
        body = s[i + 1 : s.rfind("}")]
        depth, start = 0, 0
        for j, ch in enumerate(body + ","):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                item = body[start:j]
                start = j + 1
                if item:
                    walk(prefix + head, item)

    walk([], tree)
    return out


def resolve(path, mod):
    """Make a path absolute (list without `crate`), or None if not in-crate.

    An indented `use super::*;` (the one of a `mod tests` block, naming the
    file's own module, not its parent) is dropped by the caller.
    """
    if not path:
        return None
    if path[0] == "crate":
        return path[1:]
    here = list(mod)
    if path[0] == "self":
        return here + path[1:]
    while path and path[0] == "super":
        here = here[:-1]
        path = path[1:]
    return here + path


def strip_comments(text):
    # Line comments (keep line numbers); string contents are left alone, which is
    # fine: a `crate::` inside a string would only add a false positive we would see.
    return re.sub(r"//[^\n]*", "", text)


def source_files(root):
    """Yield (rel, mod, unit, floor, text without comments) for every file in src/."""
    src = os.path.join(root, "src")
    for dirpath, _, files in os.walk(src):
        for name in sorted(files):
            if not name.endswith(".rs"):
                continue
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, src).replace(os.sep, "/")
            mod = module_of(rel)
            unit, floor = unit_of(mod)
            yield rel, mod, unit, floor, strip_comments(open(full, encoding="utf-8").read())


def imports(root):
    """Yield (rel_file, line, from_unit, from_floor, to_unit, to_floor, path)."""
    for rel, mod, from_unit, from_floor, text in source_files(root):
        if from_unit is None:
            print(f"src/{rel}: no floor for this file (add it to FLOORS in tools/layers.py)")
            sys.exit(1)
        seen = set()
        found = []
        for m in USE_RE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            line_start = text.rfind("\n", 0, m.start()) + 1
            nested = m.start() > line_start and text[line_start:m.start()].strip() == "" and m.start() - line_start >= 4
            for p in expand(m.group(1)):
                if nested and p == ["super", "*"]:
                    continue  # `mod tests { use super::*; }`: the file's own module
                found.append((line, p))
            seen.update(range(m.start(), m.end()))
        for m in INLINE_RE.finditer(text):
            if m.start() in seen:
                continue
            line = text.count("\n", 0, m.start()) + 1
            found.append((line, m.group(1).split("::")))
        for line, p in found:
            target = resolve(p, mod)
            if target == ["*"]:
                # `use crate::*;` (or a `super::*` reaching the root) brings
                # every module in unnamed: nothing after it could be checked.
                yield (f"src/{rel}", line, from_unit, from_floor, "crate root", 99, "crate::*")
                continue
            if not target:
                continue
            to_unit, to_floor = unit_of(target)
            if to_unit is None or to_unit == from_unit:
                continue
            yield (f"src/{rel}", line, from_unit, from_floor, to_unit, to_floor, "crate::" + "::".join(target))


DEF_RE = re.compile(r"^[ \t]*(?:pub(?:\([^)]*\))?\s+)?(?:struct|enum|type)\s+([A-Za-z_][A-Za-z0-9_]*)", re.M)
IMPL_RE = re.compile(r"^[ \t]*impl\b", re.M)


def inherent_impl_type(text, start):
    """The type name of the `impl` header at `start` if it is an inherent
    impl (`impl<T: A<B>> path::Type<T> where T: C {`), None for a trait impl."""
    end = text.find("{", start)
    if end < 0:
        return None
    header = text[start:end].strip()[len("impl"):].strip()
    if header.startswith("<"):  # the impl's own generic parameters
        depth = 0
        for index, char in enumerate(header):
            depth += {"<": 1, ">": -1}.get(char, 0)
            if depth == 0:
                header = header[index + 1 :].strip()
                break
    depth, outer = 0, []
    for char in header:  # the header outside any generic arguments
        depth += {"<": 1, ">": -1}.get(char, 0)
        outer.append(char if depth == 0 else " ")
    outer = "".join(outer)
    if re.search(r"\bfor\b", outer.split(" where ")[0]):
        return None
    found = re.match(r"\s*((?:[A-Za-z_][A-Za-z0-9_]*::)*)([A-Za-z_][A-Za-z0-9_]*)", outer)
    return found.group(2) if found else None


def foreign_impls(root):
    """Inherent `impl Type {` blocks outside the unit that defines Type.

    They graft methods onto another module's type, a dependency no `use`
    line shows (the reason issue 12 moved replication's `impl ShardContext`
    out). Yield (rel_file, line, unit, floor, type, defining units).
    """
    files = list(source_files(root))
    defined = {}
    for _rel, _mod, unit, _floor, text in files:
        for m in DEF_RE.finditer(text):
            defined.setdefault(m.group(1), set()).add(unit)
    for rel, _mod, unit, floor, text in files:
        for m in IMPL_RE.finditer(text):
            name = inherent_impl_type(text, m.start())
            owners = defined.get(name, set()) if name else set()
            if owners and unit not in owners:
                line = text.count("\n", 0, m.start()) + 1
                yield f"src/{rel}", line, unit, floor, name, sorted(owners)


def violation(from_unit, from_floor, to_unit, to_floor):
    if to_floor < from_floor:
        return None
    if to_floor == from_floor and to_unit in SHARED:
        return None
    return "upward" if to_floor > from_floor else "sideways"


def load_allow(path):
    """Lines `src/file.rs  crate::path::prefix  # reason`."""
    allow = []
    if not os.path.exists(path):
        return allow
    for n, raw in enumerate(open(path, encoding="utf-8"), 1):
        body, _, reason = raw.partition("#")
        body = body.strip()
        if not body:
            continue
        fields = body.split()
        if len(fields) != 2 or not reason.strip():
            print(f"{path}:{n}: want `src/file.rs crate::path # reason`")
            sys.exit(1)
        allow.append((fields[0], fields[1], n))
    return allow


def check(root, allow_path, list_all=False, out=sys.stdout):
    allow = load_allow(allow_path)
    used = set()
    bad = 0
    excused = 0
    found = {}
    for f, line, fu, ff, tu, tf, path in imports(root):
        kind = violation(fu, ff, tu, tf)
        if kind is None:
            continue
        found.setdefault((f, line, fu, tu, kind), []).append(path)
    for (f, line, fu, tu, kind), paths in sorted(found.items()):
        hits = []
        for path in paths:
            hit = [n for af, ap, n in allow if af == f and (path == ap or path.startswith(ap + "::"))]
            hits.append(hit[0] if hit else None)
        if None not in hits:
            used.update(hits)
            excused += 1
            if list_all:
                print(f"{f}:{line}: {fu} imports {tu} ({kind}: {', '.join(sorted(set(paths)))}) [allowed]", file=out)
            continue
        bad += 1
        print(f"{f}:{line}: {fu} imports {tu} ({kind}: {', '.join(sorted(set(paths)))})", file=out)
    for f, line, unit, _floor, name, owners in foreign_impls(root):
        bad += 1
        print(f"{f}:{line}: {unit} adds methods to {name} of {', '.join(owners)} (hidden dependency: "
              f"write functions that take it as a parameter)", file=out)
    stale = [(af, ap, n) for af, ap, n in allow if n not in used]
    for af, ap, n in stale:
        print(f"{allow_path}:{n}: stale allow-list entry {af} {ap}: remove it", file=out)
    entries = len(allow)
    print(f"layers: {bad} violation(s), {excused} allowed import(s) from {entries} allow-list entr(y/ies)", file=out)
    return bad == 0 and not stale


def graph(root, out=sys.stdout):
    """Print unit -> imported units, then any circle; return True if none."""
    edges = {}
    for _f, _line, fu, ff, tu, tf, _path in imports(root):
        edges.setdefault((ff, fu), set()).add(tu)
    floor = {u: f for (f, u) in edges}
    for ff, fu in sorted(edges):
        print(f"{fu} ({ff:g}) -> {', '.join(sorted(edges[(ff, fu)], key=lambda u: (-floor.get(u, 0), u)))}", file=out)
    succ = {u: deps for (_f, u), deps in edges.items()}
    cycles = []
    state = {}

    def visit(u, stack):
        state[u] = 1
        stack.append(u)
        for v in sorted(succ.get(u, ())):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for u in sorted(succ):
        if u not in state:
            visit(u, [])
    for c in cycles:
        print("circle: " + " -> ".join(c), file=out)
    print(f"layers graph: {len(succ)} modules, {len(cycles)} circle(s)", file=out)
    return not cycles


def self_test():
    """A deliberately wrong import must fail; a right one and an allowed one pass."""
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "src/storage"))
        os.makedirs(os.path.join(tmp, "src/net"))
        os.makedirs(os.path.join(tmp, "src/cluster"))
        os.makedirs(os.path.join(tmp, "src/state"))

        def write(rel, text):
            with open(os.path.join(tmp, "src", rel), "w") as fh:
                fh.write(text)

        write("lib.rs", "pub mod storage;\npub mod net;\npub mod cluster;\npub mod state;\n")
        write("state/mod.rs", "pub struct View;\n")
        write("storage/mod.rs", "pub mod log;\npub use crate::state::View;\n")
        write("storage/log.rs", "use super::super::runtime::Gate;\n")
        write("net/mod.rs", "pub mod protocol;\npub mod server;\n")
        write("net/protocol.rs", "use crate::runtime::Gate;\n")
        write("net/server.rs", "use super::protocol::Request;\nuse crate::{storage::{log, Log}, state::View};\n")
        write("cluster/mod.rs", "pub fn f() { let _ = crate::state::View; }\n")
        allow = os.path.join(tmp, "allow")
        open(allow, "w").close()
        sink = open(os.devnull, "w")
        assert check(tmp, allow, out=sink), "a correct tree must pass"

        # Upward: storage imports net.
        write("storage/log.rs", "use crate::net::server::Server;\n")
        assert not check(tmp, allow, out=sink), "storage -> net must fail"
        # The message names the file and line.
        import io

        buf = io.StringIO()
        check(tmp, allow, out=buf)
        assert "src/storage/log.rs:1: storage imports net (upward" in buf.getvalue(), buf.getvalue()
        # Grouped and via super: storage -> cluster through `super::super`.
        write("storage/log.rs", "use super::super::{cluster::f, state::View};\n")
        buf = io.StringIO()
        assert not check(tmp, allow, out=buf)
        assert "storage imports cluster (upward" in buf.getvalue(), buf.getvalue()
        # Inline path, sideways: net -> cluster.
        write("storage/log.rs", "\n")
        write("net/server.rs", "fn g() {\n    crate::cluster::f();\n}\n")
        buf = io.StringIO()
        assert not check(tmp, allow, out=buf)
        assert "src/net/server.rs:2: net imports cluster (sideways" in buf.getvalue(), buf.getvalue()
        # The allow-list excuses it ...
        with open(allow, "w") as fh:
            fh.write("src/net/server.rs crate::cluster  # test\n")
        assert check(tmp, allow, out=sink), "an allowed import must pass"
        # ... and a stale entry fails.
        write("net/server.rs", "\n")
        assert not check(tmp, allow, out=sink), "a stale allow-list entry must fail"
        # Sideways into state is fine; comments are not imports.
        write("net/server.rs", "use crate::state::View; // crate::cluster::f\n")
        open(allow, "w").close()
        assert check(tmp, allow, out=sink)
        # Methods grafted onto another module's type are a hidden dependency.
        write("cluster/mod.rs", "impl crate::state::View {\n    fn g(&self) {}\n}\nimpl Clone for Other {}\n")
        buf = io.StringIO()
        assert not check(tmp, allow, out=buf)
        assert "src/cluster/mod.rs:1: cluster adds methods to View of state" in buf.getvalue(), buf.getvalue()
        write("cluster/mod.rs", "impl<T: Into<u8>> crate::state::View<T>\nwhere\n    T: Copy,\n{\n}\n")
        buf = io.StringIO()
        assert not check(tmp, allow, out=buf), "nested generics and a where clause hide nothing"
        assert "src/cluster/mod.rs:1: cluster adds methods to View of state" in buf.getvalue(), buf.getvalue()
        write("cluster/mod.rs", "pub struct Own;\nimpl Own {\n    fn g(&self) {}\n}\nimpl Clone for Own {}\n"
              "impl<T: Into<u8>> From<T> for Own {\n}\n")
        assert check(tmp, allow, out=sink), "methods on its own type and trait impls are fine"
        # A glob of the crate root hides every import after it.
        write("storage/log.rs", "use crate::*;\nfn f() { net::server::run(); }\n")
        buf = io.StringIO()
        assert not check(tmp, allow, out=buf)
        assert "src/storage/log.rs:1: storage imports crate root" in buf.getvalue(), buf.getvalue()
        # A top-level `use super::*;` is its parent's glob; one in `mod tests` is not.
        write("storage/log.rs", "#[cfg(test)]\nmod tests {\n    use super::*;\n}\n")
        assert check(tmp, allow, out=sink), "a test module's glob names its own file"
        write("storage/mod.rs", "pub mod log;\nuse super::*;\n")
        buf = io.StringIO()
        assert not check(tmp, allow, out=buf)
        assert "src/storage/mod.rs:2: storage imports crate root" in buf.getvalue(), buf.getvalue()
        write("storage/mod.rs", "pub mod log;\n")
    print("layers self-test: ok")
    return True


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    allow = None
    list_all = False
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--self-test":
            return 0 if self_test() else 1
        if a == "--graph":
            return 0 if graph(root) else 1
        if a == "--root":
            root = args.pop(0)
        elif a == "--allow":
            allow = args.pop(0)
        elif a == "--list":
            list_all = True
        else:
            print(__doc__)
            return 2
    if allow is None:
        allow = os.path.join(root, "tools", "layers.allow")
    return 0 if check(root, allow, list_all) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
