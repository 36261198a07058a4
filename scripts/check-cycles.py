#!/usr/bin/env python3
"""Fails (exit 1) on a dependency cycle between the crate's modules.

Reads src/**/*.rs (not src/main.rs, not `#[cfg(test)]` modules) and collects the
references one module makes to another: `use crate::a::b`, `crate::a::b::f(..)`,
`super::x`, and, in a module's own file, paths through its child modules (`model::Page`
in src/status/mod.rs). Two graphs are checked:

- the top-level modules (those src/lib.rs declares), and
- the same with `engine` and `status` split into their submodules (`engine::run`,
  `status::server`, ...), so that a cycle through one submodule is seen even when
  the top-level picture hides it.

Every cycle (strongly connected component) is printed with the edges that tie it and
one place each edge is made. A cycle in KNOWN below is tolerated until it is broken;
any other cycle fails, and so does an entry of KNOWN that is no longer a cycle (take
it out). Run: python3 scripts/check-cycles.py [--verbose]
"""

import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SRC = os.path.join(ROOT, "src")
# Top-level modules shown by their submodules in the second graph.
SPLIT = ("engine", "status")

# Cycles still known, each the exact set of modules of one cycle, with what remains to do.
KNOWN = {
    "top": [],
    "split": [],
}


def strip(text):
    """Blanks comments, strings and char literals, keeping line breaks and offsets."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
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
        elif c == "r" and re.match(r'r#*"', text[i:]) and not is_ident(text, i - 1):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(blank(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(blank(text[i : j + 1]))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:  # a char literal; otherwise a lifetime
                out.append(blank(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def is_ident(text, i):
    return i >= 0 and (text[i].isalnum() or text[i] == "_")


def blank(s):
    return re.sub(r"[^\n]", " ", s)


# Files declared by `#[path = ".."] mod name;`: their module path, by file.
PATHS = {}


def file_module(path):
    if path in PATHS:
        return PATHS[path]
    rel = os.path.relpath(path, SRC)[: -len(".rs")].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return rel


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> [[a, b], [a, c, d], [a, c, e]] (as far as paths go)."""
    tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+\w+", "", tree))
    paths = []

    def walk(prefix, s):
        i = s.find("{")
        if i < 0:
            paths.append(prefix + [p for p in s.split("::") if p])
            return
        head = [p for p in s[:i].split("::") if p]
        inner = s[i + 1 : s.rfind("}")]
        depth, start = 0, 0
        for k, ch in enumerate(inner + ","):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                part = inner[start:k]
                if part:
                    walk(prefix + head, part)
                start = k + 1

    walk([], tree)
    return paths


def resolve(segs, here, modules):
    """The module path a reference from module `here` lands in, or None if outside."""
    if not segs:
        return None
    if segs[0] == "crate":
        path = segs[1:]
    elif segs[0] in ("super", "self"):
        path = list(here)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                path = path[:-1]
            segs = segs[1:]
        path += segs
    elif tuple(here + [segs[0]]) in modules:
        path = here + segs
    else:
        return None
    # The longest prefix that is a module.
    for k in range(len(path), 0, -1):
        if tuple(path[:k]) in modules:
            return path[:k]
    return None


def references(path, modules):
    """(target module path, line) for each reference in one file."""
    text = strip(open(path, encoding="utf-8").read())
    base = file_module(path)
    found = []
    # Inline modules: a stack of (name, closing depth, is_test).
    stack, depth, test_next = [], 0, False
    token = re.compile(
        r"#\[cfg\(test\)\]|\b(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*\{|\buse\s+([^;]+);"
        r"|\b((?:crate|super|self|\w+)(?:::\w+)+)|[{}]"
    )
    for m in token.finditer(text):
        s = m.group(0)
        if s == "#[cfg(test)]":
            test_next = True
            continue
        if s == "{" or m.group(1):
            depth += 1
            if m.group(1):
                stack.append((m.group(1), depth, test_next))
            test_next = False
            continue
        if s == "}":
            if stack and stack[-1][1] == depth:
                stack.pop()
            depth -= 1
            continue
        if m.group(2) or m.group(3):
            test_now, test_next = test_next, False
        else:
            test_now = False
        if test_now or any(t for _, _, t in stack):
            continue
        here = base + [name for name, _, _ in stack]
        line = text.count("\n", 0, m.start()) + 1
        paths = expand_use(m.group(2)) if m.group(2) else [m.group(3).split("::")]
        for segs in paths:
            target = resolve(segs, here, modules)
            if target is not None:
                found.append((target, line))
    return found


def node(path, split):
    if split and path[0] in SPLIT and len(path) > 1:
        return "::".join(path[:2])
    return path[0]


def sccs(graph):
    """Tarjan's strongly connected components with more than one node."""
    index, low, on, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def shortest_path(graph, comp, start, goal):
    """One shortest path from `start` to `goal` inside `comp`, as a list of nodes."""
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w not in comp or w in prev:
                    continue
                prev[w] = v
                if w == goal:
                    path = [w]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return list(reversed(path))
                nxt.append(w)
        frontier = nxt
    return [start, goal]


def main():
    verbose = "--verbose" in sys.argv
    files = []
    for dirpath, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs"):
                files.append(os.path.join(dirpath, name))
    files = sorted(f for f in files if os.path.relpath(f, SRC) not in ("main.rs", "lib.rs"))
    for f in files:
        for m in re.finditer(
            r'#\[path\s*=\s*"([^"]+)"\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;',
            open(f, encoding="utf-8").read(),
        ):
            target = os.path.normpath(os.path.join(os.path.dirname(f), m.group(1)))
            PATHS[target] = file_module(f) + [m.group(2)]
    modules = {tuple(file_module(f)) for f in files}
    # Inline modules (`pub mod exit { .. }`) are reached as a prefix of their file's module.
    refs = {f: references(f, modules) for f in files}

    failed = False
    for graph_name, split in (("top", False), ("split", True)):
        graph, where = {}, {}
        for f, found in refs.items():
            src = node(file_module(f), split)
            for target, line in found:
                dst = node(target, split)
                if dst == src:
                    continue
                graph.setdefault(src, set()).add(dst)
                where.setdefault((src, dst), "%s:%d" % (os.path.relpath(f, ROOT), line))
        known = [set(k) for k in KNOWN[graph_name]]
        comps = sccs(graph)
        label = "modules" if not split else "modules, engine and status by submodule"
        if verbose:
            for (a, b), at in sorted(where.items()):
                print("%s: %s -> %s (%s)" % (graph_name, a, b, at))
        for comp in comps:
            tolerated = set(comp) in known
            print(
                "%s cycle between %s: %s"
                % ("known" if tolerated else "NEW", label, ", ".join(comp))
            )
            # Each edge of the cycle, where it is made, and the way back that closes it.
            for a in comp:
                for b in sorted(graph.get(a, ())):
                    if b in comp:
                        back = shortest_path(graph, comp, b, a)
                        print(
                            "    %s -> %s (%s), back by %s"
                            % (a, b, where[(a, b)], " -> ".join(back))
                        )
            failed |= not tolerated
        for k in known:
            if any(k < set(c) for c in comps):
                continue  # grown into a new cycle, reported above
            if k not in [set(c) for c in comps]:
                print("KNOWN cycle %s is not a cycle now: take it out of KNOWN" % sorted(k))
                failed = True
    if failed:
        print("dependency cycles: FAILED (see above; scripts/check-cycles.py says how)")
        return 1
    print("dependency cycles: none beyond the known ones")
    return 0


if __name__ == "__main__":
    sys.exit(main())
