#!/usr/bin/env python3
"""Turns tap-parser's own snapshots (tapjs/tapjs, src/parser/tap-snapshots/test/parser/*.test.cjs)
into one compact expected-result JSON per fixture, in expected/node/.

Usage: convert_node.py <tapjs git dir> [commit]   (default commit: HEAD)

The snapshot of each fixture is the list of events tap-parser emitted (events-to-array), printed
by tcompare's formatter inside a JS template literal. Only the `bail=false` run is used. This
script parses that format (Array [ ], Object { }, Class { }, "quoted", String( multi-line ),
numbers, booleans, null, undefined) and rebuilds the document from the events:

- `version`, `plan`, `bailout`, `assert` and `child` events at each level;
- a child is attached to the next `assert` at its level whose Result has `closingTestPoint`;
  a child that no assert closes is an orphan (listed in `orphans`);
- counts are those of the `complete` FinalResults, except `fail`, which is recomputed from the
  asserts (`not ok` lines), because tap-parser also counts protocol errors into `fail`; those
  are `protocol_errors` (the failures entries that carry a `tapError`).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SNAP_DIR = "src/parser/tap-snapshots/test/parser"


class Undefined:
    pass


UNDEF = Undefined()


def template_body(js: str, key_suffix: str) -> str:
    """The text of the exports[...] whose key ends with key_suffix, template-unescaped."""
    pat = re.compile(r"exports\[`([^`]*)`\] = `((?:[^`\\]|\\.)*)`", re.S)
    for m in pat.finditer(js):
        if m.group(1).endswith(key_suffix):
            body = m.group(2)
            return re.sub(r"\\(.)", lambda x: x.group(1), body, flags=re.S)
    raise KeyError(key_suffix)


class Reader:
    def __init__(self, text: str):
        self.lines = text.split("\n")
        self.i = 0
        while self.i < len(self.lines) and not self.lines[self.i].strip():
            self.i += 1

    def value(self):
        line = self.lines[self.i]
        indent = len(line) - len(line.lstrip(" "))
        self.i += 1
        return self.inline(line.strip(), indent)

    def inline(self, tok: str, indent: int):
        tok = tok[:-1] if tok.endswith(",") else tok
        if tok == "Array [":
            out = []
            while self.lines[self.i].strip() not in ("]", "],"):
                out.append(self.value())
            self.i += 1
            return out
        if tok == "Array []":
            return []
        m = re.fullmatch(r"([A-Za-z]+) \{\}?", tok)
        if m:
            cls = m.group(1)
            out = {"__class__": cls} if cls != "Object" else {}
            if tok.endswith("{}"):
                return out
            while self.lines[self.i].strip() not in ("}", "},"):
                line = self.lines[self.i]
                ind = len(line) - len(line.lstrip(" "))
                self.i += 1
                km = re.fullmatch(r'("(?:[^"\\]|\\.)*"|[A-Za-z_$][\w$]*): (.*)', line.strip())
                if not km:
                    raise ValueError(f"bad object line {self.i}: {line!r}")
                key = km.group(1)
                key = json.loads(key) if key.startswith('"') else key
                out[key] = self.inline(km.group(2), ind)
            self.i += 1
            return out
        if tok == "String(":
            parts = []
            while True:
                line = self.lines[self.i]
                self.i += 1
                if line.strip() in (")", "),") and len(line) - len(line.lstrip(" ")) == indent:
                    break
                parts.append(line[indent + 2:])
            return "\n".join(parts)
        if tok.startswith('"'):
            return json.loads(tok)
        if tok == "null":
            return None
        if tok == "undefined":
            return UNDEF
        if tok in ("true", "false"):
            return tok == "true"
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if re.fullmatch(r"-?[\d.]+(e[+-]?\d+)?", tok):
            return float(tok)
        raise ValueError(f"unknown token at line {self.i}: {tok!r}")


def clean(v):
    """Diagnostics as JSON: drop undefined, class markers."""
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items() if k != "__class__" and x is not UNDEF}
    if isinstance(v, list):
        return [clean(x) for x in v]
    return None if v is UNDEF else v


def directive(res):
    for kind in ("skip", "todo"):
        val = res.get(kind)
        if val is not False and val is not None:
            return {"kind": kind, "reason": val if isinstance(val, str) else None}
    return None


def build(events):
    doc = {"version": None, "bailout": None, "tests": [], "orphans": []}
    pending = None
    # tap-parser's Result.id is 0 both for `ok` without a number and for `ok 0`; the last
    # test point line seen at this level tells them apart.
    explicit_zero = False
    for ev in events:
        kind = ev[0]
        if kind == "line" and isinstance(ev[1], str):
            m = re.match(r"(not )?ok( ([0-9]+))?", ev[1])
            if m:
                explicit_zero = m.group(3) is not None and int(m.group(3)) == 0
        if kind == "version":
            doc["version"] = ev[1]
        elif kind == "bailout":
            if doc["bailout"] is None:
                doc["bailout"] = ev[1] if isinstance(ev[1], str) else ""
        elif kind == "child":
            if pending is not None:
                doc["orphans"].append(pending)
            pending = build(ev[1])
        elif kind == "assert":
            res = ev[1]
            t = {
                "number": res["id"] if res["id"] != 0 or explicit_zero else None,
                "ok": res["ok"],
                "description": res["name"],
                "directive": directive(res),
                "time_ms": res["time"],
                "yaml": clean(res["diag"]) if res["diag"] not in (None, UNDEF) else None,
                "subtest": None,
            }
            if res.get("closingTestPoint") and pending is not None:
                t["subtest"] = pending
                pending = None
            doc["tests"].append(t)
        elif kind == "complete":
            fr = ev[1]
            fp = fr["plan"]
            doc["ok"] = fr["ok"]
            doc["count"] = fr["count"]
            doc["pass"] = fr["pass"]
            doc["todo"] = fr["todo"]
            doc["skip"] = fr["skip"]
            doc["plan"] = (
                None
                if fp["start"] is None
                else {
                    "start": fp["start"],
                    "end": fp["end"],
                    "skip_all": fp["skipAll"],
                    "comment": fp["comment"] or None,
                }
            )
            doc["protocol_errors"] = sum(
                1 for f in fr["failures"] if isinstance(f, dict) and f.get("tapError")
            )
    if pending is not None:
        doc["orphans"].append(pending)
    doc["fail"] = sum(1 for t in doc["tests"] if not t["ok"])
    return doc


def main():
    git_dir = sys.argv[1]
    commit = sys.argv[2] if len(sys.argv) > 2 else "HEAD"
    commit = subprocess.check_output(["git", "-C", git_dir, "rev-parse", commit], text=True).strip()
    names = subprocess.check_output(
        ["git", "-C", git_dir, "ls-tree", "--name-only", commit, SNAP_DIR + "/"], text=True
    ).split()
    out_dir = HERE / "expected" / "node"
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for path in names:
        fixture = Path(path).name[: -len(".test.cjs")]
        js = subprocess.check_output(["git", "-C", git_dir, "show", f"{commit}:{path}"], text=True)
        body = template_body(js, "output bail=false 1")
        events = Reader(body).value()
        doc = build(events)
        doc = {"fixture": fixture, "source": f"tapjs/tapjs@{commit}:{path}", **doc}
        (out_dir / (fixture[: -len(".tap")] + ".json")).write_text(
            json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=False) + "\n"
        )
        n += 1
    print(f"{n} expected results written to {out_dir}")


if __name__ == "__main__":
    main()
