/* --model_id resolution: local dir, Hugging Face cache layout, or download from the Hub. */
#include "opencon/hub.h"
#include "opencon/json.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *env_or(const char *v, const char *name) {
  if (v) return v;
  const char *e = getenv(name);
  return (e && *e) ? e : NULL;
}

char *oc_hub_cache_dir(const oc_hub_options *o) {
  const char *d = o ? o->cache_dir : NULL;
  if (d) return strdup(d);
  if ((d = env_or(NULL, "HF_HUB_CACHE"))) return strdup(d);
  if ((d = env_or(NULL, "HF_HOME"))) return oc_path_join(d, "hub");
  char buf[4096];
  const char *xdg = env_or(NULL, "XDG_CACHE_HOME");
  if (xdg) snprintf(buf, sizeof buf, "%s/huggingface/hub", xdg);
  else snprintf(buf, sizeof buf, "%s/.cache/huggingface/hub", env_or(NULL, "HOME") ? getenv("HOME") : ".");
  return strdup(buf);
}

static int valid_repo_id(const char *id) {
  const char *slash = strchr(id, '/');
  if (!slash || slash == id || !slash[1] || strchr(slash + 1, '/')) return 0;
  if (strstr(id, "..") || strstr(id, "--")) return 0;
  for (const char *p = id; *p; p++)
    if (!(*p == '/' || *p == '-' || *p == '_' || *p == '.' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
      return 0;
  return 1;
}

static int valid_revision(const char *r) {
  if (!*r || strstr(r, "..") || r[0] == '/') return 0;
  for (const char *p = r; *p; p++)
    if (*p < 0x21 || *p == '\\') return 0;
  return 1;
}

static char *repo_dir(const char *cache, const char *repo_id) {
  char name[512];
  snprintf(name, sizeof name, "models--%s", repo_id);
  for (char *p = name; *p; p++) if (*p == '/') { memmove(p + 2, p + 1, strlen(p + 1) + 1); p[0] = '-'; p[1] = '-'; p++; }
  return oc_path_join(cache, name);
}

static int is_commit_hash(const char *s) {
  if (strlen(s) != 40) return 0;
  for (const char *p = s; *p; p++) if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
  return 1;
}

char *oc_hub_find_cached(const char *repo_id, const oc_hub_options *o) {
  if (!valid_repo_id(repo_id)) return NULL;
  const char *rev = (o && o->revision) ? o->revision : "main";
  if (!valid_revision(rev)) return NULL;
  char *cache = oc_hub_cache_dir(o);
  char *rd = repo_dir(cache, repo_id);
  free(cache);
  char commit[128] = "";
  if (is_commit_hash(rev)) {
    snprintf(commit, sizeof commit, "%s", rev);
  } else {
    char path[4096];
    snprintf(path, sizeof path, "%s/refs/%s", rd, rev);
    FILE *f = fopen(path, "r");
    if (f) {
      if (fgets(commit, sizeof commit, f)) commit[strcspn(commit, "\r\n ")] = 0;
      fclose(f);
    }
  }
  char *out = NULL;
  if (*commit && is_commit_hash(commit)) {
    char snap[4096], cfg[4200];
    snprintf(snap, sizeof snap, "%s/snapshots/%s", rd, commit);
    snprintf(cfg, sizeof cfg, "%s/config.json", snap);
    if (oc_file_exists(cfg)) out = strdup(snap);
  }
  free(rd);
  return out;
}

/* ------------------------------------------------------------------ HTTP */
typedef struct {
  FILE *fp;
  char *mem;
  size_t len, cap;
  size_t limit;
} sink;

static size_t on_data(char *p, size_t sz, size_t nm, void *ud) {
  sink *s = ud;
  size_t n = sz * nm;
  if (s->fp) return fwrite(p, 1, n, s->fp);
  if (s->len + n > s->limit) return 0;
  if (s->len + n + 1 > s->cap) {
    size_t nc = (s->len + n + 1) * 2;
    char *m = realloc(s->mem, nc);
    if (!m) return 0;
    s->mem = m;
    s->cap = nc;
  }
  memcpy(s->mem + s->len, p, n);
  s->len += n;
  s->mem[s->len] = 0;
  return n;
}

typedef struct {
  const char *label;
  int quiet;
  curl_off_t base;
  double t0;
  double last;
} prog;

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
  (void)ultotal; (void)ulnow;
  prog *p = ud;
  if (p->quiet || !isatty(2)) return 0;
  double t = oc_now();
  if (t - p->last < 0.25) return 0;
  p->last = t;
  double rate = (double)dlnow / (t - p->t0 + 1e-9) / 1048576.0;
  double done = (double)(p->base + dlnow) / 1048576.0, total = (double)(p->base + dltotal) / 1048576.0;
  double eta = rate > 0 && dltotal > 0 ? (double)(dltotal - dlnow) / 1048576.0 / rate : 0;
  fprintf(stderr, "\rdownloading %s %.1f/%.1f MiB  %.1f MiB/s  ETA %.0fs   ", p->label, done, total, rate, eta);
  return 0;
}

static int http_get(const char *url, const char *token, sink *s, curl_off_t resume_from, prog *pg, long *status, oc_error *err) {
  CURL *h = curl_easy_init();
  if (!h) return oc_fail(err, "curl init failed");
  struct curl_slist *hdr = NULL;
  char auth[1024];
  if (token) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    hdr = curl_slist_append(hdr, auth);
  }
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "opencon/0.1");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 120L);
  /* Redirects to the CDN: curl (>= 7.58) drops a custom Authorization header when the host
   * changes, so the token is not forwarded. */
  if (resume_from > 0) curl_easy_setopt(h, CURLOPT_RESUME_FROM_LARGE, resume_from);
  if (pg) {
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, pg);
  }
  CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
  curl_slist_free_all(hdr);
  curl_easy_cleanup(h);
  if (pg && !pg->quiet && isatty(2)) fprintf(stderr, "\n");
  if (rc != CURLE_OK && !(rc == CURLE_HTTP_RETURNED_ERROR)) return oc_fail(err, "%s: %s", url, curl_easy_strerror(rc));
  return 0;
}

static int wanted_file(const char *f) {
  if (!*f || strchr(f, '/') || strstr(f, "..") || f[0] == '.') return 0;
  size_t n = strlen(f);
#define ENDS(s) (n >= strlen(s) && strcmp(f + n - strlen(s), s) == 0)
  return ENDS(".json") || ENDS(".safetensors") || ENDS(".jinja") || strcmp(f, "tokenizer.model") == 0;
#undef ENDS
}

static int download_file(const char *base_url, const char *repo_id, const char *commit, const char *file,
                         const char *snap, const oc_hub_options *o, const char *token, oc_error *err) {
  char url[4096], dst[4096], part[4200];
  if (snprintf(url, sizeof url, "%s/%s/resolve/%s/%s", base_url, repo_id, commit, file) >= (int)sizeof url ||
      snprintf(dst, sizeof dst, "%s/%s", snap, file) >= (int)sizeof dst ||
      snprintf(part, sizeof part, "%s.incomplete", dst) >= (int)sizeof part)
    return oc_fail(err, "%s: path or URL too long", file);
  if (oc_file_exists(dst)) return 0;
  struct stat st;
  curl_off_t have = stat(part, &st) == 0 ? (curl_off_t)st.st_size : 0;
  FILE *fp = fopen(part, have ? "ab" : "wb");
  if (!fp) return oc_fail(err, "%s: cannot write: %s", part, strerror(errno));
  sink s = {.fp = fp};
  prog pg = {file, o && o->quiet, have, oc_now(), 0};
  long status = 0;
  int rc = http_get(url, token, &s, have, &pg, &status, err);
  if (rc == 0 && have > 0 && status == 200) {
    /* server ignored the range: start over */
    fclose(fp);
    fp = fopen(part, "wb");
    if (!fp) return oc_fail(err, "%s: cannot write: %s", part, strerror(errno));
    s.fp = fp;
    rc = http_get(url, token, &s, 0, &pg, &status, err);
  }
  int ferr = fflush(fp) != 0 || fsync(fileno(fp)) != 0;
  fclose(fp);
  if (rc) return oc_wrap(err, "downloading %s (partial data kept for resume)", file);
  if (status == 416 && have > 0) status = 206; /* already complete */
  if (status != 200 && status != 206) {
    if (status != 416) unlink(part);
    return oc_fail(err, "%s: HTTP %ld%s", url, status, status == 401 || status == 403 ? " (gated or private: set HF_TOKEN)" : "");
  }
  if (ferr) return oc_fail_code(err, OC_ERR_IO, "%s: write failed", part);
  if (rename(part, dst) != 0) return oc_fail_code(err, OC_ERR_IO, "%s: rename failed: %s", dst, strerror(errno));
  return 0;
}

int oc_hub_download(const char *repo_id, const oc_hub_options *o, char **snapshot_dir, oc_error *err) {
  *snapshot_dir = NULL;
  if (!valid_repo_id(repo_id)) return oc_fail(err, "\"%s\" is neither a local directory nor a Hub id of the form org/name", repo_id);
  const char *rev = (o && o->revision) ? o->revision : "main";
  if (!valid_revision(rev)) return oc_fail(err, "invalid revision \"%s\"", rev);
  const char *endpoint = env_or(o ? o->endpoint : NULL, "HF_ENDPOINT");
  if (!endpoint) endpoint = "https://huggingface.co";
  const char *token = env_or(o ? o->token : NULL, "HF_TOKEN");
  char base[2048];
  snprintf(base, sizeof base, "%s", endpoint);
  while (*base && base[strlen(base) - 1] == '/') base[strlen(base) - 1] = 0;
  char url[4096];
  snprintf(url, sizeof url, "%s/api/models/%s/revision/%s", base, repo_id, rev);
  sink s = {.limit = 64u << 20};
  long status = 0;
  if (http_get(url, token, &s, 0, NULL, &status, err)) { free(s.mem); return oc_wrap(err, "resolving %s", repo_id); }
  if (status != 200) {
    free(s.mem);
    return oc_fail(err, "%s: HTTP %ld%s", url, status, status == 401 || status == 403 ? " (gated or private: set HF_TOKEN)" : status == 404 ? " (no such model or revision)" : "");
  }
  cJSON *root = NULL;
  oc_error jerr;
  int bad = oc_json_parse(s.mem ? s.mem : "", s.len, url, 1, &root, &jerr);
  free(s.mem);
  if (bad) return oc_fail(err, "resolving %s: %s", repo_id, jerr.msg);
  const cJSON *sha = root ? cJSON_GetObjectItemCaseSensitive(root, "sha") : NULL;
  const cJSON *sib = root ? cJSON_GetObjectItemCaseSensitive(root, "siblings") : NULL;
  if (!cJSON_IsString(sha) || !is_commit_hash(sha->valuestring) || !cJSON_IsArray(sib)) {
    cJSON_Delete(root);
    return oc_fail(err, "%s: unexpected reply (no commit \"sha\" or \"siblings\")", url);
  }
  char *cache = oc_hub_cache_dir(o);
  char *rd = repo_dir(cache, repo_id);
  free(cache);
  char snap[4096], refs[4096], ref[4200];
  snprintf(snap, sizeof snap, "%s/snapshots/%s", rd, sha->valuestring);
  snprintf(refs, sizeof refs, "%s/refs", rd);
  snprintf(ref, sizeof ref, "%s/%s", refs, rev);
  int rc = oc_mkdirs(snap, err);
  if (!rc) rc = oc_mkdirs(refs, err);
  int n_files = 0;
  /* config.json first: a repo without one is no model */
  for (int pass = 0; pass < 2 && !rc; pass++)
    for (const cJSON *e = sib->child; e && !rc; e = e->next) {
      const cJSON *fn = cJSON_GetObjectItemCaseSensitive(e, "rfilename");
      if (!cJSON_IsString(fn) || !wanted_file(fn->valuestring)) continue;
      int is_cfg = strcmp(fn->valuestring, "config.json") == 0;
      if ((pass == 0) != is_cfg) continue;
      rc = download_file(base, repo_id, sha->valuestring, fn->valuestring, snap, o, token, err);
      n_files++;
    }
  if (!rc && n_files == 0) rc = oc_fail(err, "%s has no model files", repo_id);
  if (!rc && !is_commit_hash(rev)) {
    char *dirname = strdup(ref);
    char *slash = strrchr(dirname, '/');
    if (slash) { *slash = 0; rc = oc_mkdirs(dirname, err); }
    free(dirname);
    if (!rc) rc = oc_write_file_atomic(ref, sha->valuestring, strlen(sha->valuestring), err);
  }
  if (!rc) *snapshot_dir = strdup(snap);
  cJSON_Delete(root);
  free(rd);
  return rc;
}

int oc_resolve_model(const char *model_id, const oc_hub_options *o, char **dir, oc_error *err) {
  *dir = NULL;
  if (!model_id || !*model_id) return oc_fail(err, "empty --model_id");
  /* a model directory a writer (opencon quantize) left set aside when it died mid-replace is put
   * back first (the artifact recovery rule); nothing happens where there is nothing to recover */
  oc_error rerr;
  if (!oc_is_dir(model_id) && oc_artifact_dir_check(model_id, &rerr) == 0 && oc_artifact_dir_recover(model_id, &rerr)) {
    *err = rerr;
    return -1;
  }
  if (oc_is_dir(model_id)) {
    *dir = strdup(model_id);
    return 0;
  }
  if (model_id[0] == '/' || model_id[0] == '.' || !valid_repo_id(model_id))
    return oc_fail_code(err, OC_ERR_NOT_FOUND, "%s: no such directory, and not a Hub id of the form org/name", model_id);
  if ((*dir = oc_hub_find_cached(model_id, o))) return 0;
  const char *off = getenv("HF_HUB_OFFLINE");
  if ((o && o->offline) || (off && strcmp(off, "0") != 0 && *off)) {
    char *cache = oc_hub_cache_dir(o);
    oc_fail(err, "%s is not in the Hugging Face cache (%s) and downloads are off (HF_HUB_OFFLINE)", model_id, cache);
    free(cache);
    return -1;
  }
  return oc_hub_download(model_id, o, dir, err);
}
