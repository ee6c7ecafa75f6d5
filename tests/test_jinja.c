/* Jinja interpreter: Python semantics of the constructs chat templates use, whitespace
 * control, and errors that name line and column. Expected strings are what Python
 * Jinja2 3.1 prints for the same template (trim_blocks, lstrip_blocks): checked with
 * tests/verify_jinja_expectations.py against Jinja2 3.1.6. */
#include <string.h>

#include "check.h"
#include "opencon/template.h"

static void expect(const char *tmpl, const char *vars, const char *want) {
  oc_template *t;
  oc_error e;
  char *out = NULL;
  if (oc_template_parse(tmpl, "t", &t, &e)) { CHECK(0, "parse failed for %s: %s", tmpl, e.msg); return; }
  cJSON *v = cJSON_Parse(vars ? vars : "{}");
  if (oc_template_render(t, v, &out, NULL, &e)) CHECK(0, "render failed for %s: %s", tmpl, e.msg);
  else CHECK(strcmp(out, want) == 0, "%s\n  got  [%s]\n  want [%s]", tmpl, out, want);
  free(out);
  cJSON_Delete(v);
  oc_template_free(t);
}

static void expect_error(const char *tmpl, const char *vars, const char *needle) {
  oc_template *t;
  oc_error e = {0};
  char *out = NULL;
  int rc = oc_template_parse(tmpl, "t", &t, &e);
  if (rc == 0) {
    cJSON *v = cJSON_Parse(vars ? vars : "{}");
    rc = oc_template_render(t, v, &out, NULL, &e);
    cJSON_Delete(v);
    oc_template_free(t);
  }
  CHECK(rc != 0 && strstr(e.msg, needle), "%s: want an error with \"%s\", got %s", tmpl, needle, rc ? e.msg : out);
  free(out);
}

int main(void) {
  /* values print like Python str() */
  expect("{{ 1 }} {{ 1.5 }} {{ 2.0 }} {{ true }} {{ none }} {{ [1, 'a'] }} {{ {'k': \"it's\"} }}", NULL,
         "1 1.5 2.0 True None [1, 'a'] {'k': \"it's\"}");
  expect("{{ x }}|{{ x is defined }}|{{ y is none }}", "{\"y\": null}", "|False|True");
  /* arithmetic, integer division and modulo follow Python */
  expect("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 3 }} {{ 'ab' * 2 }} {{ 1 ~ 'x' }}", NULL, "3 -4 2 3.5 8 abab 1x");
  /* filters */
  expect("{{ '  hi \\n' | trim }}|{{ 'Hi' | upper }}|{{ 'Hi' | lower }}|{{ [3,1] | length }}|{{ 'héé' | length }}", NULL, "hi|HI|hi|2|3");
  expect("{{ x | default('d') }}|{{ '' | default('d', true) }}|{{ [1,2,3] | join('-') }}|{{ [1,2] | first }}{{ [1,2] | last }}", NULL,
         "d|d|1-2-3|12");
  expect("{{ {'b': 1, 'A': 2} | dictsort }}|{{ [1, 'null', 2] | reject('equalto', 'null') | list }}", NULL,
         "[('A', 2), ('b', 1)]|[1, 2]");
  expect("{{ ms | map(attribute='r') | join(',') }}|{{ ms | selectattr('r', 'equalto', 'u') | list | length }}", "{\"ms\": [{\"r\": \"u\"}, {\"r\": \"a\"}]}",
         "u,a|1");
  expect("{{ {'a': [1, 2.5, true, none, \"q\\\"\\n\"]} | tojson }}", NULL, "{\"a\": [1, 2.5, true, null, \"q\\\"\\n\"]}");
  expect("{{ d | tojson(indent=2) }}", "{\"d\": {\"a\": 1, \"b\": [1, 2]}}", "{\n  \"a\": 1,\n  \"b\": [\n    1,\n    2\n  ]\n}");
  expect("{{ 'aXbX' | replace('X', '-') }}|{{ '12' | int + 1 }}|{{ 5 | string }}", NULL, "a-b-|13|5");
  /* string methods with Python semantics: strip(chars) removes only those characters */
  expect("{{ '\\n x \\n'.strip('\\n') }}|{{ 'a,b'.split(',') }}|{{ ' a  b '.split() }}|{{ 'abc'.startswith('ab') }}", NULL,
         " x |['a', 'b']|['a', 'b']|True");
  expect("{{ 'abc'[1:] }}|{{ [1,2,3][::-1] }}|{{ 'abc'[-1] }}|{{ [1,2,3][1:2] }}", NULL, "bc|[3, 2, 1]|c|[2]");
  /* tests and operators */
  expect("{{ 'a' in 'cat' }} {{ 2 not in [1] }} {{ x is string }} {{ d is mapping }} {{ l is iterable }} {{ 3 is odd }}",
         "{\"x\": \"s\", \"d\": {}, \"l\": []}", "True True True True True True");
  expect("{{ 'y' if 0 else 'n' }}{{ 'y' if 1 }}|{{ 0 or 'b' }}|{{ 1 and 'c' }}", NULL, "ny|b|c");
  /* loops: loop.*, else, break/continue, unpacking, filters */
  expect("{% for x in [1,2,3] %}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}", NULL,
         "1TrueFalse3;2FalseFalse3;3FalseTrue3;");
  expect("{% for x in [] %}a{% else %}empty{% endfor %}|{% for x in [1,2,3,4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
         NULL, "empty|13");
  expect("{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}|{% for x in [1,2,3] if x > 1 %}{{ x }}{{ loop.index }}{% endfor %}", NULL,
         "a=1|2132");
  /* scoping: set in a loop does not leak; namespace does */
  expect("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}|{% set ns = namespace(v=0) %}{% for i in [1,2] %}{% set ns.v = ns.v + i %}{% endfor %}{{ ns.v }}",
         NULL, "1|3");
  /* macros with defaults, keyword arguments and recursion */
  expect("{% macro f(a, b='B') %}[{{ a }}{{ b }}]{% endmacro %}{{ f(1) }}{{ f(2, b='x') }}{{ f(a=3) }}", NULL, "[1B][2x][3B]");
  expect("{% macro r(n) %}{% if n > 0 %}{{ n }}{{ r(n - 1) }}{% endif %}{% endmacro %}{{ r(3) }}", NULL, "321");
  /* whitespace control: trim_blocks, lstrip_blocks, '-' modifiers, comments, raw */
  expect("a\n  {% if true %}\n  b\n  {% endif %}\nc", NULL, "a\n  b\nc");
  expect("a  {{- ' b ' -}}  c {# note #} d", NULL, "a b c  d");
  expect("{% raw %}{{ not evaluated }}{% endraw %}", NULL, "{{ not evaluated }}");
  expect("{% set s %}x{{ 1 }}{% endset %}[{{ s }}]", NULL, "[x1]");
  /* errors name line and column; raise_exception carries its message */
  expect_error("a\n{% if x %}", NULL, "t:2:4: 'if' without 'endif'");
  expect_error("{{ 1 + }}", NULL, "t:1:8");
  expect_error("ok\n  {% include 'x' %}", NULL, "t:2:6: unsupported template statement 'include'");
  expect_error("{% if false %}{{ x | frobnicate }}{% endif %}", NULL, "t:1:20: no filter named 'frobnicate'");
  expect_error("{{ raise_exception('bad roles') }}", NULL, "bad roles");
  expect_error("{{ 'unterminated }}", NULL, "t:1:1: unclosed tag");
  expect_error("{{ x.y }}", NULL, "'x' is undefined");
  expect_error("{% for a, b in [1] %}{% endfor %}", NULL, "cannot unpack");
  return check_summary("jinja");
}
