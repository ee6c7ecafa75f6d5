/* The HTTP judge against a loopback server (libmicrohttpd): a reply body over the cap (1 MiB by
 * default; a 300 MB reply used to take 942 MB) is a judgment error, with or without a
 * Content-Length, and is not retried; the parsed fields are bounded; a reply with a repeated key
 * is malformed, not a guess. */
#include <math.h>
#include <microhttpd.h>
#include <string.h>

#include "check.h"
#include "opencon/jailbreak.h"

static const char *VERDICT = "{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": "
                             "\"{\\\"unsafe\\\": true, \\\"refusal\\\": false, \\\"confidence\\\": 0.8, \\\"category\\\": \\\"c\\\", \\\"rationale\\\": \\\"r\\\"}\"}}]}";

/* a chunked body of n bytes: spaces, then the verdict (so only its size is wrong) */
typedef struct { size_t n, sent; } stream;
static ssize_t stream_cb(void *cls, uint64_t pos, char *buf, size_t max) {
  stream *s = cls;
  (void)pos;
  if (s->sent >= s->n) return MHD_CONTENT_READER_END_OF_STREAM;
  size_t k = s->n - s->sent < max ? s->n - s->sent : max, vl = strlen(VERDICT);
  for (size_t i = 0; i < k; i++) {
    size_t at = s->sent + i;
    buf[i] = at + vl >= s->n ? VERDICT[at + vl - s->n] : ' ';
  }
  s->sent += k;
  return (ssize_t)k;
}

static int requests;

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method, const char *version,
                               const char *data, size_t *size, void **state) {
  (void)cls; (void)method; (void)version; (void)data;
  if (!*state) { *state = (void *)1; return MHD_YES; }
  if (*size) { *size = 0; return MHD_YES; }
  *state = NULL;
  __atomic_add_fetch(&requests, 1, __ATOMIC_SEQ_CST);
  struct MHD_Response *r;
  if (strcmp(url, "/chunked") == 0) { /* no Content-Length: the cap stops the transfer */
    stream *s = calloc(1, sizeof *s);
    s->n = 2u << 20;
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 65536, stream_cb, s, free);
  } else if (strcmp(url, "/sized") == 0) { /* Content-Length of 3 MiB: refused before the body */
    size_t n = 3u << 20;
    char *b = malloc(n);
    memset(b, ' ', n);
    memcpy(b + n - strlen(VERDICT), VERDICT, strlen(VERDICT));
    r = MHD_create_response_from_buffer(n, b, MHD_RESPMEM_MUST_FREE);
  } else if (strcmp(url, "/dup") == 0) {
    static const char dup[] = "{\"choices\": [{\"message\": {\"content\": \"{\\\"unsafe\\\": false, \\\"refusal\\\": false, \\\"unsafe\\\": true}\"}}]}";
    r = MHD_create_response_from_buffer(strlen(dup), (void *)dup, MHD_RESPMEM_PERSISTENT);
  } else {
    r = MHD_create_response_from_buffer(strlen(VERDICT), (void *)VERDICT, MHD_RESPMEM_PERSISTENT);
  }
  enum MHD_Result res = MHD_queue_response(c, 200, r);
  MHD_destroy_response(r);
  return res;
}

static void call(int port, const char *path, size_t cap, oc_judgment *j, char **raw) {
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
  oc_http_judge hj = {.url = url, .model = "m", .timeout_s = 10, .backoff_s = 0.001, .max_retries = 2, .max_reply_bytes = cap};
  oc_error e;
  *raw = NULL;
  requests = 0;
  REQUIRE(oc_http_judge_call(&hj, "{}", j, raw, &e) == 0, "judge setup: %s", e.msg);
}

static void field_bounds(void) {
  /* the rationale is cut at 2048 bytes on a character boundary; the category at 63; a confidence
   * outside [0, 1] is unknown */
  char *reply = malloc(20000), rat[9000], cat[200];
  size_t k = 0;
  for (int i = 0; i < 3000; i++) { memcpy(rat + k, "\xc3\xa9", 2); k += 2; } /* é: 2 bytes each, 6000 bytes */
  rat[k] = 0;
  k = 0;
  cat[k++] = 'x';
  for (int i = 0; i < 40; i++) { memcpy(cat + k, "\xe2\x82\xac", 3); k += 3; } /* €: 3 bytes each */
  cat[k] = 0;
  snprintf(reply, 20000,
           "{\"choices\": [{\"message\": {\"content\": \"{\\\"unsafe\\\": 0, \\\"refusal\\\": \\\"true\\\", \\\"confidence\\\": 7, \\\"category\\\": \\\"%s\\\", "
           "\\\"rationale\\\": \\\"%s\\\"}\"}}]}",
           cat, rat);
  oc_judgment j;
  oc_error e;
  CHECK(oc_judge_parse_reply(reply, &j, &e) == 0, "long fields: %s", e.msg);
  if (j.rationale) {
    CHECK(strlen(j.rationale) == 2048 && memcmp(j.rationale, rat, 2048) == 0, "rationale kept %zu bytes", strlen(j.rationale));
    CHECK(strlen(j.category) == 61 && memcmp(j.category, cat, 61) == 0, "category cut at a character: %zu bytes", strlen(j.category));
    CHECK(isnan(j.confidence) && j.refusal == 1 && j.raw_unsafe == 0, "confidence 7 is unknown, flags parsed");
  }
  oc_judgment_free(&j);
  free(reply);
  /* an odd cut: the rationale of 1 + 2n bytes ends inside a character at 2048 */
  reply = malloc(20000);
  snprintf(reply, 20000, "{\"choices\": [{\"message\": {\"content\": \"{\\\"unsafe\\\": false, \\\"refusal\\\": false, \\\"rationale\\\": \\\"a%s\\\"}\"}}]}", rat);
  CHECK(oc_judge_parse_reply(reply, &j, &e) == 0 && j.rationale && strlen(j.rationale) == 2047, "odd cut: %s",
        j.rationale ? "wrong length" : e.msg);
  oc_judgment_free(&j);
  free(reply);
  /* a repeated key: cJSON would read the first "unsafe", Python the last */
  const char *dup = "{\"choices\": [{\"message\": {\"content\": \"{\\\"unsafe\\\": false, \\\"refusal\\\": false, \\\"unsafe\\\": true}\"}}]}";
  CHECK(oc_judge_parse_reply(dup, &j, &e) != 0, "repeated key in the verdict accepted");
  oc_judgment_free(&j);
  const char *dup2 = "{\"choices\": [{\"message\": {\"content\": \"{\\\"unsafe\\\": false, \\\"refusal\\\": false}\"}}], \"choices\": []}";
  CHECK(oc_judge_parse_reply(dup2, &j, &e) != 0 && strstr(e.msg, "duplicate key \"choices\""), "repeated key in the reply: %s", e.msg);
  oc_judgment_free(&j);
}

int main(void) {
  field_bounds();
  struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL, handler, NULL,
                                          MHD_OPTION_END);
  REQUIRE(d, "cannot start the loopback server");
  int port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
  oc_judgment j;
  char *raw;
  /* a normal reply under the default cap */
  call(port, "/ok", 0, &j, &raw);
  CHECK(!j.error && j.unsafe == 1 && raw && strcmp(raw, VERDICT) == 0 && requests == 1, "normal reply: %s", j.error ? j.error : "");
  oc_judgment_free(&j);
  free(raw);
  /* over the cap with and without a Content-Length: an error, one request, no reply kept */
  const char *paths[2] = {"/chunked", "/sized"};
  for (int k = 0; k < 2; k++) {
    call(port, paths[k], 0, &j, &raw);
    CHECK(j.error && strstr(j.error, "larger than the 1048576-byte limit") && raw == NULL && requests == 1, "%s: error %s, %d requests", paths[k],
          j.error ? j.error : "(none)", requests);
    oc_judgment_free(&j);
    free(raw);
  }
  /* the cap is an option: 4 MiB takes both */
  for (int k = 0; k < 2; k++) {
    call(port, paths[k], 4u << 20, &j, &raw);
    CHECK(!j.error && j.unsafe == 1 && raw, "%s under a 4 MiB cap: %s", paths[k], j.error ? j.error : "");
    oc_judgment_free(&j);
    free(raw);
  }
  /* a malformed (repeated-key) reply is retried, then recorded as an error with the reply */
  call(port, "/dup", 0, &j, &raw);
  CHECK(j.error && strstr(j.error, "malformed reply") && requests == 3 && raw, "repeated key: %s, %d requests", j.error ? j.error : "(none)", requests);
  oc_judgment_free(&j);
  free(raw);
  MHD_stop_daemon(d);
  return check_summary("judge");
}
