/* Renders chat templates for tests/jinja_compat.py, which compares the results with Python
 * jinja2's byte for byte. Reads cases from a JSONL file, one per line:
 *   {"template": PATH, "config": {special tokens}, "messages": [...], "add_generation_prompt": bool,
 *    "options": {...}, "now": EPOCH}          rendered through oc_chat_render_opts
 *   {"source": TEMPLATE_TEXT, "vars": {...}, "now": EPOCH}   rendered with oc_template_render_opts
 * and writes one JSON line per case: {"ok": true, "text": ...} or {"ok": false, "error": ..., "code": ...}.
 * "now" pins strftime_now's clock (local time: the caller sets TZ). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/chat.h"

/* parsed templates by path, so each file is parsed once */
typedef struct {
  char *path;
  oc_template *t;
  oc_error err;
  int failed;
} cached;

static cached *template_for(cached **cache, int *n, const char *path) {
  for (int i = 0; i < *n; i++) if (!strcmp((*cache)[i].path, path)) return &(*cache)[i];
  cached *nc = realloc(*cache, sizeof *nc * (size_t)(*n + 1));
  if (!nc) return NULL;
  *cache = nc;
  cached *c = &nc[(*n)++];
  memset(c, 0, sizeof *c);
  c->path = strdup(path);
  char *src = NULL;
  c->failed = oc_read_file(path, &src, NULL, &c->err) || oc_template_parse(src, path, &c->t, &c->err);
  free(src);
  return c;
}

/* a JSON string of n bytes (rendered text may hold NUL bytes, which cJSON strings cannot) */
static void print_json_str(const char *s, size_t n) {
  putchar('"');
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') printf("\\%c", c);
    else if (c < 0x20) printf("\\u%04x", c);
    else putchar(c);
  }
  putchar('"');
}

static void print_result(int rc, const char *text, size_t len, const oc_error *e) {
  if (rc == 0) { printf("{\"ok\": true, \"text\": "); print_json_str(text, len); printf("}\n"); return; }
  printf("{\"ok\": false, \"error\": ");
  print_json_str(e->msg, strlen(e->msg));
  printf(", \"code\": \"%s\"}\n", oc_errcode_name(e->code));
}

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: jinja_render CASES.jsonl\n"); return 2; }
  FILE *f = fopen(argv[1], "r");
  if (!f) { perror(argv[1]); return 2; }
  cached *cache = NULL;
  int ncache = 0;
  char *line = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, f) > 0) {
    cJSON *c = cJSON_Parse(line);
    if (!c) { fprintf(stderr, "bad JSON case: %.80s\n", line); return 2; }
    const cJSON *now = cJSON_GetObjectItem(c, "now");
    oc_template_opts opts = {cJSON_IsNumber(now), cJSON_IsNumber(now) ? (int64_t)now->valuedouble : 0};
    oc_error e = {0};
    char *out = NULL;
    size_t len = 0;
    int rc;
    const cJSON *path = cJSON_GetObjectItem(c, "template"), *src = cJSON_GetObjectItem(c, "source");
    if (cJSON_IsString(path)) {
      cached *t = template_for(&cache, &ncache, path->valuestring);
      if (!t) { fprintf(stderr, "out of memory\n"); return 2; }
      if (t->failed) { rc = -1; e = t->err; }
      else rc = oc_chat_render_opts(t->t, cJSON_GetObjectItem(c, "config"), cJSON_GetObjectItem(c, "messages"),
                                    cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt")), cJSON_GetObjectItem(c, "options"),
                                    &opts, &out, &e);
      if (rc == 0) len = strlen(out);
    } else {
      oc_template *t = NULL;
      rc = oc_template_parse(cJSON_IsString(src) ? src->valuestring : "", "snippet", &t, &e);
      if (rc == 0) rc = oc_template_render_opts(t, cJSON_GetObjectItem(c, "vars"), &opts, &out, &len, &e);
      oc_template_free(t);
    }
    print_result(rc, out, len, &e);
    free(out);
    cJSON_Delete(c);
  }
  free(line);
  fclose(f);
  for (int i = 0; i < ncache; i++) { free(cache[i].path); oc_template_free(cache[i].t); }
  free(cache);
  return 0;
}
