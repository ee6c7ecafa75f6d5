#!/usr/bin/python3
"""Compatibility test: opencon's Jinja interpreter against Python jinja2, byte for byte.

Renders real chat templates over several conversations (system + multi-turn, tool calls and tool
results, add_generation_prompt both ways, thinking switches, documents, a pinned clock) and a list
of expression snippets with jinja2 set up exactly as transformers' apply_chat_template sets it up
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols + the generation tag,
raise_exception, strftime_now, transformers' tojson), renders the same cases with opencon through
tests/jinja_render.c, and compares. A case passes when both give the same text, or both fail (when
jinja2's failure is raise_exception(msg), an undefined value used, an attribute the sandbox refuses
or an assertion of its compiler, opencon's error must carry jinja2's message too).

Usage: /usr/bin/python3 tests/jinja_compat.py JINJA_RENDER_BINARY [--verbose]
Needs Debian's python3-jinja2 (scripts/install-deps.sh); no network.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

try:
    import jinja2
    from jinja2 import nodes
    from jinja2.exceptions import SecurityError, TemplateAssertionError, UndefinedError
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    sys.exit("jinja_compat: python3-jinja2 is missing (apt-get install python3-jinja2; see scripts/install-deps.sh)")

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
# a pinned clock, shown in a zone with DST rules written inline (no tzdata needed): 2024-07-26 00:30 EDT
NOW = 1721968200
TZ = "EST5EDT,M3.2.0,M11.1.0"


class GenerationTag(Extension):
    """transformers' AssistantTracker: {% generation %}...{% endgeneration %} renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_body", []), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


class RaiseException(Exception):
    pass


def make_env():
    def raise_exception(message):
        raise RaiseException(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.fromtimestamp(NOW).strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


# ---------------------------------------------------------------- conversations
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "The city name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit"},
            "days": {"type": "integer", "description": "Days of forecast", "default": 1}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "search", "description": "Search the web",
        "parameters": {"type": "object", "properties": {
            "queries": {"type": "array", "items": {"type": "string"}, "description": "Queries to run"},
            "safe": {"type": "boolean", "description": "Safe search"}},
            "required": ["queries"]}}},
]
# a schema with what real tool definitions carry: nested objects, arrays of objects, enums of
# numbers, oneOf, nullable, defaults of every type, examples, a return type
TOOLS_COMPLEX = [
    {"type": "function", "function": {
        "name": "book_trip", "description": "Book a trip with flights and hotels.",
        "parameters": {"type": "object", "properties": {
            "traveler": {"type": "object", "description": "Who travels", "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 80},
                "age": {"type": "integer", "minimum": 0, "maximum": 130, "nullable": True}},
                "required": ["name"]},
            "legs": {"type": "array", "description": "Flight legs", "items": {"type": "object", "properties": {
                "from": {"type": "string", "format": "iata"}, "to": {"type": "string"},
                "date": {"type": "string", "format": "date", "examples": ["2025-01-31"]}}, "required": ["from", "to"]}},
            "class": {"type": "string", "enum": ["economy", "business"], "default": "economy"},
            "seats": {"type": "integer", "enum": [1, 2, 4], "default": 1},
            "budget": {"oneOf": [{"type": "number", "description": "in euros"}, {"type": "string", "format": "currency"}]},
            "tags": {"type": ["string", "null"], "description": "Free text"},
            "flexible": {"type": "boolean", "default": False},
            "extras": {"type": "object", "additionalProperties": {"type": "string"}},
            "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}},
            "required": ["traveler", "legs"]},
        "return": {"type": "object", "description": "The booking"}}},
    {"type": "function", "function": {"name": "ping", "description": "No parameters.",
                                      "parameters": {"type": "object", "properties": {}}}},
]
DOCS = [{"title": "Moon", "text": "The Moon orbits the Earth.", "doc_id": 1},
        {"title": "Sun", "text": "The Sun is a star.", "doc_id": 2}]
TRICKY = "Ünïcödé — 日本語 😀 \"double\" 'single' \\ back\\slash {{ not a tag }} {% nor this %}\ttab\n\nline  "


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def tool_call_turn(arguments):
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call12345", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]}


TOOL_RESULT = {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"temperature\": 21, \"unit\": \"celsius\"}"}

CONVERSATIONS = {
    "single": [user("How do I verify npm package integrity?")],
    "exchange": [user("What is 2+2?"), assistant("2 + 2 = 4.")],
    "system_multi": [{"role": "system", "content": "You are a careful assistant."}, user("Hi!"), assistant("Hello. How can I help?"),
                     user("Explain SQL injection at a high level.")],
    "long": [m for i in range(12) for m in (user(f"question {i}"), assistant(f"answer {i}"))] + [user("last question")],
    "tricky_text": [{"role": "system", "content": "  padded system  \n"}, user(TRICKY), assistant(TRICKY), user("  again  ")],
    "thinking": [user("Think first."), assistant("<think>\nstep 1\nstep 2\n</think>\n\nThe answer is 4."), user("And now?")],
    "reasoning_field": [user("q"), {"role": "assistant", "content": "a", "reasoning_content": "hidden"}, user("q2")],
    "tool_call": [user("What is the weather in Paris?"), tool_call_turn({"city": "Paris", "unit": "celsius"}), TOOL_RESULT,
                  assistant("It is 21 °C in Paris.")],
    "tool_call_str": [user("Weather in Oslo?"), tool_call_turn("{\"city\": \"Oslo\"}"), TOOL_RESULT],
    "list_content": [user([{"type": "text", "text": "Describe this:"}, {"type": "image"}]), assistant("A cat.")],
    "empty": [user(""), assistant("")],
    "bad_roles": [user("a"), user("b")],
}
# (conversation, options) pairs per template; tools go in options as oc_chat_render takes them
VARIANTS = [(name, {}) for name in CONVERSATIONS] + [
    ("single", {"tools": TOOLS}),
    ("single", {"tools": TOOLS_COMPLEX}),
    ("tool_call", {"tools": TOOLS_COMPLEX}),
    ("tool_call", {"tools": TOOLS}),
    ("tool_call_str", {"tools": TOOLS}),
    ("system_multi", {"tools": TOOLS}),
    ("single", {"enable_thinking": False}),
    ("thinking", {"enable_thinking": True}),
    ("single", {"documents": DOCS}),
    ("system_multi", {"documents": DOCS, "tools": TOOLS, "enable_citations": True}),
    ("single", {"builtin_tools": ["brave_search", "wolfram_alpha"], "tools": TOOLS}),
    ("tool_call", {"builtin_tools": ["get_weather"], "tools": TOOLS}),
    ("single", {"thinking": True}),
    ("single", {"controls": {"citations": True, "length": "short"}, "documents": DOCS}),
    ("single", {"date_string": "01 Jan 2025", "tools_in_user_message": False, "tools": TOOLS}),
    ("single", {"reasoning_effort": "high", "model_identity": "You are a test."}),
]


def chat_templates():
    """(name, path, special tokens) of every template the test covers"""
    out = []
    for d in sorted((FIXTURES / "tokenizers").iterdir()):
        t = d / "chat_template.jinja"
        if not t.exists():
            continue
        cfg = {}
        if (d / "tokenizer_config.json").exists():
            cfg = json.loads((d / "tokenizer_config.json").read_text())
        toks = {}
        for k in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
            v = cfg.get(k)
            if isinstance(v, dict):
                v = v.get("content")
            if isinstance(v, str) and v:
                toks[k] = v
        if not cfg:
            toks = {"bos_token": "<bos>", "eos_token": "<eos>"}
        out.append((f"tokenizers/{d.name}", t, toks))
    meta = json.loads((FIXTURES / "templates" / "templates.json").read_text())
    for name, toks in sorted(meta.items()):
        out.append((f"templates/{name}", FIXTURES / "templates" / name, toks))
    return out


# ---------------------------------------------------------------- snippets (expression semantics)
SNIPPETS = [
    # the issue's features
    ("{% set d = {0: 0, 512: 128} %}{{ d }}|{{ d[512] }}|{{ d[0.0] }}|{{ d|dictsort }}|{{ d.items()|list }}|{{ 512 in d }}", {}),
    ("{{ {1: 'a', 1.0: 'b', True: 'c'} }}|{{ {2: 1, 1: 2}|tojson }}|{{ {2: 1, 1: 2}|tojson(sort_keys=true) }}", {}),
    ("{{ {none: 1, (1, 2): 3}[(1, 2)] }}|{{ {none: 1}|tojson }}|{{ {1.5: 1}|tojson }}|{{ {true: 1} == {1: 1} }}", {}),
    ("{{ none|select|list }}|{{ none|reject|list }}|{{ none|selectattr('a')|list }}|{{ none|rejectattr('a')|list }}|{{ none|map('upper')|list }}", {}),
    ("{{ x|select|list }}|{{ x|map(attribute='a')|list }}|{{ 'x' in x }}|{{ 'x' not in x }}|{{ x|list }}|{{ x|length }}", {}),
    ("{{ '\\101\\x41\\u0041\\U00000041\\q|\\a\\b\\f\\v|\\0|\\777|\\\n' }}|{{ 'a\\\nb' }}|{{ \"\\u00e9\\x7f\" }}", {}),
    ("{% filter upper %}ab{{ 'c' }}{% endfilter %}|{% filter replace('a', 'b')|trim %}  aa  {% endfilter %}", {}),
    ("{% set x | upper %}abc{% endset %}{{ x }}", {}),
    ("{{ strftime_now('%Y-%m-%d %H:%M:%S %a %b %d %j %p %I %y %A %B %%|%f|%z|%Z|') }}", {}),
    ("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%B %d, %Y') }}|{{ strftime_now('') }}", {}),
    # arithmetic (Python semantics, integers within 64 bits)
    ("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ -2 ** 2 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}", {}),
    ("{{ 9223372036854775807 }} {{ -9223372036854775807 - 1 }} {{ (-9223372036854775807-1) % -1 }} {{ 3 * 'ab' }} {{ 'ab' * -1 }} {{ [1] * 3 }}", {}),
    ("{{ 1 + 2.5 }} {{ 0.1 + 0.2 }} {{ 1e15 }} {{ 1e16 }} {{ 0.0001 }} {{ 0.00001 }} {{ 1.5e300 }} {{ -0.0 }} {{ 2.0 }} {{ 1_000 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }}", {}),
    ("{{ true + 1 }} {{ 3 - true }} {{ 1 == 1.0 }} {{ true == 1 }} {{ [1] == (1,) }} {{ (1, 2) < (1, 3) }} {{ [1, 2] < [1, 2, 0] }}", {}),
    ("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 < 2 == 2 }} {{ 'a' in 'cat' in 'concatenate' }}", {}),
    ("{{ 'abc'[1::9223372036854775807] }}|{{ 'abc'[::-9223372036854775807] }}|{{ 'héllo'[1:3] }}|{{ 'héllo'[-1] }}|{{ 'héllo'[::-1] }}|{{ 'abc'[1.5:] }}", {}),
    ("{{ [1,2,3,4,5][::2] }}|{{ [1,2,3][-100:100] }}|{{ [1,2,3][5:] }}|{{ (1,2,3)[1:] }}|{{ none[0] }}|{{ none.x }}|{{ [1][5] }}", {}),
    # strings
    ("{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a b c'.rsplit(' ', 1) }}", {}),
    ("{{ 'Hello World'.lower() }}|{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}|{{ 'ab'.upper() }}|{{ 'a-b c(d'|title }}|{{ 'they\\'re 1st'.title() }}", {}),
    ("{{ 'banana'.count('an') }}|{{ 'banana'.find('na') }}|{{ 'banana'.rfind('na') }}|{{ 'banana'.index('n') }}|{{ 'héllo'.find('l') }}|{{ 'a-b'.replace('-', '+') }}|{{ 'abc'.replace('', '.') }}", {}),
    ("{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ '-'.join(['a', 'b']) }}|{{ 'l1\\nl2\\r\\nl3'.splitlines() }}|{{ '12'.isdigit() }}|{{ 'aB'.islower() }}", {}),
    ("{{ 'héllo'|length }}|{{ 'héllo'|list }}|{{ 'héllo'|upper }}|{{ 'ÉCOLE'|lower }}|{{ '  x  '|trim }}|{{ 'xax'|trim('x') }}|{{ 'aaa'|replace('a', 'b', 2) }}", {}),
    ("{{ 'a\\tb\\n'|tojson }}|{{ 'é😀'|tojson }}|{{ 'é😀'|tojson(ensure_ascii=true) }}|{{ 'x\\u2028y\\x7f'|tojson }}|{{ ['é', '\\x00']|string }}", {}),
    ("{{ '<a href=\"x\">&\\'</a>'|e }}|{{ 'x'|escape }}|{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent('> ', blank=true) }}", {}),
    ("{{ 'one two  three'|wordcount }}|{{ 'abc'|reverse }}|{{ [1, 2]|reverse|list }}|{{ 'x'|center(5) if false else 'skip' }}", {}),
    # filters on sequences and mappings
    ("{{ [3, 1, 2]|sort }}|{{ ['b', 'A', 'c']|sort }}|{{ ['b', 'A', 'c']|sort(case_sensitive=true) }}|{{ [3, 1, 2]|sort(reverse=true) }}", {}),
    ("{{ ms|sort(attribute='n')|map(attribute='n')|list }}|{{ ms|map(attribute='n')|sum }}|{{ ms|sum(attribute='n') }}|{{ ms|max(attribute='n') }}|{{ ms|min(attribute='n') }}", {"ms": [{"n": 3}, {"n": 1}, {"n": 2}]}),
    ("{{ ['a', 'A', 'b', 'a']|unique|list }}|{{ ['a', 'A']|unique(case_sensitive=true)|list }}|{{ [1, 2, 1.0]|unique|list }}|{{ ['b', 'a']|min }}|{{ ['b', 'A']|max }}", {}),
    ("{{ {'b': 1, 'A': 2, 'c': 0}|dictsort }}|{{ {'b': 1, 'A': 2}|dictsort(true) }}|{{ {'b': 1, 'a': 2}|dictsort(by='value') }}|{{ {'b': 1, 'a': 2}|dictsort(reverse=true) }}", {}),
    ("{{ [1, 'null', 2]|reject('equalto', 'null')|list }}|{{ [1, 2, 3, 4]|select('odd')|list }}|{{ [1, 2, 3]|select('gt', 1)|list }}|{{ [0, 1, '', 'a']|select|list }}", {}),
    ("{{ ms|selectattr('r', 'equalto', 'u')|list|length }}|{{ ms|rejectattr('r', 'in', ['u'])|map(attribute='r')|join(',') }}|{{ ms|map(attribute='x', default='d')|list }}", {"ms": [{"r": "u"}, {"r": "a"}]}),
    ("{{ ms|map(attribute='a.b')|list }}|{{ ms|map(attribute='l.0')|list }}|{{ ms|join(', ', attribute='a.b') }}", {"ms": [{"a": {"b": 1}, "l": [5]}, {"a": {"b": 2}, "l": [6]}]}),
    ("{{ [1, 2]|first }}{{ [1, 2]|last }}|{{ []|first }}|{{ 'abc'|first }}|{{ {'k': 1}|first }}|{{ [[1, 2]]|map('first')|list }}|{{ ['a', 'b']|map('upper')|join }}", {}),
    ("{{ x|default('d') }}|{{ '' |default('d', true) }}|{{ none|default('d') }}|{{ 0|d('z', boolean=true) }}|{{ [1,2,3]|join('-') }}|{{ [1, none]|join }}", {}),
    ("{{ '12'|int + 1 }}|{{ '1.9'|int }}|{{ ' 12 '|int }}|{{ '1_0'|int }}|{{ '0x1A'|int }}|{{ '1A'|int(base=16) }}|{{ '1e3'|int }}|{{ 'nan'|int }}|{{ 'x'|int(7) }}|{{ 3.99|int }}|{{ -3.99|int }}|{{ true|int }}", {}),
    ("{{ '1.5'|float }}|{{ '1_0.5'|float }}|{{ 'inf'|float }}|{{ '0x10'|float }}|{{ 'abc'|float }}|{{ 2|float }}|{{ 2.5|round }}|{{ 3.5|round }}|{{ 2.675|round(2) }}|{{ 2.1|round(0, 'ceil') }}|{{ 7|round }}", {}),
    ("{{ -5|abs }}|{{ -2.5|abs }}|{{ [1, 2]|length }}|{{ {'a': 1}|length }}|{{ {'a': 1}|count }}|{{ {'a': 1}|list }}|{{ {'a': 1}|items|list }}|{{ x|items|list }}", {}),
    ("{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ [1, {}]|tojson(indent=1) }}|{{ d|tojson(separators=(',', ':')) }}|{{ []|tojson(indent=2) }}|{{ 1.0|tojson }}|{{ 1e100|tojson }}", {"d": {"a": 1, "b": [1, 2.5, None, True, "q\"\n"]}}),
    # tests
    ("{{ x is defined }} {{ none is none }} {{ 1 is number }} {{ true is number }} {{ true is integer }} {{ 1.0 is float }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is sequence }} {{ 'a' is iterable }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }}", {}),
    ("{{ 1 is sameas 1 }} {{ false is sameas false }} {{ none is sameas none }} {{ 'a' is lower }} {{ 'A' is upper }} {{ 'upper' is filter }} {{ 'odd' is test }} {{ 2 is in [1, 2] }} {{ 2 is gt 1 }} {{ x is not defined }} {{ namespace() is mapping }}", {}),
    # statements, scoping, loops, macros
    ("{% for x in [1,2,3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }};{% endfor %}", {}),
    ("{% for x in [] %}a{% else %}empty{% endfor %}|{% for x in [1,2,3,4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }},{% endfor %}|{% for x in [1,2,3] if x > 1 %}{{ x }}{{ loop.index }}{% endfor %}|{% for a, b in [(1, 2)] %}{{ a + b }}{% endfor %}", {}),
    ("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}|{% set ns = namespace(v=0) %}{% for i in [1,2] %}{% set ns.v = ns.v + i %}{% endfor %}{{ ns.v }}|{{ ns }}", {}),
    ("{% macro f(a, b='B') %}[{{ a }}{{ b }}]{% endmacro %}{{ f(1) }}{{ f(2, b='x') }}{{ f(a=3) }}|{% macro r(n) %}{% if n > 0 %}{{ n }}{{ r(n - 1) }}{% endif %}{% endmacro %}{{ r(3) }}", {}),
    ("{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}|{{ a }}|{% set a, b = 1, 2 %}{{ a }}{{ b }}|{% set t = 1, 2 %}{{ t }}|{{ 1, 2 }}", {}),
    ("{{ 'y' if 0 else 'n' }}{{ 'y' if 1 }}|{{ 0 or 'b' }}|{{ 1 and 'c' }}|{{ not 0 }}|{{ none is not none }}|{{ -x|default(2) if false else -3|abs }}", {}),
    ("{% if []|select %}generator{% endif %}|{{ (1,) }}|{{ () }}|{{ [] }}|{{ {} }}|{{ [none, true, 'x', 1.5] }}|{{ [[]|map('x')|list] }}|{{ dict(a=1) }}|{{ dict([('b', 2)]) }}", {}),
    ("{{ d.items is callable }}|{{ d['items'] }}|{{ d.get('items') }}|{{ d.get('zz', 'dflt') }}|{{ d.keys()|list }}|{{ d.values()|list }}", {"d": {"items": 5, "k": 1}}),
    ("{{ range(3)|list }}|{{ range(1, 10, 3)|list }}|{{ range(5, 0, -2)|list }}|{{ range(0)|list }}|{{ range(100000)|length }}", {}),
    ("a\n  {% if true %}\n  b\n  {% endif %}\nc|  {{- ' x ' -}}  |{# note #} d\n{%+ if true %}e{% endif +%}\nf\n{% raw %}{{ not evaluated }}{% endraw %}\n", {}),
    ("line1\r\nline2\rline3\n{% if true -%}\r\n  x\r\n{%- endif %}\n\n", {}),
    ("x\u00a0\u3000 {%- if true %}y{% endif -%}\u00a0\u200bz|{{\u00a0 1 }}|{{ {'a': {'b': {}}} }}|{{ {'a': 1}}}|{{ \"}}\" }}", {}),
    ("{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, x=4) }}|{% macro n(x, y=x) %}{{ x }}{{ y }}{% endmacro %}{{ n(1) }}", {}),
    ("{% if false %}{{ x|frobnicate }}{% endif %}{{ 0|bool if false else 'n' }}|{{ x|frob if false else 'n' }}", {}),
    ("{% for x in [1,2,3] %}{{ loop.previtem }}-{{ loop.nextitem }},{% endfor %}|{% for a in [1,2] %}{% for b in [3] %}{{ loop.index }}{{ a }}{{ b }}{% endfor %}{% endfor %}", {}),
    ("{{ ['é', '\u200b', '\u00a0', '\u2028', '😀', '\ufeff', '\x85', '\\', \"'\"] }}|{{ {'é': ('ü',)} }}|{{ 1.1 * 3 }}|{{ 100 / 7 }}|{{ 2 ** 3 ** 2 }}", {}),
    ("{{ {'b': 1, 'a': {'d': 1, 'c': 2}}|tojson(sort_keys=true, indent=1) }}|{{ [1]|tojson(separators=(';', '=')) }}|{{ [[]]|tojson(indent=2) }}", {}),
    ("{{ 1 if false else x|frob }}", {}), ("{% for i in [] %}{{ i|frob }}{% endfor %}", {}), ("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", {}),
    ("{{ raise_exception('custom failure') }}", {}),
    ("{% if messages[0].role == 'system' %}{{ raise_exception('no system') }}{% endif %}ok", {"messages": [{"role": "user"}]}),
    # the hostile-input review's silent differences: int's base and Python's number parsing, exact
    # int/float comparison, the final sigma, loop.cycle / loop.changed, sandboxed attributes
    ("{{ '0x1A'|int(0, 16) }}|{{ '0x1A'|int(base=16) }}|{{ '0b11'|int(0, 2) }}|{{ '0o17'|int(0, 0) }}|{{ '010'|int(0, 0) }}|{{ '0_0'|int(5, 0) }}|{{ '0x_1a'|int(0, 16) }}|{{ '0x__1a'|int(0, 16) }}|{{ '12'|int(0, 1) }}|{{ '12'|int(0, 'x') }}|{{ '12'|int(0, none) }}|{{ '1e3'|int(0, 16) }}|{{ 'z'|int(0, 36) }}|{{ ' -0o17 '|int(0, 8) }}|{{ '0x1A'|int(0, 37) }}", {}),
    ("{{ '３'|int }}|{{ '٣'|int + 1 }}|{{ '１_０'|int }}|{{ '３.５'|float }}|{{ '３.５'|int }}|{{ '\u00a03\u2003'|int }}|{{ 'Ａ'|int(0, 16) }}|{{ '𝟗'|int }}|{{ '1\\x00'|float }}|{{ '²'|int(5) }}|{{ s|int }}", {"s": "\u0e53\u0e52"}),
    ("{{ 9007199254740993 == 9007199254740992.0 }}|{{ 9223372036854775807 == 9223372036854775808.0 }}|{{ 9007199254740993 > 9007199254740992.0 }}|{{ [9007199254740993, 9007199254740992.0]|max }}|{{ 1 <= (1e400 - 1e400) }}|{{ 1 >= (1e400 - 1e400) }}|{{ {9200000000000000000: 'a'}[9.2e18] }}|{{ -2 < -2.5 }}|{{ [1, 2] < [1, 2.5] }}|{{ 1e400 > 9223372036854775807 }}", {}),
    ("{{ 'ΣΑΣ'|lower }}|{{ 'ΟΔΟΣ ΣΑΣ.'|lower }}|{{ 'Σ'|lower }}|{{ 'AΣ\u0301'|lower }}|{{ 'AΣb'|lower }}|{{ 'ΑΣ'.lower() }}|{{ 'ΑΣ'|lower|upper }}|{{ 'ªΣ'|lower }}|{{ 'Σ\u00adΑ'|lower }}", {}),
    ("{% for x in [1, 2, 3] %}{{ loop.cycle('a', 'b') }}{{ loop.changed(x // 2) }}{% endfor %}|{% for x in [1, 1] %}{{ loop.changed() }}{% endfor %}|{% for x in [1] %}{{ loop }}{% endfor %}", {}),
    ("{{ ''.__class__ }}|{{ ''.__class__ is defined }}|{{ ''.__mro__ }}|{{ {'__x': 1}.__x }}|{{ ''['__class__'] }}|{{ ''|attr('__class__') }}|{{ ''.__class__ ~ 'a' }}", {}),
    # errors jinja2 words the same way: an undefined value used, an attribute the sandbox refuses, its compiler's assertions
    ("{% for x in [1, 2] %}{% set loop = 5 %}{% endfor %}", {}), ("{% for loop in [1] %}{% endfor %}", {}),
    ("{% if false %}{% for x in [] %}{% set a, loop = 1, 2 %}{% endfor %}{% endif %}", {}),
    ("{{ ''.__class__.__mro__ }}", {}), ("{{ ''.__len__() }}", {}), ("{{ d.a.b }}", {"d": {}}), ("{{ [1][5].x }}", {}),
    ("{{ none.x.y }}", {}), ("{{ namespace().a.b }}", {}), ("{% for x in [1] %}{{ loop.foo.bar }}{% endfor %}", {}),
    ("{% for x in [1] %}{{ loop.cycle() }}{% endfor %}", {}), ("{{ ([]|first).x }}", {}), ("{{ (1 if false).x }}", {}),
    ("{% macro f(a) %}{{ a.x }}{% endmacro %}{{ f() }}", {}), ("{{ x|frobnicate }}|{{ y is frobnicated }}", {}),
    # errors jinja2 also raises
    ("{{ 'a' + 1 }}", {}), ("{{ 1 // 0 }}", {}), ("{{ x.y }}", {}), ("{{ none|list }}", {}), ("{{ 'x' in none }}", {}),
    ("{{ range(1000000)|length }}", {}), ("{{ [1]|select|length }}", {}), ("{{ {[1]: 2} }}", {}), ("{{ x|tojson }}", {}),
    ("{% for a, b in [1] %}{% endfor %}", {}), ("{{ {2: 1, 'a': 2}|dictsort }}", {}), ("{% break %}", {}), ("{{ x|frobnicate }}", {}),
    ("{{ 'abc'[::0] }}", {}), ("{{ 2.0 ** 5000 }}", {}), ("{{ '\\x4' }}", {}), ("{{ [1, 2]|sum(start='') }}", {}),
]


# ---------------------------------------------------------------- rendering and comparing
_compiled = {}


def py_render(env, source, variables):
    """(ok, text or error message, kind) with jinja2"""
    try:
        if source not in _compiled:
            _compiled[source] = env.from_string(source)
        text = _compiled[source].render(**variables)
        text.encode("utf-8")
        return True, text, None
    except RaiseException as e:
        return False, str(e), "raise"
    except (UndefinedError, SecurityError, TemplateAssertionError) as e:  # opencon words these as jinja2 does
        return False, str(e), "message"
    except Exception as e:  # noqa: BLE001 - any jinja2 failure is a failure to compare with
        return False, f"{type(e).__name__}: {e}", "error"


def chat_vars(toks, messages, add_gen, options):
    """the variables transformers' apply_chat_template passes (and oc_chat_render builds)"""
    v = {"messages": messages, "tools": options.get("tools"), "documents": None, "add_generation_prompt": add_gen}
    v.update(toks)
    for k, x in options.items():
        if k != "tools":
            v[k] = x
    return v


def build_cases(env):
    cases = []  # (label, C case, python result)
    for name, path, toks in chat_templates():
        source = path.read_text(encoding="utf-8")
        for conv, options in VARIANTS:
            for add_gen in (False, True):
                msgs = CONVERSATIONS[conv]
                label = f"{name} {conv} {json.dumps(options, ensure_ascii=False)[:60]} gen={add_gen}"
                expected = py_render(env, source, chat_vars(toks, msgs, add_gen, options))
                case = {"template": str(path), "config": toks, "messages": msgs, "add_generation_prompt": add_gen,
                        "options": options, "now": NOW}
                cases.append((label, case, expected))
    # the fuzzing seeds of tests/test_text_mutate.c (deep nesting, repetition, number edges, features)
    seed_vars = {"messages": CONVERSATIONS["tool_call"], "tools": TOOLS}
    for path in sorted((FIXTURES / "templates" / "hostile").glob("*.jinja")):
        source = path.read_text(encoding="utf-8")
        cases.append((f"seed {path.name}", {"source": source, "vars": seed_vars, "now": NOW}, py_render(env, source, seed_vars)))
    for i, (source, variables) in enumerate(SNIPPETS):
        cases.append((f"snippet {i}: {source[:70]!r}", {"source": source, "vars": variables, "now": NOW},
                      py_render(env, source, variables)))
    return cases


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary, verbose = sys.argv[1], "--verbose" in sys.argv
    os.environ["TZ"] = TZ
    time.tzset()
    env = make_env()
    cases = build_cases(env)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
        for _, case, _ in cases:
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
        path = f.name
    try:
        run = subprocess.run([binary, path], capture_output=True, env=dict(os.environ, TZ=TZ), timeout=600)
    finally:
        os.unlink(path)
    if run.returncode != 0:
        sys.exit(f"jinja_render failed ({run.returncode}): {run.stderr.decode(errors='replace')}")
    results = [json.loads(line) for line in run.stdout.decode("utf-8").split("\n") if line]
    if len(results) != len(cases):
        sys.exit(f"jinja_render answered {len(results)} of {len(cases)} cases")
    passed = failed = both_failed = 0
    for (label, _, (ok, text, kind)), got in zip(cases, results):
        if ok and got["ok"] and got["text"] == text:
            passed += 1
            continue
        if not ok and not got["ok"] and (kind is None or kind == "error" or text in got["error"]):
            passed += 1
            both_failed += 1
            if verbose:
                print(f"both fail: {label}\n  jinja2 : {text}\n  opencon: {got['error']}")
            continue
        failed += 1
        print(f"DIFF {label}")
        print(f"  jinja2 : {'ok ' + repr(text) if ok else 'error ' + text}"[:3000])
        print(f"  opencon: {'ok ' + repr(got['text']) if got['ok'] else 'error ' + got['error']}"[:3000])
    print(f"jinja_compat: {len(cases)} cases ({both_failed} fail in both), {sum(1 for _ in chat_templates())} templates, "
          f"{len(SNIPPETS)} snippets")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
