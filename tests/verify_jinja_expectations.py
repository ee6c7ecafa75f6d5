#!/usr/bin/python3
"""Render every expect(...) case of tests/test_jinja.c with Python jinja2 set up like
transformers' apply_chat_template (tests/jinja_compat.py's environment) and report any difference
from the expected string written in the test (ctest jinja_expectations). Run with /usr/bin/python3
(Debian's python3-jinja2)."""
import json
import os
import re
import sys
import time


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
    # jinja2 set up as tests/jinja_compat.py sets it up (transformers' settings), with the clock
    # test_jinja.c pins: 2024-07-26 00:00:00, shown in UTC
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jinja_compat

    jinja_compat.NOW = 1721952000
    os.environ["TZ"] = "UTC0"
    time.tzset()
    env = jinja_compat.make_env()
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
    print(f"jinja_expectations: {n} cases")
    print(f"{n - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "tests/test_jinja.c"))
