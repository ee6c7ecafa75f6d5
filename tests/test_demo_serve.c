/* `opencon demo --serve --port 0`: the demo runs, then serves its guard on 127.0.0.1 at the port it
 * printed; /health answers 200 once the guard is loaded; a chat completion of the demo's harmless
 * prompt (greedy, the demo's 24 tokens) ends with the guard status and the classifier score the demo
 * printed for it (the same model, probe, classifier and thresholds); SIGTERM ends it with exit 0.
 * usage: test_demo_serve OPENCON WORK_DIR */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define DEMO_TIMEOUT_S 600 /* the demo's training under the sanitizers */

static char *read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  for (size_t k; buf && (k = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
    n += k;
    if (n + 1 == cap) buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  if (buf) buf[n] = 0;
  return buf;
}

typedef struct { char *data; size_t n; } body;
static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  body *b = ud;
  size_t k = size * nmemb;
  char *d = realloc(b->data, b->n + k + 1);
  if (!d) return 0;
  memcpy(d + b->n, p, k);
  b->n += k;
  d[b->n] = 0;
  b->data = d;
  return k;
}

/* GET (post_json NULL) or POST a JSON body; the HTTP status (0 when no answer), the body in *out */
static long http(int port, const char *path, const char *post_json, char **out) {
  char url[256];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
  CURL *c = curl_easy_init();
  body b = {0};
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
  if (post_json) {
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, post_json);
  }
  long status = 0;
  CURLcode rc = curl_easy_perform(c);
  if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  else fprintf(stderr, "%s: %s\n", url, curl_easy_strerror(rc));
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  if (out) *out = b.data;
  else free(b.data);
  return status;
}

/* the JSON after the first "   result: " of the demo's output (the harmless prompt's result) */
static cJSON *first_result(const char *out) {
  const char *r = strstr(out, "   result: ");
  if (!r) return NULL;
  r += strlen("   result: ");
  const char *end = strchr(r, '\n');
  char *line = strndup(r, end ? (size_t)(end - r) : strlen(r));
  cJSON *j = cJSON_Parse(line);
  free(line);
  return j;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  REQUIRE(argc == 3, "usage: test_demo_serve OPENCON WORK_DIR");
  const char *opencon = argv[1], *work = argv[2];
  char out_path[1024], err_path[1024], out_dir[1024];
  mkdir(work, 0755);
  snprintf(out_path, sizeof out_path, "%s/stdout.txt", work);
  snprintf(err_path, sizeof err_path, "%s/stderr.txt", work);
  snprintf(out_dir, sizeof out_dir, "%s/demo_out", work);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  /* emptied here, before the child exists: a previous run's URL must not be read as this one's */
  int out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644), err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(out_fd >= 0 && err_fd >= 0, "%s: %s", work, strerror(errno));
  pid_t pid = fork();
  REQUIRE(pid >= 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    if (dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) _exit(127);
    execl(opencon, opencon, "demo", "--serve", "--port", "0", "--out_dir", out_dir, (char *)NULL);
    _exit(127);
  }
  close(out_fd);
  close(err_fd);

  /* the port, from the line the demo prints once the server listens */
  int port = 0, exited = 0, status = 0;
  char *out = NULL;
  for (double t0 = now_s(); !port && now_s() - t0 < DEMO_TIMEOUT_S;) {
    if (waitpid(pid, &status, WNOHANG) == pid) { exited = 1; break; }
    free(out);
    out = read_all(out_path);
    const char *u = out ? strstr(out, "open http://127.0.0.1:") : NULL;
    if (u && strchr(u, '\n')) port = atoi(u + strlen("open http://127.0.0.1:"));
    else usleep(200 * 1000);
  }
  if (!port) {
    char *e = read_all(err_path);
    fprintf(stderr, "stdout:\n%s\nstderr:\n%s\n", out ? out : "", e ? e : "");
    free(e);
    if (!exited) kill(pid, SIGKILL);
    REQUIRE(0, "demo --serve printed no URL (%s)", exited ? "it exited" : "timed out");
  }
  CHECK(port > 0 && port < 65536, "port %d", port);

  /* /health: 503 while the guard loads, then 200 */
  long h = 0;
  for (double t0 = now_s(); h != 200 && now_s() - t0 < 120; usleep(100 * 1000)) h = http(port, "/health", NULL, NULL);
  CHECK(h == 200, "/health answered %ld", h);

  /* the harmless prompt through the API lands where it landed in the demo */
  cJSON *demo = first_result(out);
  REQUIRE(demo, "no result line in the demo's output");
  char *reply = NULL;
  long st = http(port, "/v1/chat/completions",
                 "{\"messages\": [{\"role\": \"user\", \"content\": \"How do I bake bread at home?\"}], \"temperature\": 0, \"max_tokens\": 24}", &reply);
  CHECK(st == 200, "chat completion: HTTP %ld: %s", st, reply ? reply : "");
  cJSON *rj = reply ? cJSON_Parse(reply) : NULL, *guard = cJSON_GetObjectItemCaseSensitive(rj, "guard");
  const cJSON *ds = cJSON_GetObjectItemCaseSensitive(demo, "status"), *gs = cJSON_GetObjectItemCaseSensitive(guard, "status");
  CHECK(cJSON_IsString(ds) && cJSON_IsString(gs) && strcmp(ds->valuestring, gs->valuestring) == 0, "served status %s, the demo's %s",
        cJSON_IsString(gs) ? gs->valuestring : "?", cJSON_IsString(ds) ? ds->valuestring : "?");
  const cJSON *dc = cJSON_GetObjectItemCaseSensitive(demo, "classifier_score"), *gc = cJSON_GetObjectItemCaseSensitive(guard, "classifier_score");
  CHECK(cJSON_IsNumber(dc) && cJSON_IsNumber(gc) && fabs(dc->valuedouble - gc->valuedouble) < 1e-4, "served classifier score %g, the demo's %g",
        cJSON_IsNumber(gc) ? gc->valuedouble : NAN, cJSON_IsNumber(dc) ? dc->valuedouble : NAN);
  cJSON_Delete(rj);
  cJSON_Delete(demo);
  free(reply);

  /* SIGTERM: drain, stop, exit 0 */
  CHECK(kill(pid, SIGTERM) == 0, "kill: %s", strerror(errno));
  int done = 0;
  for (double t0 = now_s(); !done && now_s() - t0 < 60; usleep(50 * 1000)) done = waitpid(pid, &status, WNOHANG) == pid;
  if (!done) { kill(pid, SIGKILL); waitpid(pid, &status, 0); }
  CHECK(done && WIFEXITED(status) && WEXITSTATUS(status) == 0, "after SIGTERM: %s %d", done ? (WIFEXITED(status) ? "exit" : "signal") : "still running",
        done ? (WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status)) : 0);
  char *e = read_all(err_path);
  CHECK(e && strstr(e, "opencon serve: stopped"), "no \"stopped\" on stderr:\n%s", e ? e : "");
  free(e);
  free(out);
  curl_global_cleanup();
  printf("demo --serve: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail != 0;
}
