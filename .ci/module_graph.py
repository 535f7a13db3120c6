#!/usr/bin/env python3
"""Fail on an import circle between the top-level modules of src/.

What it checks:
  - Every `crate::` path in every .rs file under src/ (except src/lib.rs): in `use` items,
    brace groups included (`use crate::{a::x, b::{y, z}}`), and inline paths (`crate::a::f()`,
    `$crate::a`). Each path names the top-level module it belongs to: src/foo.rs and
    src/foo/** are module `foo`; a name re-exported at the crate root by `pub use foo::X` in
    src/lib.rs belongs to `foo`.
  - Comments, doc comments and string literals are ignored (an intra-doc link is not an import).
  - `pub(in crate::x)` is a visibility, not an import, and is ignored.
  - Code under #[cfg(test)] and #[cfg(feature = ..)] counts like any other: the graph is the
    union over all features and tests.
  - It exits 1 if the graph between top-level modules has a strongly connected component of more
    than one module, printing cycles that together cover every edge of each such component, with
    one file:line per edge as evidence; otherwise 0. `--print` prints the whole graph first.

What it does not check:
  - `super::` and `self::` paths (they stay inside a module; one climbing out of a top-level
    module to the crate root is not followed), macros' expansions, and paths built in build.rs.
  - Circles between submodules of one top-level module (e.g. metrics::layer <-> metrics::body).
  - Items defined in src/lib.rs itself, or names it re-exports with a glob (`pub use foo::*`):
    a `crate::NAME` that is neither a module nor an explicit re-export is reported on stderr and
    otherwise ignored.

Usage: python3 .ci/module_graph.py [--print] [SRC_DIR]   (SRC_DIR defaults to the crate's src/)
       python3 .ci/module_graph.py --self-test
Standard library only.
"""

import os
import re
import sys
import tempfile
from collections import defaultdict, deque

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(text):
    """Blank out comments and the contents of string and char literals, keeping newlines."""
    out = []
    i, n = 0, len(text)

    def blank(s):
        return "".join(c if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        elif (m := re.match(r'b?r(#*)"', text[i:i + 300])) and (i == 0 or not re.match(r"\w", text[i - 1])):
            end = text.find('"' + m.group(1), i + m.end())
            j = n if end < 0 else end + 1 + len(m.group(1))
            out.append(blank(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(blank(text[i:j + 1]))
            i = j + 1
        elif c == "'" and (m := re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:i + 12])):
            out.append(blank(m.group(0)))  # a char literal; a lifetime ('a) is left alone
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def first_segments(code):
    """Yield (line, name) for the first segment after each `crate::` in stripped code."""

    def line_of(pos):
        return code.count("\n", 0, pos) + 1

    for m in re.finditer(r"(?<![A-Za-z0-9_])crate\s*::\s*", code):
        if re.search(r"\bpub\s*\(\s*in\s+\$?$", code[:m.start()]):
            continue  # pub(in crate::x): a visibility
        pos = m.end()
        if code.startswith("{", pos):
            # A brace group: the first identifier of each top-level entry.
            depth, j, expect = 0, pos, True
            while j < len(code):
                ch = code[j]
                if ch == "{":
                    depth += 1
                    expect = depth == 1
                elif ch == "}":
                    depth -= 1
                    if depth == 0:
                        break
                elif ch == "," and depth == 1:
                    expect = True
                elif expect and (im := re.match(IDENT, code[j:])):
                    yield line_of(j), im.group(0)
                    expect = False
                    j += im.end()
                    continue
                elif expect and not ch.isspace():
                    expect = False  # `*` or something else that names no module
                j += 1
        elif im := re.match(IDENT, code[pos:]):
            yield line_of(pos), im.group(0)


def modules_and_reexports(src):
    """Top-level module names and {re-exported name: module} from src/lib.rs."""
    modules = set()
    for entry in os.listdir(src):
        path = os.path.join(src, entry)
        if entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            modules.add(entry[:-3])
        elif os.path.isdir(path) and os.path.exists(os.path.join(path, "mod.rs")):
            modules.add(entry)
    lib = strip(open(os.path.join(src, "lib.rs"), encoding="utf-8").read())
    modules.update(re.findall(r"\bmod\s+(" + IDENT + r")\s*[;{]", lib))
    reexports = {}
    for m in re.finditer(r"\bpub\s+use\s+(?:crate\s*::\s*)?(" + IDENT + r")\s*::([^;]*);", lib):
        module, rest = m.group(1), m.group(2)
        if module not in modules:
            continue
        # `X`, `X as Y`, `a::X`, `{X, a::{Y, Z as W}}`: the exported name is the last identifier
        # of each leaf (after `as` if present).
        for leaf in re.split(r"[{},]", rest):
            words = re.findall(IDENT + r"|\*", leaf)
            if words and words[-1] not in ("self", "*"):
                reexports[words[-1]] = module
    return modules, reexports


def build_graph(src):
    """{module: {dep: [(file, line), ...]}} and a list of unresolved (file, line, name)."""
    modules, reexports = modules_and_reexports(src)
    graph = {m: defaultdict(list) for m in modules}
    unknown = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)
            if not name.endswith(".rs") or rel == "lib.rs":
                continue
            owner = rel.split(os.sep)[0]
            owner = owner[:-3] if owner.endswith(".rs") else owner
            if owner not in graph:
                continue  # a file no module declares
            code = strip(open(path, encoding="utf-8").read())
            shown = os.path.join(os.path.basename(os.path.normpath(src)), rel)
            for line, seg in first_segments(code):
                target = seg if seg in modules else reexports.get(seg)
                if target is None:
                    if seg not in ("self", "super"):
                        unknown.append((shown, line, seg))
                elif target != owner:
                    graph[owner][target].append((shown, line))
    return graph, unknown


def components(graph):
    """Strongly connected components (Tarjan), each sorted, in a stable order."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def shortest_path(graph, start, goal, allowed):
    prev, queue = {start: None}, deque([start])
    while queue:
        v = queue.popleft()
        if v == goal:
            path = []
            while v is not None:
                path.append(v)
                v = prev[v]
            return path[::-1]
        for w in sorted(graph[v]):
            if w in allowed and w not in prev:
                prev[w] = v
                queue.append(w)
    return None


def cycles(graph):
    """For each SCC of size > 1: shortest cycles through each edge until every edge is covered."""
    found = []
    for comp in components(graph):
        if len(comp) < 2:
            continue
        allowed, covered = set(comp), set()
        for u in comp:
            for v in sorted(graph[u]):
                if v not in allowed or (u, v) in covered:
                    continue
                cycle = [u] + shortest_path(graph, v, u, allowed)
                covered.update(zip(cycle, cycle[1:]))
                found.append(cycle)
    return found


def report(graph, unknown, show_graph, out=sys.stdout):
    for file, line, seg in unknown:
        print(f"module_graph: {file}:{line}: crate::{seg} is not a module or a root re-export; ignored",
              file=sys.stderr)
    if show_graph:
        for m in sorted(graph):
            deps = graph[m]
            print(f"{m} -> " + (", ".join(f"{d} ({len(deps[d])})" for d in sorted(deps)) or "(none)"), file=out)
    found = cycles(graph)
    if not found:
        print(f"module_graph: no import circle between the {len(graph)} top-level modules of src/", file=out)
        return 0
    print(f"module_graph: {len(found)} import circle(s) between top-level modules of src/:", file=out)
    for cycle in found:
        print("  " + " -> ".join(cycle), file=out)
        for u, v in zip(cycle, cycle[1:]):
            file, line = graph[u][v][0]
            more = len(graph[u][v]) - 1
            print(f"      {u} -> {v}: {file}:{line}" + (f" (+{more} more)" if more else ""), file=out)
    return 1


def self_test():
    import io

    tmp = tempfile.TemporaryDirectory(prefix="module_graph_")

    def tree(files):
        d = os.path.join(tmp.name, f"src{len(os.listdir(tmp.name))}")
        for rel, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
            with open(os.path.join(d, rel), "w", encoding="utf-8") as f:
                f.write(text)
        return d

    base = {
        "lib.rs": "pub mod a;\npub mod b;\nmod c;\npub use b::{Bee, inner::Deep as Renamed};\n",
        "a/mod.rs": (
            "//! [`x`](crate::c::X) in a doc comment\n"
            "use crate::{\n    b::Bee,\n    c::{self, X},\n};\n"
            "/* crate::c::Y in a block /* nested crate::c */ comment */\n"
            "const S: &str = \"crate::c::Z\";\nconst R: &str = r#\"crate::c\"#;\n"
            "fn f<'a>(x: &'a str) -> char { let _ = crate::Renamed::new(); '\"' }\n"
            "pub(in crate::a) struct V;\n"
        ),
        "a/sub.rs": "use crate::a::Local;\n",
        "b.rs": "fn g() { crate::c::h(); }\n",
        "c.rs": "// crate::a::nothing\nuse std::fmt;\n",
    }
    ok = True

    def check(what, cond):
        nonlocal ok
        print(("ok   " if cond else "FAIL ") + what)
        ok &= bool(cond)

    d = tree(base)
    graph, unknown = build_graph(d)
    edges = {(u, v): [l for _, l in e] for u in graph for v, e in graph[u].items()}
    check("acyclic tree: edges are exactly a->b, a->c, b->c", set(edges) == {("a", "b"), ("a", "c"), ("b", "c")})
    check("brace group and re-export map to their lines", edges[("a", "b")] == [3, 9] and edges[("a", "c")] == [4])
    check("acyclic tree: nothing unresolved", unknown == [])
    check("acyclic tree: exit 0", report(graph, unknown, False, io.StringIO()) == 0)

    d = tree(dict(base, **{"c.rs": "use crate::Bee;\nfn k() { crate::a::sub::j() }\n"}))
    graph, unknown = build_graph(d)
    buf = io.StringIO()
    check("cyclic tree: exit 1", report(graph, unknown, False, buf) == 1)
    text = buf.getvalue()
    check("cyclic tree: every edge of the component is in a reported cycle, with evidence",
          "a -> b -> c -> a" in text and "a -> c -> a" in text and "c -> b -> c" in text
          and "c -> a: src1/c.rs:2" in text and "c -> b: src1/c.rs:1" in text)
    print(text, end="")
    tmp.cleanup()
    return 0 if ok else 1


def main(argv):
    if "--self-test" in argv:
        return self_test()
    show = "--print" in argv
    rest = [a for a in argv if a != "--print"]
    src = rest[0] if rest else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    graph, unknown = build_graph(os.path.normpath(src))
    return report(graph, unknown, show)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
