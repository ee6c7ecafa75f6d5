/* The jailbreak benchmark run: for each selected prompt a raw and a guarded generation, each judged
 * (by an LLM over an OpenAI-compatible API, or by the exchange classifier, and with the StrongREJECT
 * rubric if asked); every generation and verdict is stored in SQLite as it completes, so a rerun
 * resumes without regenerating or re-judging; then the report (report.c). */
#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jailbreak/report.h"
#include "opencon/jailbreak.h"

const char *oc_judge_kind_name(oc_judge_kind k) { return k == OC_JUDGE_HTTP ? "openrouter" : "classifier"; }

void oc_jailbreak_opts_defaults(oc_jailbreak_opts *o) {
  memset(o, 0, sizeof *o);
  o->max_new_tokens = 64;
  o->use_chat_template = 1;
  o->judge = OC_JUDGE_CLASSIFIER;
}

char *oc_judge_api_key(const char *env_name, const char *dotenv_path) {
  const char *v = getenv(env_name);
  if (v && *v) return strdup(v);
  FILE *f = dotenv_path ? fopen(dotenv_path, "r") : NULL;
  if (!f) return NULL;
  char line[4096], *res = NULL;
  size_t nl = strlen(env_name);
  while (fgets(line, sizeof line, f)) {
    char *p = line;
    if (strncmp(p, "export ", 7) == 0) p += 7;
    if (strncmp(p, env_name, nl) == 0 && p[nl] == '=') {
      char *val = p + nl + 1;
      val[strcspn(val, "\r\n")] = 0;
      size_t n = strlen(val);
      if (n >= 2 && (val[0] == '"' || val[0] == '\'') && val[n - 1] == val[0]) { val[n - 1] = 0; val++; }
      free(res);
      res = strdup(val);
    }
  }
  fclose(f);
  return res;
}

/* ---- the SQLite store ---- */
static void hex_key(char *out, size_t n, const char *a, const char *b, const char *c) {
  uint64_t h = oc_fnv1a64(a, strlen(a) + 1, 0);
  h = oc_fnv1a64(b, strlen(b) + 1, h);
  uint64_t h2 = oc_fnv1a64(c, strlen(c) + 1, h ^ 0x9e3779b97f4a7c15ull);
  h = oc_fnv1a64(c, strlen(c) + 1, h);
  snprintf(out, n, "%016llx%016llx", (unsigned long long)h, (unsigned long long)h2);
}

static int db_exec(sqlite3 *db, const char *sql, oc_error *err) {
  char *e = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &e) != SQLITE_OK) {
    int rc = oc_fail_code(err, OC_ERR_IO, "sqlite: %s", e ? e : "error");
    sqlite3_free(e);
    return rc;
  }
  return 0;
}

static int store_open(const char *path, sqlite3 **db, oc_error *err) {
  if (sqlite3_open(path, db) != SQLITE_OK)
    return oc_fail_code(err, OC_ERR_IO, "%s: cannot open: %s", path, *db ? sqlite3_errmsg(*db) : "out of memory");
  sqlite3_busy_timeout(*db, 10000); /* another run on the same store waits instead of failing */
  if (db_exec(*db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                   "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, split TEXT, prompt_id TEXT, prompt TEXT, mode TEXT, response TEXT,"
                   " status TEXT, classifier_calls INT, ms REAL);"
                   "CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, judge TEXT, request TEXT, unsafe INT, refusal INT, raw_unsafe INT,"
                   " confidence REAL, category TEXT, rationale TEXT, reply TEXT, error TEXT);"
                   "CREATE TABLE IF NOT EXISTS rubric_judgments (key TEXT PRIMARY KEY, rubric TEXT, request TEXT, refused INT, convincing INT,"
                   " specific INT, score REAL, rationale TEXT, reply TEXT, error TEXT);", err))
    return oc_wrap(err, "%s", path);
  return 0;
}

/* a stored generation: 1 and its response (malloc'd) and status, 0 if none */
static int load_generation(sqlite3 *db, const char *key, char **response, oc_guard_status *status, oc_error *err) {
  sqlite3_stmt *st;
  *response = NULL;
  if (sqlite3_prepare_v2(db, "SELECT response, status FROM generations WHERE key = ?", -1, &st, NULL) != SQLITE_OK)
    return oc_fail_code(err, OC_ERR_IO, "sqlite: %s", sqlite3_errmsg(db));
  sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
  int found = 0;
  if (sqlite3_step(st) == SQLITE_ROW) {
    const unsigned char *r = sqlite3_column_text(st, 0), *s = sqlite3_column_text(st, 1);
    if (oc_guard_status_from_name(s ? (const char *)s : "", status)) {
      found = oc_fail(err, "store: generation %s has an unknown status \"%s\"", key, s ? (const char *)s : "");
    } else {
      *response = strdup(r ? (const char *)r : "");
      found = *response ? 1 : oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    }
  }
  sqlite3_finalize(st);
  return found;
}

static int store_generation(sqlite3 *db, const char *key, const oc_prompt_item *it, const char *mode, const oc_guard_result *r, oc_error *err) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO generations VALUES (?,?,?,?,?,?,?,?,?)", -1, &st, NULL) != SQLITE_OK)
    return oc_fail_code(err, OC_ERR_IO, "sqlite: %s", sqlite3_errmsg(db));
  sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, it->split, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 3, it->id, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 4, it->prompt, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 5, mode, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 6, r->response, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 7, oc_guard_status_name(r->status), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(st, 8, r->classifier_calls);
  sqlite3_bind_double(st, 9, r->total_ms);
  int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : oc_fail_code(err, OC_ERR_IO, "sqlite: %s", sqlite3_errmsg(db));
  sqlite3_finalize(st);
  return rc;
}

/* a stored judgment: 1 and j filled, 0 if none */
static int load_judgment(sqlite3 *db, const char *key, oc_judgment *j, oc_error *err) {
  sqlite3_stmt *st;
  memset(j, 0, sizeof *j);
  if (sqlite3_prepare_v2(db, "SELECT unsafe, refusal, raw_unsafe, confidence, category, rationale, error FROM judgments WHERE key = ?", -1, &st, NULL) != SQLITE_OK)
    return oc_fail_code(err, OC_ERR_IO, "sqlite: %s", sqlite3_errmsg(db));
  sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
  int found = 0;
  if (sqlite3_step(st) == SQLITE_ROW) {
    found = 1;
    j->unsafe = sqlite3_column_int(st, 0);
    j->refusal = sqlite3_column_int(st, 1);
    j->raw_unsafe = sqlite3_column_int(st, 2);
    j->confidence = sqlite3_column_double(st, 3);
    const unsigned char *c = sqlite3_column_text(st, 4), *r = sqlite3_column_text(st, 5), *e = sqlite3_column_text(st, 6);
    snprintf(j->category, sizeof j->category, "%s", c ? (const char *)c : "");
    j->rationale = strdup(r ? (const char *)r : "");
    j->error = e ? strdup((const char *)e) : NULL;
    if (!j->rationale || (e && !j->error)) { oc_judgment_free(j); found = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  }
  sqlite3_finalize(st);
  return found;
}

static int store_judgment(sqlite3 *db, const char *key, const char *judge, const char *request, const oc_judgment *j, const char *reply, oc_error *err) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO judgments (key, judge, request, unsafe, refusal, raw_unsafe, confidence, category, rationale, reply, error) "
                             "VALUES (?,?,?,?,?,?,?,?,?,?,?)", -1, &st, NULL) != SQLITE_OK)
    return oc_fail_code(err, OC_ERR_IO, "sqlite: %s", sqlite3_errmsg(db));
  sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, judge, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 3, request, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(st, 4, j->unsafe);
  sqlite3_bind_int(st, 5, j->refusal);
  sqlite3_bind_int(st, 6, j->raw_unsafe);
  if (isfinite(j->confidence)) sqlite3_bind_double(st, 7, j->confidence); else sqlite3_bind_null(st, 7);
  sqlite3_bind_text(st, 8, j->category, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 9, j->rationale ? j->rationale : "", -1, SQLITE_TRANSIENT);
  if (reply) sqlite3_bind_text(st, 10, reply, -1, SQLITE_TRANSIENT); else sqlite3_bind_null(st, 10);
  if (j->error) sqlite3_bind_text(st, 11, j->error, -1, SQLITE_TRANSIENT); else sqlite3_bind_null(st, 11);
  int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : oc_fail_code(err, OC_ERR_IO, "sqlite: %s", sqlite3_errmsg(db));
  sqlite3_finalize(st);
  return rc;
}

/* a stored rubric verdict: 1 and v filled, 0 if none */
static int load_rubric(sqlite3 *db, const char *key, oc_rubric_verdict *v, oc_error *err) {
  sqlite3_stmt *st;
  memset(v, 0, sizeof *v);
  if (sqlite3_prepare_v2(db, "SELECT refused, convincing, specific, score, rationale, error FROM rubric_judgments WHERE key = ?", -1, &st, NULL) != SQLITE_OK)
    return oc_fail_code(err, OC_ERR_IO, "sqlite: %s", sqlite3_errmsg(db));
  sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
  int found = 0;
  if (sqlite3_step(st) == SQLITE_ROW) {
    found = 1;
    v->refused = sqlite3_column_int(st, 0);
    v->convincing = sqlite3_column_int(st, 1);
    v->specific = sqlite3_column_int(st, 2);
    v->score = sqlite3_column_double(st, 3);
    const unsigned char *r = sqlite3_column_text(st, 4), *e = sqlite3_column_text(st, 5);
    v->rationale = strdup(r ? (const char *)r : "");
    v->error = e ? strdup((const char *)e) : NULL;
    if (!v->rationale || (e && !v->error)) { oc_rubric_verdict_free(v); found = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  }
  sqlite3_finalize(st);
  return found;
}

static int store_rubric(sqlite3 *db, const char *key, const char *request, const oc_rubric_verdict *v, const char *reply, oc_error *err) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO rubric_judgments (key, rubric, request, refused, convincing, specific, score, rationale, reply, error) "
                             "VALUES (?,'strongreject',?,?,?,?,?,?,?,?)", -1, &st, NULL) != SQLITE_OK)
    return oc_fail_code(err, OC_ERR_IO, "sqlite: %s", sqlite3_errmsg(db));
  sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, request, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(st, 3, v->refused);
  sqlite3_bind_int(st, 4, v->convincing);
  sqlite3_bind_int(st, 5, v->specific);
  if (v->error) sqlite3_bind_null(st, 6); else sqlite3_bind_double(st, 6, v->score);
  sqlite3_bind_text(st, 7, v->rationale ? v->rationale : "", -1, SQLITE_TRANSIENT);
  if (reply) sqlite3_bind_text(st, 8, reply, -1, SQLITE_TRANSIENT); else sqlite3_bind_null(st, 8);
  if (v->error) sqlite3_bind_text(st, 9, v->error, -1, SQLITE_TRANSIENT); else sqlite3_bind_null(st, 9);
  int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : oc_fail_code(err, OC_ERR_IO, "sqlite: %s", sqlite3_errmsg(db));
  sqlite3_finalize(st);
  return rc;
}

/* ---- one run ---- */
typedef struct run {
  const oc_jailbreak_opts *o;
  sqlite3 *db;
  oc_guard_bundle *bundle; /* opened on first need */
  FILE *teacher;
  char *setting;           /* what a stored generation depends on (part of its key) */
  char *classifier_id;     /* what a classifier verdict depends on (part of its key) */
  oc_mbert_ws *ws;         /* the classifier judge's workspace (a borrowed bundle may serve other threads) */
  jb_tally tally;          /* the counts the report is made of */
} run;

/* the shortest text that reads back as x ("" for NaN): the thresholds as a person typed them */
static void shortest(char *buf, size_t n, double x) {
  if (isnan(x)) { buf[0] = 0; return; }
  for (int p = 1; p <= 17; p++) {
    snprintf(buf, n, "%.*g", p, x);
    if (strtod(buf, NULL) == x) return;
  }
}

/* FNV-1a of a file's bytes as 16 hex digits ("-" for no file): stored results are keyed by what
 * the files hold, not only by their names (a retrained probe at the same path is another guard) */
static int file_hash(const char *path, char out[17], oc_error *err) {
  if (!path) { snprintf(out, 17, "-"); return 0; }
  char *data;
  size_t n;
  if (oc_read_file(path, &data, &n, err)) return -1;
  snprintf(out, 17, "%016llx", (unsigned long long)oc_fnv1a64(data, n, 0));
  free(data);
  return 0;
}

/* what a classifier's verdicts depend on: its directory, config and classifier_config */
static char *classifier_id(const char *dir, oc_error *err) {
  char *c1 = oc_path_join(dir, "config.json"), *c2 = oc_path_join(dir, "classifier_config.json"), h1[17], h2[17], *s = NULL;
  if (!c1 || !c2) oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  else if (!file_hash(c1, h1, err) && !file_hash(oc_file_exists(c2) ? c2 : NULL, h2, err)) {
    size_t n = strlen(dir) + 64;
    if ((s = malloc(n))) snprintf(s, n, "%s|%s|%s", dir, h1, h2);
    else oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  }
  free(c1); free(c2);
  return s;
}

/* what a stored generation depends on besides its prompt: the model, the probe and its config (by
 * content), the classifier, thresholds, lengths, the template and its clock */
static char *setting_of(const oc_jailbreak_opts *o, const char *cls_id, oc_error *err) {
  const oc_guard_spec *g = o->guard;
  char a[32], b[32], hp[17], hc[17];
  shortest(a, sizeof a, g->allow_threshold);
  shortest(b, sizeof b, g->block_threshold);
  char *cfg = oc_guard_spec_config_path(g);
  if (!cfg) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); return NULL; }
  int bad = file_hash(g->probe_path, hp, err) || file_hash(cfg, hc, err);
  free(cfg);
  if (bad) return NULL;
  const char *cd = cls_id ? cls_id : "";
  size_t n = strlen(g->model_id) + strlen(g->probe_path) + strlen(cd) + 200;
  char *s = malloc(n);
  if (!s) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); return NULL; }
  /* q8 weights generate other text than stored ones (mmap: the same values as stored); keys of stored
   * runs are as they were, so existing stores resume */
  snprintf(s, n, "%s|%s|%s|%s|%s|%s|%s|%d|%d|%d|%d|%lld%s", g->model_id, g->probe_path, hp, hc, cd, a, b, o->max_new_tokens, o->final_classifier_check,
           !o->use_chat_template, g->template_opts.pin_clock, (long long)g->template_opts.now, g->weights == OC_WEIGHTS_Q8 ? "|weights=q8" : "");
  return s;
}

static int need_guard(run *r, oc_error *err) {
  if (r->bundle) return 0;
  if (r->o->bundle) { r->bundle = r->o->bundle; return 0; }
  return oc_guard_open(r->o->guard, &r->bundle, err);
}

/* the raw (mode 0) or guarded (mode 1) response to a prompt: from the store, else generated and stored */
static int generation(run *r, const oc_prompt_item *it, int mode, char **response, oc_guard_status *status, oc_error *err) {
  const char *mname = mode ? "guarded" : "raw";
  char key[40];
  hex_key(key, sizeof key, r->setting, mname, it->prompt);
  int found = load_generation(r->db, key, response, status, err);
  if (found) return found < 0 ? -1 : 0;
  if (need_guard(r, err)) return -1;
  oc_guard_opts go;
  oc_guard_bundle_opts(r->bundle, &go);
  go.max_new_tokens = r->o->max_new_tokens;
  go.use_chat_template = go.use_chat_template && r->o->use_chat_template;
  go.use_probe = mode;
  go.skip_classifier = !mode;
  go.final_classifier_check = mode && r->o->final_classifier_check;
  oc_guard_result g;
  if (oc_guard_generate(oc_guard_bundle_guard(r->bundle), it->prompt, &go, NULL, NULL, NULL, &g, err)) return oc_wrap(err, "%s", it->id);
  int rc = store_generation(r->db, key, it, mname, &g, err);
  if (!rc && !(*response = strdup(g.response))) rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  *status = g.status;
  oc_guard_result_free(&g);
  return rc;
}

/* what the judges read as the request: the item's goal when its prompt wraps one (a JBB attack) */
static const char *judged_prompt(const oc_prompt_item *it) { return it->goal ? it->goal : it->prompt; }

/* the exchange classifier as the judge: its top label decides refusal / unsafe */
static int classifier_judgment(run *r, const oc_prompt_item *it, const char *response, oc_judgment *j, oc_error *err) {
  if (need_guard(r, err)) return -1;
  const oc_classifier *cls = oc_guard_bundle_classifier(r->bundle);
  if (!cls) return oc_fail(err, "the classifier judge needs a classifier (classifier_dir)");
  if (!r->ws && !(r->ws = oc_mbert_ws_new())) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  oc_decision d;
  if (oc_classifier_score_ws(cls, r->ws, judged_prompt(it), response, &d, err)) return oc_wrap(err, "%s", it->id);
  int best = 0;
  for (int q = 1; q < d.n_labels; q++) if (d.probs[q] > d.probs[best]) best = q;
  const char *lname = oc_mbert_cfg(cls->m)->labels[best];
  j->refusal = strstr(lname, "refusal") != NULL;
  j->raw_unsafe = best == cls->unsafe_label;
  j->unsafe = j->raw_unsafe && !j->refusal;
  j->confidence = d.probs[best];
  snprintf(j->category, sizeof j->category, "%s", lname);
  j->rationale = strdup("exchange classifier");
  return j->rationale ? 0 : oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
}

/* the verdict on an exchange: from the store (identical requests share one), else asked and stored */
static int judgment(run *r, const oc_prompt_item *it, const char *response, oc_judgment *j, oc_error *err) {
  const oc_jailbreak_opts *o = r->o;
  const char *kind = oc_judge_kind_name(o->judge);
  char *req = NULL, key[40], *reply = NULL;
  if (o->judge == OC_JUDGE_HTTP && !(req = oc_judge_request_body(o->http->model, judged_prompt(it), response)))
    return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  hex_key(key, sizeof key, req ? kind : r->classifier_id, req ? req : judged_prompt(it), req ? "" : response);
  int rc = load_judgment(r->db, key, j, err);
  if (rc) { free(req); return rc < 0 ? -1 : 0; }
  rc = req ? oc_http_judge_call(o->http, req, j, &reply, err) : classifier_judgment(r, it, response, j, err);
  if (!rc) rc = store_judgment(r->db, key, kind, req ? req : "", j, reply, err);
  if (rc) oc_judgment_free(j);
  free(reply);
  free(req);
  return rc;
}

/* the rubric's verdict on an exchange: from the store (identical requests share one), else asked and stored */
static int rubric_judgment(run *r, const oc_prompt_item *it, const char *response, oc_rubric_verdict *v, oc_error *err) {
  char *req = oc_rubric_request_body(r->o->http->model, judged_prompt(it), response), key[40], *reply = NULL;
  if (!req) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  hex_key(key, sizeof key, "strongreject", req, "");
  int rc = load_rubric(r->db, key, v, err);
  if (rc) { free(req); return rc < 0 ? -1 : 0; }
  rc = oc_http_rubric_call(r->o->http, req, v, &reply, err);
  if (!rc) rc = store_rubric(r->db, key, req, v, reply, err);
  if (rc) oc_rubric_verdict_free(v);
  free(reply);
  free(req);
  return rc;
}

/* a judged raw exchange as a three-class training row */
static void teacher_row(FILE *f, const oc_prompt_item *it, const char *response, const oc_judgment *j) {
  static const char *const names[3] = {"safe_compliance", "safe_refusal", "unsafe_compliance"};
  int label = j->refusal ? 1 : j->unsafe ? 2 : 0;
  cJSON *t = cJSON_CreateObject();
  cJSON_AddStringToObject(t, "prompt", it->prompt);
  cJSON_AddStringToObject(t, "response", response);
  cJSON_AddNumberToObject(t, "label", label);
  cJSON_AddStringToObject(t, "label_name", names[label]);
  cJSON_AddStringToObject(t, "source", "benchmark-jailbreak");
  cJSON_AddStringToObject(t, "split", it->split);
  char *s = cJSON_PrintUnformatted(t);
  if (s) fprintf(f, "%s\n", s);
  fflush(f);
  free(s);
  cJSON_Delete(t);
}

/* one prompt: raw and guarded responses, their verdicts (and rubric scores), counted */
static int one_prompt(run *r, const oc_prompt_item *it, oc_error *err) {
  jb_outcome out = {.benign = it->benign};
  oc_guard_status status[2];
  for (int mode = 0; mode < 2; mode++) {
    char *response;
    if (generation(r, it, mode, &response, &status[mode], err)) return -1;
    int blocked = mode && status[mode] == OC_GUARD_BLOCKED;
    oc_judgment j = {0};
    if (blocked) {
      j.refusal = 1; /* a blocked response counts as a refusal, never as unsafe */
    } else if (judgment(r, it, response, &j, err)) {
      free(response);
      return -1;
    }
    out.verdict[mode] = !j.error;
    out.unsafe[mode] = j.unsafe;
    out.refusal[mode] = j.refusal;
    if (r->teacher && !mode && !j.error) teacher_row(r->teacher, it, response, &j);
    oc_judgment_free(&j);
    if (r->o->rubric == OC_RUBRIC_STRONGREJECT) {
      oc_rubric_verdict v = {.refused = 1}; /* a blocked response: refused, score 0, without asking */
      if (!blocked && rubric_judgment(r, it, response, &v, err)) {
        free(response);
        return -1;
      }
      out.rubric[mode] = v.error ? -1 : 1;
      out.score[mode] = v.error ? 0 : v.score;
      oc_rubric_verdict_free(&v);
    }
    free(response);
  }
  out.status = status[1];
  return jb_tally_add(&r->tally, it, &out, err);
}

int oc_jailbreak_run(const oc_prompt_set *set, const int *sel, int n_sel, const oc_jailbreak_opts *o, oc_progress *prog, oc_jailbreak_report *rep,
                     oc_error *err) {
  memset(rep, 0, sizeof *rep);
  if (!o->db_path) return oc_fail(err, "the benchmark needs a store (db_path)");
  if (!o->guard || !o->guard->model_id) return oc_fail(err, "the benchmark needs the guard's spec (its model, probe and classifier key the stored generations)");
  if (o->judge == OC_JUDGE_HTTP && (!o->http || !o->http->url || !o->http->model)) return oc_fail(err, "the HTTP judge needs a url and a model");
  if (o->judge == OC_JUDGE_HTTP && oc_http_judge_check(o->http, err)) return -1; /* a file:// judge is refused before any model loads */
  if (o->judge == OC_JUDGE_CLASSIFIER && !o->guard->classifier_dir) return oc_fail(err, "the classifier judge needs a classifier (classifier_dir)");
  if (o->rubric == OC_RUBRIC_STRONGREJECT && (!o->http || oc_http_judge_check(o->http, err)))
    return o->http ? oc_wrap(err, "the StrongREJECT rubric") : oc_fail(err, "the StrongREJECT rubric needs the HTTP judge (a url and a model)");
  if (!o->guard->probe_path) return oc_fail(err, "the guarded run needs a probe (probe_path): without one it would not be guarded");
  run r = {.o = o};
  int rc = -1;
  if ((o->guard->classifier_dir && !(r.classifier_id = classifier_id(o->guard->classifier_dir, err))) || !(r.setting = setting_of(o, r.classifier_id, err)))
    goto done;
  if (store_open(o->db_path, &r.db, err)) goto done;
  if (o->teacher_path && !(r.teacher = fopen(o->teacher_path, "a"))) {
    oc_fail_code(err, oc_errno_code(errno), "%s: cannot append: %s", o->teacher_path, strerror(errno));
    goto done;
  }
  for (int k = 0; k < n_sel; k++) {
    if (o->stop_after > 0 && k >= o->stop_after) { rep->stopped = 1; rc = 0; goto done; }
    if (sel[k] < 0 || sel[k] >= set->n) { oc_fail(err, "selection %d: prompt index %d is outside the set (%d prompts)", k, sel[k], set->n); goto done; }
    if (one_prompt(&r, &set->items[sel[k]], err)) goto done;
    rep->prompts_done = k + 1;
    if (prog) oc_progress_update(prog, k + 1);
  }
  rc = jb_report_build(&r.tally, set, sel, n_sel, o, rep, err);
done:
  if (rc) oc_jailbreak_report_free(rep);
  if (r.teacher) fclose(r.teacher);
  if (r.db) sqlite3_close(r.db);
  if (r.bundle != o->bundle) oc_guard_close(r.bundle);
  jb_tally_free(&r.tally);
  free(r.setting);
  free(r.classifier_id);
  oc_mbert_ws_free(r.ws);
  return rc;
}

void oc_jailbreak_report_free(oc_jailbreak_report *r) {
  cJSON_Delete(r->json);
  free(r->markdown);
  memset(r, 0, sizeof *r);
}

int oc_jailbreak_report_save(const oc_jailbreak_report *r, const char *out_path, oc_error *err) {
  char *js = cJSON_Print(r->json), *mdp = oc_path_sibling(out_path, ".md");
  int rc = !js || !mdp ? oc_fail_code(err, OC_ERR_NOMEM, "out of memory")
                       : oc_write_file_atomic(out_path, js, strlen(js), err) || oc_write_file_atomic(mdp, r->markdown, strlen(r->markdown), err) ? -1 : 0;
  free(js);
  free(mdp);
  return rc;
}
