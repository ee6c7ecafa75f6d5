/* --model_id resolution against a real HTTP server on loopback (libmicrohttpd) that serves
 * a fixture directory in the Hub's URL layout: download, token, cache reuse, resume,
 * errors, offline mode and the cache directory rules. */
#include <microhttpd.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "opencon/hub.h"
#include "opencon/model.h"

#define SHA "0123456789abcdef0123456789abcdef01234567"
static const char *g_fixture;
static int g_requests, g_range_from = -1, g_auth_ok, g_auth_seen;

static enum MHD_Result respond(struct MHD_Connection *c, unsigned code, const void *data, size_t len) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
  enum MHD_Result ret = MHD_queue_response(c, code, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **state) {
  (void)cls; (void)version; (void)upload; (void)upload_size; (void)state;
  if (strcmp(method, "GET") != 0) return respond(c, 405, "", 0);
  g_requests++;
  const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
  if (auth) { g_auth_seen++; if (strcmp(auth, "Bearer sekrit") == 0) g_auth_ok++; }
  if (strcmp(url, "/api/models/org/gated/revision/main") == 0) return respond(c, 401, "{}", 2);
  if (strcmp(url, "/api/models/org/tiny/revision/main") == 0) {
    const char *j = "{\"id\": \"org/tiny\", \"sha\": \"" SHA "\", \"siblings\": [{\"rfilename\": \"README.md\"}, "
                    "{\"rfilename\": \"config.json\"}, {\"rfilename\": \"model.safetensors\"}, {\"rfilename\": \"sub/evil.json\"}, "
                    "{\"rfilename\": \"../x.json\"}]}";
    return respond(c, 200, j, strlen(j));
  }
  const char *pre = "/org/tiny/resolve/" SHA "/";
  if (strncmp(url, pre, strlen(pre)) == 0) {
    const char *file = url + strlen(pre);
    if (strcmp(file, "config.json") && strcmp(file, "model.safetensors")) return respond(c, 404, "", 0);
    char *p = oc_path_join(g_fixture, file), *data;
    size_t len;
    oc_error e;
    int rc = oc_read_file(p, &data, &len, &e);
    free(p);
    if (rc) return respond(c, 500, "", 0);
    const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
    enum MHD_Result ret;
    long from;
    if (range && sscanf(range, "bytes=%ld-", &from) == 1 && from >= 0 && (size_t)from < len) {
      g_range_from = (int)from;
      struct MHD_Response *r = MHD_create_response_from_buffer(len - (size_t)from, data + from, MHD_RESPMEM_MUST_COPY);
      char cr[128];
      snprintf(cr, sizeof cr, "bytes %ld-%zu/%zu", from, len - 1, len);
      MHD_add_response_header(r, "Content-Range", cr);
      ret = MHD_queue_response(c, 206, r);
      MHD_destroy_response(r);
    } else {
      ret = respond(c, 200, data, len);
    }
    free(data);
    return ret;
  }
  return respond(c, 404, "not found", 9);
}

static int same_file(const char *a, const char *b) {
  char *x, *y;
  size_t nx, ny;
  oc_error e;
  if (oc_read_file(a, &x, &nx, &e) || oc_read_file(b, &y, &ny, &e)) return 0;
  int same = nx == ny && memcmp(x, y, nx) == 0;
  free(x);
  free(y);
  return same;
}

int main(int argc, char **argv) {
  REQUIRE(argc == 2, "usage: test_hub FIXTURE_DIR");
  g_fixture = argv[1];
  struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, handler, NULL,
                                          MHD_OPTION_END);
  REQUIRE(d, "cannot start the loopback server");
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
  REQUIRE(info && info->port, "no port");
  char endpoint[64], tmp[] = "/tmp/oc_hub_XXXXXX", cache[128];
  snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%u/", (unsigned)info->port);
  REQUIRE(mkdtemp(tmp), "mkdtemp");
  snprintf(cache, sizeof cache, "%s/hub", tmp);
  setenv("HF_ENDPOINT", endpoint, 1);
  setenv("HF_HUB_CACHE", cache, 1);
  setenv("HF_TOKEN", "sekrit", 1);
  unsetenv("HF_HUB_OFFLINE");
  oc_error e;
  oc_hub_options quiet = {.quiet = 1};
  char *dir = NULL;

  /* download into the cache layout */
  CHECK(oc_resolve_model("org/tiny", &quiet, &dir, &e) == 0, "download: %s", e.msg);
  char want[256];
  snprintf(want, sizeof want, "%s/models--org--tiny/snapshots/" SHA, cache);
  CHECK(dir && strcmp(dir, want) == 0, "snapshot dir %s", dir ? dir : "(null)");
  char a[512], b[512];
  snprintf(a, sizeof a, "%s/model.safetensors", want);
  snprintf(b, sizeof b, "%s/model.safetensors", g_fixture);
  CHECK(same_file(a, b), "downloaded weights differ");
  snprintf(a, sizeof a, "%s/README.md", want);
  CHECK(!oc_file_exists(a), "README.md is not a model file");
  snprintf(a, sizeof a, "%s/models--org--tiny/refs/main", cache);
  char *ref;
  CHECK(oc_read_file(a, &ref, NULL, &e) == 0 && strcmp(ref, SHA) == 0, "refs/main");
  free(ref);
  CHECK(g_auth_seen >= 3 && g_auth_ok == g_auth_seen, "HF_TOKEN sent as Bearer (%d of %d)", g_auth_ok, g_auth_seen);
  oc_model *m = NULL;
  CHECK(dir && oc_model_load(dir, &m, &e) == 0, "downloaded model loads: %s", e.msg);
  oc_model_free(m);
  free(dir);

  /* second resolve: served from the cache, no request */
  int before = g_requests;
  CHECK(oc_resolve_model("org/tiny", &quiet, &dir, &e) == 0 && g_requests == before, "cache hit made %d requests", g_requests - before);
  free(dir);

  /* resume: half a file left as .incomplete -> a Range request for the rest */
  snprintf(a, sizeof a, "%s/model.safetensors", want);
  char *data;
  size_t len;
  REQUIRE(oc_read_file(a, &data, &len, &e) == 0, "%s", e.msg);
  unlink(a);
  snprintf(b, sizeof b, "%s/model.safetensors.incomplete", want);
  REQUIRE(oc_write_file_atomic(b, data, len / 2, &e) == 0, "%s", e.msg);
  free(data);
  snprintf(a, sizeof a, "%s/models--org--tiny/refs/main", cache);
  unlink(a);
  CHECK(oc_resolve_model("org/tiny", &quiet, &dir, &e) == 0, "resume: %s", e.msg);
  CHECK(g_range_from == (int)(len / 2), "resume asked for bytes=%d- (want %zu)", g_range_from, len / 2);
  snprintf(a, sizeof a, "%s/model.safetensors", want);
  snprintf(b, sizeof b, "%s/model.safetensors", g_fixture);
  CHECK(same_file(a, b), "resumed file differs");
  free(dir);

  /* errors */
  CHECK(oc_resolve_model("org/missing", &quiet, &dir, &e) != 0 && strstr(e.msg, "404"), "404: %s", e.msg);
  CHECK(oc_resolve_model("org/gated", &quiet, &dir, &e) != 0 && strstr(e.msg, "401") && strstr(e.msg, "HF_TOKEN"), "401: %s", e.msg);
  CHECK(oc_resolve_model("not a model id", &quiet, &dir, &e) != 0 && strstr(e.msg, "org/name"), "bad id: %s", e.msg);
  CHECK(oc_resolve_model("org/../etc", &quiet, &dir, &e) != 0, "path traversal id must fail");
  setenv("HF_HUB_OFFLINE", "1", 1);
  CHECK(oc_resolve_model("org/other", &quiet, &dir, &e) != 0 && strstr(e.msg, "HF_HUB_OFFLINE"), "offline: %s", e.msg);
  CHECK(oc_resolve_model("org/tiny", &quiet, &dir, &e) == 0, "offline cache hit: %s", e.msg);
  free(dir);
  unsetenv("HF_HUB_OFFLINE");

  /* local directory wins; cache dir rules */
  CHECK(oc_resolve_model(g_fixture, &quiet, &dir, &e) == 0 && strcmp(dir, g_fixture) == 0, "local dir");
  free(dir);
  unsetenv("HF_HUB_CACHE");
  setenv("HF_HOME", tmp, 1);
  char *cd = oc_hub_cache_dir(NULL);
  CHECK(strcmp(cd, cache) == 0, "HF_HOME/hub: %s", cd);
  free(cd);
  setenv("HF_HUB_OFFLINE", "1", 1); /* must come from $HF_HOME/hub, not the server */
  CHECK(oc_resolve_model("org/tiny", &quiet, &dir, &e) == 0, "found through HF_HOME: %s", e.msg);
  free(dir);
  unsetenv("HF_HUB_OFFLINE");
  unsetenv("HF_HOME");
  setenv("HOME", "/home/someone", 1);
  unsetenv("XDG_CACHE_HOME");
  cd = oc_hub_cache_dir(NULL);
  CHECK(strcmp(cd, "/home/someone/.cache/huggingface/hub") == 0, "default cache dir: %s", cd);
  free(cd);

  MHD_stop_daemon(d);
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (system(cmd)) {}
  return check_summary("hub");
}
