/* opencon — strict JSON for the files people hand us: datasets, prompt sets, config.json,
 * tokenizer.json, classifier and probe configs. cJSON parses; on top of that a document must be
 * one value and nothing after it but whitespace, no object may repeat a key at any depth (cJSON
 * keeps the first of two, Python the last: a label would flip silently between the two), no
 * string may hold a NUL (raw or \u0000; cJSON cuts the string there) or a raw control character
 * (Python's json.loads rejects those too), every number follows JSON's grammar (cJSON reads 01,
 * 1. and -.5 with strtod; Python refuses them, and NaN, Infinity, +1, .5, 0x10) and fits a double
 * (1e400 is an error naming the number, not infinity), no UTF-8 byte-order mark precedes the value
 * (cJSON skips one; Python refuses it), and nesting is at most OC_JSON_MAX_DEPTH deep. Whitespace
 * is JSON's: space, tab, CR and LF (a \v or \f outside a string is an error). */
#ifndef OPENCON_JSON_H
#define OPENCON_JSON_H
#include <cjson/cJSON.h>

#include "opencon/base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define OC_JSON_MAX_DEPTH 128

/* Parse text[0, len) (NUL bytes in it are content, not its end). Errors read "path:LINE: ...",
 * where first_line is the line number of text[0]: 1 for a whole file, a JSONL row's own number
 * for that row. *out is NULL on failure; the caller cJSON_Delete()s it on success. */
int oc_json_parse(const char *text, size_t len, const char *path, int64_t first_line, cJSON **out, oc_error *err);
/* JSON whitespace only (space, tab, CR, LF; also true for n == 0): a JSONL line every reader
 * skips. A line with any other byte, \v and \f included, is a row, and so an error if not JSON. */
int oc_json_blank(const char *s, size_t n);
/* Read a whole file and parse it with oc_json_parse. */
int oc_json_parse_file(const char *path, cJSON **out, oc_error *err);
/* v as indented JSON text in path, written atomically. */
int oc_json_save(const cJSON *v, const char *path, oc_error *err);
/* A value as an error message shows it ("got ..."): its JSON text, cut to fit buf (with "..."). */
const char *oc_json_shown(const cJSON *v, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
