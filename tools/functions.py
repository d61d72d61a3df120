#!/usr/bin/env python3
"""Function-length check (issue 12, docs/ARCHITECTURE.md): every `fn` in
src/**/*.rs is short enough to read at once, at most 70 lines from its `fn`
line to its closing brace. Items under `#[cfg(test)]` are not measured.

Usage: tools/functions.py [--root DIR] [--allow FILE] [--max LINES] [--list] [--self-test]

Prints `file:line: fn NAME is N lines (max 70)` for every function over the
limit that the allow-list does not excuse, and exits 1 if there is any, or if
an allow-list entry no longer matches (the function is now short enough, or
gone), so the list only shrinks. --list prints every function over the limit,
allowed ones included. Python 3 standard library only.

The allow-list (tools/functions.allow) has one entry a line:
`src/file.rs  function_name  # why`, the reason being "flat codec match" for a
match over message kinds that is long only because it is flat, otherwise
"to cut (issue 12)".
"""

import io
import os
import re
import sys
import tempfile

MAX_LINES = 70

IDENT = r"(?:r#)?[A-Za-z_][A-Za-z0-9_]*"
FN_RE = re.compile(r"\bfn\s+(" + IDENT + r")")
CFG_TEST_RE = re.compile(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]")
ATTRIBUTE_RE = re.compile(r"\s*#\s*\[")
MOD_DECLARATION_RE = re.compile(r"\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;")


def is_ident_char(char):
    return char.isalnum() or char == "_"


def blank(text):
    """Keep the newlines of `text` (so line numbers hold), blank the rest."""
    return "".join("\n" if char == "\n" else " " for char in text)


def raw_string_end(text, start):
    """If a raw string (`r"…"`, `r#"…"#`, `br…`, `cr…`) starts at `start`,
    the index after it; else None. `r#ident` (a raw identifier) is not one."""
    index = start
    if text[index] in "bc":
        index += 1
    if index >= len(text) or text[index] != "r":
        return None
    index += 1
    hashes = 0
    while index < len(text) and text[index] == "#":
        hashes += 1
        index += 1
    if index >= len(text) or text[index] != '"':
        return None
    closing = '"' + "#" * hashes
    end = text.find(closing, index + 1)
    return len(text) if end < 0 else end + len(closing)


def string_end(text, start):
    """Index after the (escaped) string literal whose quote is at `start`."""
    index = start + 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
        elif text[index] == '"':
            return index + 1
        else:
            index += 1
    return len(text)


def char_end(text, start):
    """Index after the char literal whose quote is at `start`, or None when
    the quote starts a lifetime or a label (`'a`, `'static`, `'outer:`)."""
    if start + 1 < len(text) and text[start + 1] == "\\":
        end = text.find("'", start + 2)
        # An escape is short: `'\n'`, `'\''`, `'\x7f'`, `'\u{10FFFF}'`.
        if text[start + 2] == "'":
            end = text.find("'", start + 3)
        return None if end < 0 or end - start > 12 else end + 1
    if start + 2 < len(text) and text[start + 2] == "'" and text[start + 1] != "\n":
        return start + 3
    return None


def block_comment_end(text, start):
    """Index after the (possibly nested) block comment opening at `start`."""
    depth, index = 0, start
    while index < len(text):
        pair = text[index : index + 2]
        if pair == "/*":
            depth, index = depth + 1, index + 2
        elif pair == "*/":
            depth, index = depth - 1, index + 2
            if depth == 0:
                return index
        else:
            index += 1
    return len(text)


def mask(text):
    """`text` with comments, strings and char literals blanked, so that every
    brace left is code. Lifetimes and labels stay as they are."""
    out, index, length = [], 0, len(text)
    while index < length:
        char = text[index]
        pair = text[index : index + 2]
        end = None
        starts_token = index == 0 or not is_ident_char(text[index - 1])
        if pair == "//":
            end = text.find("\n", index)
            end = length if end < 0 else end
        elif pair == "/*":
            end = block_comment_end(text, index)
        elif char in "rbc" and starts_token:
            end = raw_string_end(text, index)
            # b"…", b'…' and c"…" (there are no c'…' literals).
            if end is None and text[index + 1 : index + 2] == '"' and char in "bc":
                end = string_end(text, index + 1)
            elif end is None and text[index + 1 : index + 2] == "'" and char == "b":
                end = char_end(text, index + 1)
        elif char == '"':
            end = string_end(text, index)
        elif char == "'":
            end = char_end(text, index)
        if end is None:
            out.append(char)
            index += 1
        else:
            out.append(blank(text[index:end]))
            index = end
    return "".join(out)


def matching_brace(masked, opening):
    """Index of the brace closing the one at `opening` (masked text)."""
    depth = 0
    for index in range(opening, len(masked)):
        if masked[index] == "{":
            depth += 1
        elif masked[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return len(masked) - 1


def item_end(masked, start):
    """End of the item starting at `start`: after its `;` or its braced body,
    whichever comes first outside parentheses and brackets."""
    depth = 0
    for index in range(start, len(masked)):
        char = masked[index]
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif depth == 0 and char == ";":
            return index + 1
        elif depth == 0 and char == "{":
            return matching_brace(masked, index) + 1
    return len(masked)


def after_attributes(masked, index):
    """Skip the attributes that follow `index`; the index of the item."""
    while True:
        match = ATTRIBUTE_RE.match(masked, index)
        if not match:
            return index
        opening = masked.index("[", match.start())
        depth = 0
        for index in range(opening, len(masked)):
            if masked[index] == "[":
                depth += 1
            elif masked[index] == "]":
                depth -= 1
                if depth == 0:
                    index += 1
                    break


def test_only(masked):
    """Spans of items under `#[cfg(test)]`, and the names of test-only
    module files they declare (`#[cfg(test)] mod tests;`)."""
    spans, module_files = [], []
    for match in CFG_TEST_RE.finditer(masked):
        item = after_attributes(masked, match.end())
        declaration = MOD_DECLARATION_RE.match(masked, item)
        if declaration:
            module_files.append(declaration.group(1).removeprefix("r#"))
        spans.append((match.start(), item_end(masked, item)))
    return spans, module_files


def line_of(text, index):
    return text.count("\n", 0, index) + 1


def functions(masked):
    """(name, first line, lines) of every function with a body."""
    spans, _ = test_only(masked)
    found = []
    for match in FN_RE.finditer(masked):
        if any(start <= match.start() < end for start, end in spans):
            continue
        end = item_end(masked, match.end())
        if masked[end - 1] != "}":
            continue  # a declaration without a body (trait method, extern)
        first, last = line_of(masked, match.start()), line_of(masked, end - 1)
        found.append((match.group(1).removeprefix("r#"), first, last - first + 1))
    return found


def child_module_dir(rel):
    """Where the modules a file declares live: `src/a/mod.rs` -> `src/a`,
    `src/a/b.rs` -> `src/a/b`, `src/lib.rs` -> `src`."""
    directory, name = os.path.split(rel)
    if name in ("mod.rs", "lib.rs", "main.rs"):
        return directory
    return os.path.join(directory, name[:-3])


def sources(root):
    """src-relative paths of the Rust files, test-only module files left out."""
    files = []
    for directory, _, names in os.walk(os.path.join(root, "src")):
        for name in names:
            if name.endswith(".rs"):
                files.append(os.path.relpath(os.path.join(directory, name), root))
    skipped = set()
    for rel in files:
        _, module_files = test_only(mask(read(root, rel)))
        base = child_module_dir(rel)
        for module in module_files:
            skipped.add(os.path.join(base, module + ".rs"))
            skipped.add(os.path.join(base, module, "mod.rs"))
    return sorted(rel for rel in files if rel not in skipped)


def read(root, rel):
    with open(os.path.join(root, rel), encoding="utf-8") as handle:
        return handle.read()


def long_functions(root, max_lines):
    """(file, line, name, lines) of every function over `max_lines`."""
    found = []
    for rel in sources(root):
        for name, line, lines in functions(mask(read(root, rel))):
            if lines > max_lines:
                found.append((rel.replace(os.sep, "/"), line, name, lines))
    return found


def load_allow(path):
    """Lines `src/file.rs  function_name  # reason`: (file, name, line)."""
    allow = []
    if not os.path.exists(path):
        return allow
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            body, _, reason = raw.partition("#")
            fields = body.split()
            if not fields:
                continue
            if len(fields) != 2 or not reason.strip():
                raise SystemExit(f"{path}:{number}: want `src/file.rs function_name # reason`")
            allow.append((fields[0], fields[1], number))
    return allow


def check(root, allow_path, max_lines=MAX_LINES, list_all=False, out=sys.stdout):
    allow = load_allow(allow_path)
    used, failures, excused = set(), 0, 0
    for rel, line, name, lines in long_functions(root, max_lines):
        hits = [number for file, allowed, number in allow if file == rel and allowed == name]
        reused = [number for number in hits if number in used]
        if reused:
            # One entry excuses one function: a second long `fn NAME` in the
            # same file (another impl block) is not excused by the first's.
            failures += 1
            print(f"{rel}:{line}: fn {name} is {lines} lines (max {max_lines}); "
                  f"allow-list entry {reused[0]} already excuses another fn {name} in this file", file=out)
            continue
        used.update(hits)
        message = f"{rel}:{line}: fn {name} is {lines} lines (max {max_lines})"
        if hits:
            excused += 1
            if list_all:
                print(message + " [allowed]", file=out)
        else:
            failures += 1
            print(message, file=out)
    stale = [(file, name, number) for file, name, number in allow if number not in used]
    for file, name, number in stale:
        print(
            f"{allow_path}:{number}: stale allow-list entry {file} {name}: "
            f"no function of that name over {max_lines} lines there now; remove it",
            file=out,
        )
    print(
        f"functions: {failures} over {max_lines} lines, {excused} allowed by {len(allow)} allow-list entr(y/ies)",
        file=out,
    )
    return failures == 0 and not stale


def self_test():
    """A 71-line function fails naming its file and line; 70 lines pass;
    braces in strings, chars, raw strings and comments are not code; test
    code is not measured; an allow entry excuses; a stale entry fails."""
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "src", "codec"))
        allow = os.path.join(root, "allow")
        open(allow, "w").close()

        def write(rel, text):
            with open(os.path.join(root, "src", rel), "w", encoding="utf-8") as handle:
                handle.write(text)

        def run():
            buffer = io.StringIO()
            passed = check(root, allow, out=buffer)
            return passed, buffer.getvalue()

        def body(lines):
            # `lines` lines from `fn` to `}`, with every lexical trap inside.
            # Every brace in a trap is an opening one: one that is taken for
            # code leaves the function open to the end of the file.
            traps = [
                '    let _ = "{";',
                "    let _ = '{';",
                "    let _ = b'{';",
                "    let _ = '\\'';",
                '    let _ = r#"{"{"#;',
                '    let _ = br"{\\";',
                "    let _ = \"\\\"{\";",
                "    // {",
                "    /* { /* nested { */ { */",
                "    fn inner<'a>(x: &'a str) -> &'a str { x }",
                "    'outer: loop { break 'outer; }",
                "    let r#type = 1;",
                '    let _ = "fn fake() {";',
                "    let _: fn(u8) -> u8 = |x| x;",
            ]
            inner = [traps[index % len(traps)] for index in range(lines - 2)]
            return "\n".join(["pub fn measured() {"] + inner + ["}"]) + "\n"

        # Test code is not measured: a test-only file, a test module, a test
        # function; nor is a declaration without a body.
        write("lib.rs", "pub mod codec;\n#[cfg(test)]\nmod tests;\n")
        write("tests.rs", body(200))
        test_code = "#[cfg(test)]\nmod unit {\n" + body(90) + "}\n#[cfg(test)]\n#[inline]\n" + body(80)
        declaration = "pub trait Codec {\n    fn decode(&self) -> u8;\n}\n"
        write("codec/mod.rs", "//! Codec.\n\n" + body(70) + test_code + declaration)
        passed, output = run()
        assert passed, "a 70-line function, test code and a test-only file must pass:\n" + output

        write("codec/mod.rs", "//! Codec.\n\n" + body(71))
        passed, output = run()
        assert not passed, "a 71-line function must fail"
        assert "src/codec/mod.rs:3: fn measured is 71 lines (max 70)" in output, output

        with open(allow, "w") as handle:
            handle.write("src/codec/mod.rs  measured  # flat codec match\n")
        passed, output = run()
        assert passed, "an allowed function must pass:\n" + output

        write("codec/mod.rs", "//! Codec.\n\n" + body(71) + "impl Codec {\n" + body(75) + "}\n")
        passed, output = run()
        assert not passed, "one entry must not excuse a second long function of the same name"
        assert "already excuses another fn measured" in output, output

        write("codec/mod.rs", "//! Codec.\n\n" + body(70))
        passed, output = run()
        assert not passed, "a stale allow-list entry must fail"
        assert "allow:1: stale allow-list entry src/codec/mod.rs measured" in output, output
    print("functions self-test: ok")
    return True


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    allow, max_lines, list_all = None, MAX_LINES, False
    args = list(argv)
    while args:
        argument = args.pop(0)
        if argument == "--self-test":
            return 0 if self_test() else 1
        if argument == "--root":
            root = args.pop(0)
        elif argument == "--allow":
            allow = args.pop(0)
        elif argument == "--max":
            max_lines = int(args.pop(0))
        elif argument == "--list":
            list_all = True
        else:
            print(__doc__)
            return 2
    if allow is None:
        allow = os.path.join(root, "tools", "functions.allow")
    return 0 if check(root, allow, max_lines, list_all) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
