/* The strict JSON helper (opencon/json.h): what it accepts parses as cJSON does; repeated keys,
 * NULs, raw control characters, text after the value, deep nesting, numbers outside JSON's grammar
 * or a double's range and a byte-order mark are errors naming the file and the line. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "opencon/json.h"

static void expect_error(const char *text, size_t len, int64_t first_line, const char *needle) {
  oc_error e = {0};
  cJSON *j = (cJSON *)1;
  int rc = oc_json_parse(text, len, "x.json", first_line, &j, &e);
  CHECK(rc != 0 && j == NULL, "accepted: %.*s", (int)(len > 200 ? 200 : len), text);
  CHECK(rc != 0 && strstr(e.msg, needle) != NULL, "error for %.*s should contain \"%s\", got: %s", (int)(len > 200 ? 200 : len), text, needle,
        rc ? e.msg : "");
  CHECK(rc != 0 && e.code == OC_ERR_INVALID, "error code %d", e.code);
}
#define BAD(lit, needle) expect_error(lit, sizeof lit - 1, 1, needle)

static cJSON *ok(const char *text, size_t len) {
  oc_error e = {0};
  cJSON *j = NULL;
  CHECK(oc_json_parse(text, len, "x.json", 1, &j, &e) == 0 && j, "rejected %s: %s", text, e.msg);
  return j;
}
#define OK(lit) ok(lit, sizeof lit - 1)

int main(void) {
  /* valid documents parse to the same values cJSON gives */
  cJSON *j = OK("{\"a\": [1, {\"b\": \"x\\ty\"}], \"c\": {\"a\": 2}, \"d\": \"\\u00e9\\\\u0000\"}\n  \r\n");
  if (j) {
    CHECK(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "a"), 0)->valuedouble == 1, "a[0]");
    CHECK(strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "a"), 1), "b")->valuestring, "x\ty") == 0, "escaped tab");
    /* an escaped backslash followed by u0000 is text, not a NUL */
    CHECK(strcmp(cJSON_GetObjectItem(j, "d")->valuestring, "\xc3\xa9\\u0000") == 0, "\\\\u0000 is text: %s", cJSON_GetObjectItem(j, "d")->valuestring);
    cJSON_Delete(j);
  }
  cJSON_Delete(OK("[]"));
  cJSON_Delete(OK("\"s\""));

  /* repeated keys: cJSON keeps the first, Python the last */
  BAD("{\"label\": 0, \"label\": 1}", "x.json:1: duplicate key \"label\"");
  BAD("{\"a\": {\"b\": 1},\n \"c\": [{\"k\": 1},\n {\"k\": 2, \"z\": 0, \"k\": 3}]}", "x.json:3: duplicate key \"k\"");
  BAD("{\"a\": 1, \"\\u0061\": 2}", "duplicate key \"a\""); /* the same key spelled with an escape */
  const char *row = "{\"prompt\": \"p\", \"response\": \"r\", \"response\": \"s\"}";
  expect_error(row, strlen(row), 41, "x.json:41: duplicate key \"response\"");
  /* a large object (hashed, not compared pairwise): the repeat is found at its line */
  char big[40000];
  size_t k = (size_t)sprintf(big, "{\"vocab\": {\n");
  for (int i = 0; i < 2000; i++) k += (size_t)sprintf(big + k, "\"t%d\": %d,\n", i, i);
  k += (size_t)sprintf(big + k, "\"t1234\": 5}}");
  expect_error(big, k, 1, "x.json:2002: duplicate key \"t1234\"");
  k = (size_t)sprintf(big, "{\"vocab\": {\n");
  for (int i = 0; i < 2000; i++) k += (size_t)sprintf(big + k, "\"t%d\": %d,\n", i, i);
  k += (size_t)sprintf(big + k, "\"t2000\": 5}, \"t1\": {\"t1\": 0}}"); /* the same name in different objects is fine */
  cJSON_Delete(ok(big, k));

  /* NUL in a string, raw or escaped (cJSON would cut the string there), and raw control characters */
  BAD("{\"a\": \"x\\u0000y\"}", "x.json:1: a string holds a NUL character (\\u0000)");
  BAD("{\"a\\u0000b\": 1}", "NUL character");
  expect_error("{\"a\": \"x\0y\"}", 12, 1, "a string holds a NUL byte");
  BAD("{\"a\": \"x\ty\"}", "raw control character 0x09");
  BAD("{\n\"a\": \"x\ny\"}", "x.json:2: a string holds the raw control character 0x0a");
  expect_error("\0{\"a\": 1}", 9, 1, "NUL byte outside a string");
  BAD("{\"a\":\x01 1}", "control character outside a string");

  /* one value, then only whitespace (JSONL: junk after a row's object) */
  BAD("{\"a\": 1} x", "x.json:1: unexpected text after the JSON value at column 10");
  BAD("{\"a\": 1}{\"a\": 2}", "unexpected text");
  expect_error("{\"a\": 1}\n\0", 10, 1, "unexpected text");
  BAD("{\"a\": 1,\n \"b\": }", "x.json:2: not valid JSON");
  BAD("", "not valid JSON");
  BAD("   \n ", "not valid JSON: no value");

  /* numbers: what Python's json.loads accepts, and nothing cJSON's strtod would also take */
  j = OK("[0, -0, 12, -5, 1.5, -0.25, 1e5, 1E+5, 2.5e-3, 1e-400, 1.7976931348623157e308]");
  if (j) {
    const double want[] = {0, 0, 12, -5, 1.5, -0.25, 1e5, 1e5, 2.5e-3, 0, 1.7976931348623157e308};
    int i = 0;
    for (const cJSON *x = j->child; x; x = x->next, i++) CHECK(i < 11 && x->valuedouble == want[i], "number %d: %g", i, x->valuedouble);
    CHECK(i == 11, "%d numbers", i);
    cJSON_Delete(j);
  }
  cJSON_Delete(OK("-3"));
  cJSON_Delete(OK("{\"n\": \"01 1. +1 NaN\"}")); /* in a string they are text */
  BAD("{\"label\": 01}", "x.json:1: 01 is not a JSON number (a leading zero) at column 11");
  BAD("[-01]", "-01 is not a JSON number (a leading zero)");
  BAD("[00]", "00 is not a JSON number (a leading zero)");
  BAD("{\"label\": 1.}", "x.json:1: 1. is not a JSON number (no digit after the '.') at column 11");
  BAD("[1.e5]", "1.e5 is not a JSON number (no digit after the '.')");
  BAD("[-.5]", "-.5 is not a JSON number (no digit before the '.')");
  BAD("[.5]", ".5 is not a JSON number (no digit before the '.')");
  BAD("{\"a\":\n +1}", "x.json:2: +1 is not a JSON number (a leading '+') at column 2");
  BAD("[0x10]", "0x10 is not a JSON number (a hexadecimal number)");
  BAD("[NaN]", "NaN is not a JSON number (JSON has no NaN or Infinity)");
  BAD("[1, Infinity]", "Infinity is not a JSON number");
  BAD("{\"a\": -Infinity}", "-Infinity is not a JSON number");
  BAD("[1e]", "1e is not a JSON number (no digit in the exponent)");
  BAD("[1.5.3]", "1.5.3 is not a JSON number");
  BAD("[-]", "- is not a JSON number");
  /* past a double's range: an error naming what was written (cJSON holds it as inf, a label's
   * message said "got null") */
  BAD("{\"a\": [1,\n 2, {\"label\": 1e400}]}", "x.json:2: the number 1e400 is out of range");
  BAD("-1e400", "the number -1e400 is out of range");
  char digits[400];
  memset(digits, '9', 330);
  digits[330] = 0;
  expect_error(digits, 330, 1, "is out of range");

  /* a UTF-8 byte-order mark: cJSON skips one at the start, Python refuses it */
  BAD("\xef\xbb\xbf{\"a\": 1}", "x.json:1: a UTF-8 byte-order mark");
  BAD("\xef\xbb\xbf{\"a\": 1}", "remove it");
  const char bom_row[] = "\xef\xbb\xbf{\"prompt\": \"p\"}\n";
  expect_error(bom_row, sizeof bom_row - 1, 6, "x.json:6: a UTF-8 byte-order mark");
  BAD(" \xef\xbb\xbf[1]", "byte-order mark");
  BAD("[1,\xef\xbb\xbf 2]", "byte-order mark");
  cJSON_Delete(OK("[\"\xef\xbb\xbf\"]")); /* U+FEFF inside a string is text */

  /* whitespace is JSON's: \v and \f are not, and a line of only them is not blank */
  BAD("\v\f\n", "the control character 0x0b, which JSON does not count as whitespace");
  BAD("{\"a\": 1}\f", "unexpected text after the JSON value");
  BAD("\f{\"a\": 1}", "control character outside a string");
  CHECK(oc_json_blank("", 0) && oc_json_blank(" \t\r\n", 4), "JSON whitespace is blank");
  CHECK(!oc_json_blank("\v", 1) && !oc_json_blank(" \f\n", 3) && !oc_json_blank("\xef\xbb\xbf\n", 4) && !oc_json_blank(" x", 2),
        "\\v, \\f, a BOM or text make a line a row");

  /* escapes: cJSON reads a malformed \u escape as \u0000 (a hidden NUL); a string ending in "\uz"
   * at the very end of an unterminated buffer was read past its end (fuzz_safetensors) */
  BAD("\"a\\uzzzzb\"", "malformed escape");
  BAD("\"a\\u12\"", "not valid JSON"); /* these two cJSON refuses itself */
  BAD("\"a\\qb\"", "not valid JSON");
  BAD("\"a\\u0000b\"", "NUL character");
  cJSON_Delete(OK("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD83D\\uDE00\""));
  {
    static const char crash[] = "\n\"uu\\uu\\u\\uz\"\n";
    char *exact = malloc(sizeof crash - 1); /* no NUL after it: ASan sees any read past the end */
    REQUIRE(exact, "malloc");
    memcpy(exact, crash, sizeof crash - 1);
    expect_error(exact, sizeof crash - 1, 1, "malformed escape");
    free(exact);
  }

  /* nesting depth */
  char deep[2 * OC_JSON_MAX_DEPTH + 8];
  for (int d = 0; d < OC_JSON_MAX_DEPTH; d++) { deep[d] = '['; deep[2 * OC_JSON_MAX_DEPTH - 1 - d] = ']'; }
  cJSON_Delete(ok(deep, 2 * OC_JSON_MAX_DEPTH));
  char deeper[2 * OC_JSON_MAX_DEPTH + 8];
  for (int d = 0; d <= OC_JSON_MAX_DEPTH; d++) { deeper[d] = '['; deeper[2 * OC_JSON_MAX_DEPTH + 1 - d] = ']'; }
  expect_error(deeper, 2 * OC_JSON_MAX_DEPTH + 2, 1, "nested deeper than");
  /* far deeper than cJSON's own limit (1000), which refuses it first: still named as nesting, and
   * a string cut at the refusal point ("[...\"ab) is not read past */
  enum { FAR = 100000 };
  char *far = malloc(2 * FAR + 4);
  REQUIRE(far, "malloc");
  for (int d = 0; d < FAR; d++) { far[d] = '['; far[2 * FAR - 1 - d] = ']'; }
  expect_error(far, 2 * FAR, 1, "nested deeper than 128 levels at column 129");
  memcpy(far + 1200, "\"unterminated", 13);
  expect_error(far, 1213, 1, "nested deeper than 128 levels");
  free(far);

  /* files: the path and line in the message */
  char path[] = "/tmp/oc_json_XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0, "mkstemp");
  const char doc[] = "{\n  \"num_labels\": 2,\n  \"num_labels\": 3\n}\n";
  REQUIRE(write(fd, doc, sizeof doc - 1) == (ssize_t)(sizeof doc - 1), "write");
  close(fd);
  oc_error e;
  char want[64];
  snprintf(want, sizeof want, "%s:3: duplicate key \"num_labels\"", path);
  CHECK(oc_json_parse_file(path, &j, &e) != 0 && strstr(e.msg, want), "file error: %s", e.msg);
  unlink(path);
  CHECK(oc_json_parse_file(path, &j, &e) != 0 && e.code == OC_ERR_NOT_FOUND, "missing file: %s", e.msg);
  return check_summary("json");
}
