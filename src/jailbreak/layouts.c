/* The published layouts of benchmark prompt files, recognised by content (a CSV header, a JSON
 * file's keys, plain text), never by file name, and read into a prompt set: JSONL, CoCoNot, JSON
 * arrays (WildGuard, refusal-direction splits), JailbreakBench attack artifacts, prompt CSVs
 * (JailbreakBench, XSTest, AdvBench), HarmBench, StrongREJECT, SimpleSafetyTests, AdvBench
 * strings and plain text (MaliciousInstruct). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jailbreak/prompt_set.h"
#include "opencon/json.h"
#include "tok/text.h"

static const oc_prompt_layout_info LAYOUTS[OC_LAYOUT_COUNT] = {
    [OC_LAYOUT_JSONL] = {"jsonl", "prompt JSONL", "JSON lines with \"prompt\"",
                         "split: \"split\", else the file name; id: \"id\"; category: \"category\""},
    [OC_LAYOUT_COCONOT] = {"coconot", "CoCoNot JSONL", "JSON lines with id, category, subcategory, prompt",
                           "split: the file name; a file named *contrast* is CoCoNot's contrast set (benign); category: category / subcategory"},
    [OC_LAYOUT_JSON_ARRAY] = {"json-array", "prompt JSON array (WildGuard)", "a JSON array of {\"prompt\"|\"text\"}",
                              "split: \"split\", else \"label\" (safe -> benign, harmful / unsafe -> harmful), else the file name; category: \"category\""},
    [OC_LAYOUT_REFUSAL_DIRECTION] = {"refusal-direction", "refusal-direction splits", "a JSON array of {\"instruction\"}",
                                     "split: harmful_* -> harmful, harmless_* -> benign, else the file name; category: \"category\""},
    [OC_LAYOUT_JBB_ARTIFACT] = {"jbb-artifact", "JailbreakBench attack artifact", "JSON with parameters.method, jailbreaks[].prompt",
                                "split: parameters.method (each attack its own split); category: category; the judge reads goal; a null prompt is skipped"},
    [OC_LAYOUT_CSV] = {"csv", "prompt CSV", "CSV with a prompt, Goal, goal, text or question column",
                       "split: split, else label (safe / unsafe -> benign / harmful), else the file name; id: id or Index; category: category or Category"},
    [OC_LAYOUT_JBB_BEHAVIORS] = {"jbb-behaviors", "JailbreakBench behaviors CSV", "CSV with Goal, Target, Behavior, Category",
                                 "split: the file name (harmful-behaviors -> harmful, benign-behaviors -> benign); id: Index; category: Category"},
    [OC_LAYOUT_JBB_JUDGE_COMPARISON] = {"jbb-judge-comparison", "JailbreakBench judge_comparison CSV", "CSV with goal, prompt, target_response, human_majority",
                                        "split: judge_comparison; the prompt column; id: Index"},
    [OC_LAYOUT_XSTEST] = {"xstest", "XSTest prompts CSV", "CSV with prompt, type, label, focus", "split: label (safe -> benign, unsafe -> harmful); category: type; id: id"},
    [OC_LAYOUT_ADVBENCH_BEHAVIORS] = {"advbench-behaviors", "AdvBench harmful_behaviors CSV", "CSV with exactly goal, target",
                                      "split: the file name (harmful_behaviors -> harmful); the goal column"},
    [OC_LAYOUT_ADVBENCH_STRINGS] = {"advbench-strings", "AdvBench harmful_strings CSV", "CSV with one column, target", "split: harmful_strings; the target column"},
    [OC_LAYOUT_HARMBENCH] = {"harmbench", "HarmBench behaviors CSV", "CSV with Behavior, FunctionalCategory, BehaviorID (SemanticCategory, ContextString)",
                             "split: FunctionalCategory (standard, contextual, copyright); category: SemanticCategory; id: BehaviorID; a ContextString "
                             "comes first: CONTEXT, a line --- between blank lines, BEHAVIOR"},
    [OC_LAYOUT_STRONGREJECT] = {"strongreject", "StrongREJECT CSV", "CSV with forbidden_prompt (category)", "split: strongreject; category: category"},
    [OC_LAYOUT_SIMPLESAFETYTESTS] = {"simplesafetytests", "SimpleSafetyTests CSV", "CSV with prompts_final (harm_area)",
                                     "split: simplesafetytests; category: harm_area; id: id"},
    [OC_LAYOUT_TEXT] = {"text", "plain text (MaliciousInstruct)", "UTF-8 text, one prompt a line", "split: the file name; blank lines skipped"},
    [OC_LAYOUT_NOT_PROMPTS] = {"skipped", "not prompts", "in a directory: hidden files, licences, readmes, *.md, JBB attack-info.json",
                               "skipped, with a note"},
};

const oc_prompt_layout_info *oc_prompt_layout_info_of(oc_prompt_layout l) {
  return (int)l >= 0 && l < OC_LAYOUT_COUNT ? &LAYOUTS[l] : NULL;
}

static void set_layout(prompt_file *f, oc_prompt_layout l) { f->s->sources[f->source].layout = l; }

/* The error for a file no layout matches: what was found, and the layouts that are recognised (the
 * named CSV variants are reads of the prompt CSV and are not listed again). */
static int unrecognised(const prompt_file *f, const char *found, oc_error *err) {
  char list[800] = "";
  size_t k = 0;
  for (int l = 0; l < OC_LAYOUT_COUNT && k < sizeof list; l++) {
    if (l == OC_LAYOUT_NOT_PROMPTS || (l >= OC_LAYOUT_JBB_BEHAVIORS && l <= OC_LAYOUT_ADVBENCH_BEHAVIORS)) continue;
    k += (size_t)snprintf(list + k, sizeof list - k, "%s%s (%s)", k ? "; " : "", LAYOUTS[l].name, LAYOUTS[l].recognised);
  }
  return oc_fail(err, "%.150s: not a prompt layout opencon recognises (found %.120s); recognised: %s; `opencon datasets` describes them", f->path, found,
                 list);
}

/* "keys a, b, c" of a JSON object, cut to fit buf */
static const char *keys_of(const cJSON *o, const char *what, char *buf, size_t n) {
  size_t k = (size_t)snprintf(buf, n, "%s", what);
  int first = 1;
  for (const cJSON *c = o ? o->child : NULL; c && k < n; c = c->next, first = 0) k += (size_t)snprintf(buf + k, n - k, "%s%s", first ? " " : ", ", c->string);
  if (first && k < n) snprintf(buf + k, n - k, " (none)");
  return buf;
}

/* A key that is present but not a string is an error naming where (a key that is absent takes its
 * default; one of another type must not: "split": 5 or "label": 1 would fall back to the file-name
 * split and mix harmful and benign prompts in one split). null_ok: null reads as absent. */
static int not_a_string(const cJSON *row, const char *key, const char *where, int null_ok, oc_error *err) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, key);
  if (!v || cJSON_IsString(v) || (null_ok && cJSON_IsNull(v))) return 0;
  char shown[48];
  return oc_fail(err, "%s: \"%s\" must be a string%s, got %s", where, key, null_ok ? " or null" : "", oc_json_shown(v, shown, sizeof shown));
}

static const char *str_or_null(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- JSON ---- */

/* JSONL: one {"prompt", "split"?, "id"?, "category"?} a line (strict JSON: nothing after the
 * object, no repeated key, no NUL; "split" and "id", when present, strings), blank lines skipped.
 * The first object names the layout: CoCoNot's files carry id, category and subcategory. */
static int read_jsonl(prompt_file *f, oc_error *err) {
  int64_t line = 0;
  const char *p = f->text, *end = f->text + f->len;
  int first = 1, coconot = 0, contrast = strstr(f->stem, "contrast") != NULL;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
    line++;
    if (!oc_json_blank(p, n)) {
      cJSON *o;
      if (oc_json_parse(p, n, f->path, line, &o, err)) return -1;
      const cJSON *pr = cJSON_GetObjectItemCaseSensitive(o, "prompt");
      if (first && cJSON_IsObject(o) && !pr) { /* a JSON-lines file of something else */
        char found[200];
        int rc = unrecognised(f, keys_of(o, "JSON lines with keys", found, sizeof found), err);
        cJSON_Delete(o);
        return rc;
      }
      if (first) {
        coconot = cJSON_GetObjectItemCaseSensitive(o, "id") && cJSON_GetObjectItemCaseSensitive(o, "category") &&
                  cJSON_GetObjectItemCaseSensitive(o, "subcategory");
        set_layout(f, coconot ? OC_LAYOUT_COCONOT : OC_LAYOUT_JSONL);
        first = 0;
      }
      if (!cJSON_IsObject(o) || !cJSON_IsString(pr)) {
        cJSON_Delete(o);
        return oc_fail(err, "%s:%lld: expected a JSON object with a string \"prompt\"", f->path, (long long)line);
      }
      char where[300];
      snprintf(where, sizeof where, "%.250s:%lld", f->path, (long long)line);
      if (not_a_string(o, "split", where, 0, err) || not_a_string(o, "id", where, 0, err)) { cJSON_Delete(o); return -1; }
      const char *sp = str_or_null(o, "split"), *id = str_or_null(o, "id"), *cat = str_or_null(o, "category"), *sub = str_or_null(o, "subcategory");
      char idb[300], catb[512];
      snprintf(idb, sizeof idb, "%s:%lld", f->stem, (long long)line);
      if (coconot && cat && sub) {
        snprintf(catb, sizeof catb, "%s / %s", cat, sub);
        cat = catb;
      }
      int arc = oc_prompt_add(f, pr->valuestring, sp ? sp : f->def_split, id ? id : idb, cat, NULL, coconot && contrast, err);
      cJSON_Delete(o);
      if (arc) return -1;
    }
    p = nl ? nl + 1 : end;
  }
  if (first) set_layout(f, OC_LAYOUT_JSONL); /* only blank lines: no prompts, as before */
  return 0;
}

/* A JSON array: of {"prompt" | "text", "split"?, "label"?, "category"?} (WildGuard's layout:
 * "label" is a string, safe / harmful; the published files have no numeric labels), or of
 * {"instruction", "category"} (the refusal-direction splits). Element 0 names the layout. */
static int read_json_array(prompt_file *f, oc_error *err) {
  cJSON *arr;
  if (oc_json_parse(f->text, f->len, f->path, 1, &arr, err)) return -1;
  if (!cJSON_IsArray(arr)) { cJSON_Delete(arr); return oc_fail(err, "%s: not a JSON array", f->path); }
  const cJSON *e0 = arr->child;
  int rd = cJSON_IsObject(e0) && !cJSON_GetObjectItemCaseSensitive(e0, "prompt") && !cJSON_GetObjectItemCaseSensitive(e0, "text") &&
           cJSON_GetObjectItemCaseSensitive(e0, "instruction");
  if (cJSON_IsObject(e0) && !rd && !cJSON_GetObjectItemCaseSensitive(e0, "prompt") && !cJSON_GetObjectItemCaseSensitive(e0, "text")) {
    char found[200];
    int rc = unrecognised(f, keys_of(e0, "a JSON array of objects with keys", found, sizeof found), err);
    cJSON_Delete(arr);
    return rc;
  }
  set_layout(f, rd ? OC_LAYOUT_REFUSAL_DIRECTION : OC_LAYOUT_JSON_ARRAY);
  /* refusal-direction: harmful_train -> harmful, harmless_test -> benign */
  const char *rd_split = strstr(f->stem, "harmless") ? "benign" : f->def_split;
  int i = 0, rc = 0;
  for (const cJSON *e = arr->child; e && !rc; e = e->next, i++) {
    if (!cJSON_IsObject(e)) { rc = oc_fail(err, "%s: element %d is not a JSON object", f->path, i); break; }
    char idb[300], where[300];
    snprintf(idb, sizeof idb, "%s:%d", f->stem, i);
    snprintf(where, sizeof where, "%.250s: element %d", f->path, i);
    if (rd) {
      const cJSON *in = cJSON_GetObjectItemCaseSensitive(e, "instruction");
      if (!cJSON_IsString(in)) { rc = oc_fail(err, "%s: element %d: \"instruction\" must be a string", f->path, i); break; }
      if (not_a_string(e, "category", where, 1, err)) { rc = -1; break; }
      rc = oc_prompt_add(f, in->valuestring, rd_split, idb, str_or_null(e, "category"), NULL, 0, err);
      continue;
    }
    const char *pkey = cJSON_GetObjectItemCaseSensitive(e, "prompt") ? "prompt" : "text";
    if (not_a_string(e, pkey, where, 0, err) || not_a_string(e, "split", where, 0, err) || not_a_string(e, "label", where, 0, err)) {
      rc = -1;
      break;
    }
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(e, pkey), *sp = cJSON_GetObjectItemCaseSensitive(e, "split"),
                *lb = cJSON_GetObjectItemCaseSensitive(e, "label");
    if (!pr) { rc = oc_fail(err, "%s: element %d has no \"prompt\" or \"text\"", f->path, i); break; }
    const char *split = sp ? sp->valuestring : lb ? oc_label_split(lb->valuestring) : f->def_split;
    rc = oc_prompt_add(f, pr->valuestring, split, idb, str_or_null(e, "category"), NULL, 0, err);
  }
  cJSON_Delete(arr);
  return rc;
}

/* A JailbreakBench attack artifact: {"parameters": {"method", "model", "attack_type", ...},
 * "jailbreaks": [{"index", "goal", "behavior", "category", "prompt", "response", ...}]}. Each attack
 * (method) is its own split; the judge reads the goal, the request the prompt wraps; a prompt that is
 * null (the attack submitted none for that behavior) is skipped and counted. */
static int read_jbb_artifact(prompt_file *f, const cJSON *doc, oc_error *err) {
  const cJSON *par = cJSON_GetObjectItemCaseSensitive(doc, "parameters"), *jb = cJSON_GetObjectItemCaseSensitive(doc, "jailbreaks");
  const char *method = cJSON_IsObject(par) ? str_or_null(par, "method") : NULL;
  if (!method || !*method) return oc_fail(err, "%s: a JailbreakBench artifact needs a string \"parameters.method\" (its split)", f->path);
  if (!cJSON_IsArray(jb)) return oc_fail(err, "%s: \"jailbreaks\" must be a JSON array", f->path);
  char where[300];
  snprintf(where, sizeof where, "%.250s: parameters", f->path);
  if (not_a_string(par, "model", where, 1, err) || not_a_string(par, "attack_type", where, 1, err)) return -1;
  const char *model = str_or_null(par, "model"), *type = str_or_null(par, "attack_type");
  oc_prompt_source *src = &f->s->sources[f->source];
  size_t dn = strlen(method) + (model ? strlen(model) : 0) + (type ? strlen(type) : 0) + 16;
  char *ds = malloc(dn);
  if (!ds) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  snprintf(ds, dn, "%s%s%s%s%s", method, type ? " " : "", type ? type : "", model ? " on " : "", model ? model : "");
  free(src->dataset);
  src->dataset = ds;
  set_layout(f, OC_LAYOUT_JBB_ARTIFACT);
  int i = 0;
  for (const cJSON *e = jb->child; e; e = e->next, i++) {
    if (!cJSON_IsObject(e)) return oc_fail(err, "%s: jailbreaks[%d] is not a JSON object", f->path, i);
    static const char *const keys[] = {"prompt", "goal", "behavior", "category"};
    snprintf(where, sizeof where, "%.250s: jailbreaks[%d]", f->path, i);
    for (int k = 0; k < 4; k++)
      if (not_a_string(e, keys[k], where, 1, err)) return -1;
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(e, "prompt"), *ix = cJSON_GetObjectItemCaseSensitive(e, "index");
    if (!pr) return oc_fail(err, "%s: jailbreaks[%d] has no \"prompt\"", f->path, i);
    if (cJSON_IsNull(pr)) { f->s->sources[f->source].skipped++; continue; }
    char idb[400];
    int index = cJSON_IsNumber(ix) && ix->valuedouble >= 0 && ix->valuedouble < 1e9 ? (int)ix->valuedouble : i;
    snprintf(idb, sizeof idb, "%.120s/%.120s:%d", method, model ? model : "", index);
    if (oc_prompt_add(f, pr->valuestring, method, idb, str_or_null(e, "category"), str_or_null(e, "goal"), 0, err)) return -1;
  }
  return 0;
}

/* A whole JSON document that is one object: a JBB artifact, or a JBB attack-info.json (which only
 * lists an attack's artifact files: skipped in a directory, an error when named). */
static int read_json_object(prompt_file *f, const cJSON *doc, oc_error *err) {
  if (cJSON_IsObject(doc) && cJSON_GetObjectItemCaseSensitive(doc, "jailbreaks")) return read_jbb_artifact(f, doc, err);
  const cJSON *models = cJSON_GetObjectItemCaseSensitive(doc, "models");
  if (cJSON_IsObject(doc) && cJSON_IsObject(models) && !models->next && doc->child == models) {
    if (!f->in_dir) return oc_fail(err, "%s: a JailbreakBench attack-info.json lists an attack's artifact files and holds no prompts (give an artifact file)", f->path);
    oc_prompt_source *src = &f->s->sources[f->source];
    src->layout = OC_LAYOUT_NOT_PROMPTS;
    return (src->note = strdup("skipped: a JailbreakBench attack-info.json (it lists the attack's artifact files)")) ? 0
                                                                                                                    : oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  }
  char found[200];
  return unrecognised(f, cJSON_IsObject(doc) ? keys_of(doc, "a JSON object with keys", found, sizeof found) : "a JSON value that is not an object", err);
}

/* A file that starts with '{': JSONL when its first line is a JSON value, else one JSON document
 * (a JBB artifact is pretty-printed). A document that does not parse reports the document's error
 * when its first line is a lone "{", else the first line's (a JSONL file with a bad first line). */
static int read_json_braced(prompt_file *f, size_t start, oc_error *err) {
  const char *t = f->text;
  const char *nl = memchr(t + start, '\n', f->len - start);
  size_t n1 = nl ? (size_t)(nl - t) - start : f->len - start;
  int64_t line = 1;
  for (size_t i = 0; i < start; i++) line += t[i] == '\n';
  cJSON *v;
  oc_error line_err;
  if (oc_json_parse(t + start, n1, f->path, line, &v, &line_err) == 0) {
    cJSON_Delete(v);
    return read_jsonl(f, err);
  }
  if (oc_json_parse(t, f->len, f->path, 1, &v, err) == 0) {
    int rc = read_json_object(f, v, err);
    cJSON_Delete(v);
    return rc;
  }
  if (!oc_json_blank(t + start + 1, n1 - 1)) *err = line_err;
  return -1;
}

/* ---- CSV ---- */

/* Every column name a CSV layout reads or is recognised by. */
enum {
  C_PROMPT, C_GOAL_UC, C_GOAL, C_TEXT, C_QUESTION, C_SPLIT, C_LABEL, C_ID, C_INDEX, /* the prompt CSV's columns, checked as before */
  C_CATEGORY, C_CATEGORY_UC, C_TYPE, C_FOCUS, C_TARGET_UC, C_BEHAVIOR, C_TARGET_RESPONSE, C_HUMAN_MAJORITY, C_TARGET,
  C_FUNCTIONAL, C_SEMANTIC, C_CONTEXT, C_BEHAVIOR_ID, C_FORBIDDEN, C_HARM_AREA, C_PROMPTS_FINAL, N_CSV_COLS
};
static const char *const CSV_COLS[N_CSV_COLS] = {
    "prompt", "Goal", "goal", "text", "question", "split", "label", "id", "Index",
    "category", "Category", "type", "focus", "Target", "Behavior", "target_response", "human_majority", "target",
    "FunctionalCategory", "SemanticCategory", "ContextString", "BehaviorID", "forbidden_prompt", "harm_area", "prompts_final"};

typedef struct csv_header {
  int at[N_CSV_COLS], again[N_CSV_COLS]; /* column of the first and the second occurrence, -1: none */
  int n;                                 /* columns */
} csv_header;

static void csv_header_scan(const cJSON *hdr, csv_header *h) {
  for (int k = 0; k < N_CSV_COLS; k++) h->at[k] = h->again[k] = -1;
  h->n = 0;
  for (const cJSON *c = hdr ? hdr->child : NULL; c; c = c->next, h->n++)
    for (int k = 0; k < N_CSV_COLS; k++) {
      if (strcmp(c->valuestring, CSV_COLS[k]) != 0) continue;
      if (h->at[k] < 0) h->at[k] = h->n;
      else if (h->again[k] < 0) h->again[k] = h->n;
    }
}

/* the columns cols[0..n) read by a layout: each must appear at most once (with two "goal" or two
 * "split" columns, which one counts would be a guess) */
static int csv_unique(const csv_header *h, const int *cols, int n, const char *path, oc_error *err) {
  for (int i = 0; i < n; i++) {
    int k = cols[i];
    if (h->again[k] >= 0)
      return oc_fail(err, "%s:1: column \"%s\" appears twice in the header (columns %d and %d)", path, CSV_COLS[k], h->at[k] + 1, h->again[k] + 1);
  }
  return 0;
}

/* how a CSV layout's rows become prompts: column indices (-1: none) */
typedef struct csv_read {
  oc_prompt_layout layout;
  int prompt, context, split, label, id, category;
  const char *split_name; /* the split when no column gives one; NULL: the file name's */
  int strict;             /* an empty prompt or split is an error (the layouts added with issue 24) */
} csv_read;

static int col(const csv_header *h, int k) { return h->again[k] >= 0 ? -1 : h->at[k]; }

/* Which layout a header is, and how its rows are read; 1 when recognised, 0 when not, -1 on a
 * header naming a column it reads twice. The prompt CSV's columns come first, so every file read
 * before the other layouts existed is read as it was. */
static int csv_layout(const csv_header *h, const char *path, csv_read *r, oc_error *err) {
  memset(r, 0, sizeof *r);
  r->context = r->split = r->label = r->id = r->category = -1;
  const int *at = h->at;
  int pc = -1;
  for (int k = C_QUESTION; k >= C_PROMPT; k--) if (at[k] >= 0) pc = at[k];
  if (pc >= 0) {
    static const int read[] = {C_PROMPT, C_GOAL_UC, C_GOAL, C_TEXT, C_QUESTION, C_SPLIT, C_LABEL, C_ID, C_INDEX};
    if (csv_unique(h, read, 9, path, err)) return -1;
    r->prompt = pc;
    r->split = at[C_SPLIT];
    r->label = at[C_LABEL];
    r->id = at[C_ID] >= 0 ? at[C_ID] : at[C_INDEX];
    r->category = col(h, C_CATEGORY) >= 0 ? col(h, C_CATEGORY) : col(h, C_CATEGORY_UC);
    r->layout = OC_LAYOUT_CSV;
    if (at[C_GOAL_UC] >= 0 && at[C_TARGET_UC] >= 0 && at[C_BEHAVIOR] >= 0 && at[C_CATEGORY_UC] >= 0) r->layout = OC_LAYOUT_JBB_BEHAVIORS;
    else if (at[C_GOAL] >= 0 && at[C_PROMPT] >= 0 && at[C_TARGET_RESPONSE] >= 0 && at[C_HUMAN_MAJORITY] >= 0) r->layout = OC_LAYOUT_JBB_JUDGE_COMPARISON;
    else if (at[C_PROMPT] >= 0 && at[C_TYPE] >= 0 && at[C_LABEL] >= 0 && at[C_FOCUS] >= 0) {
      r->layout = OC_LAYOUT_XSTEST;
      r->category = col(h, C_TYPE);
    } else if (h->n == 2 && at[C_GOAL] >= 0 && at[C_TARGET] >= 0) r->layout = OC_LAYOUT_ADVBENCH_BEHAVIORS;
    return 1;
  }
  r->strict = 1;
  if (at[C_BEHAVIOR] >= 0 && at[C_FUNCTIONAL] >= 0 && at[C_BEHAVIOR_ID] >= 0) {
    static const int read[] = {C_BEHAVIOR, C_FUNCTIONAL, C_SEMANTIC, C_CONTEXT, C_BEHAVIOR_ID};
    if (csv_unique(h, read, 5, path, err)) return -1;
    *r = (csv_read){OC_LAYOUT_HARMBENCH, at[C_BEHAVIOR], at[C_CONTEXT], at[C_FUNCTIONAL], -1, at[C_BEHAVIOR_ID], at[C_SEMANTIC], NULL, 1};
    return 1;
  }
  if (at[C_FORBIDDEN] >= 0) {
    static const int read[] = {C_FORBIDDEN, C_CATEGORY};
    if (csv_unique(h, read, 2, path, err)) return -1;
    *r = (csv_read){OC_LAYOUT_STRONGREJECT, at[C_FORBIDDEN], -1, -1, -1, -1, at[C_CATEGORY], "strongreject", 1};
    return 1;
  }
  if (at[C_PROMPTS_FINAL] >= 0) {
    static const int read[] = {C_PROMPTS_FINAL, C_HARM_AREA, C_ID};
    if (csv_unique(h, read, 3, path, err)) return -1;
    *r = (csv_read){OC_LAYOUT_SIMPLESAFETYTESTS, at[C_PROMPTS_FINAL], -1, -1, -1, at[C_ID], at[C_HARM_AREA], "simplesafetytests", 1};
    return 1;
  }
  if (h->n == 1 && at[C_TARGET] == 0) {
    *r = (csv_read){OC_LAYOUT_ADVBENCH_STRINGS, 0, -1, -1, -1, -1, -1, "harmful_strings", 1};
    return 1;
  }
  return 0;
}

/* "CSV columns a, b, c" of a header row */
static const char *columns_of(const cJSON *hdr, char *buf, size_t n) {
  size_t k = (size_t)snprintf(buf, n, "CSV columns");
  int first = 1;
  for (const cJSON *c = hdr ? hdr->child : NULL; c && k < n; c = c->next, first = 0) k += (size_t)snprintf(buf + k, n - k, "%s%s", first ? " " : ", ", c->valuestring);
  if (first && k < n) snprintf(buf + k, n - k, ": none (an empty file)");
  return buf;
}

/* one record's prompt (the HarmBench context first) */
static int csv_record(prompt_file *f, const csv_read *r, const char **fl, int rec, oc_error *err) {
  const char *prompt = fl[r->prompt], *ctx = r->context >= 0 ? fl[r->context] : "";
  const char *split = r->split >= 0 ? fl[r->split] : r->label >= 0 ? oc_label_split(fl[r->label]) : r->split_name ? r->split_name : f->def_split;
  if (r->strict && (!*prompt || !*split))
    return oc_fail(err, "%s: record %d: the %s column is empty", f->path, rec + 1, !*prompt ? "prompt" : "split");
  char idb[300];
  snprintf(idb, sizeof idb, "%s:%d", f->stem, rec);
  const char *id = r->id >= 0 ? fl[r->id] : idb, *cat = r->category >= 0 && *fl[r->category] ? fl[r->category] : NULL;
  if (!*ctx) return oc_prompt_add(f, prompt, split, id, cat, NULL, 0, err);
  /* HarmBench's harness: f"{context_str}\n\n---\n\n{behavior}" */
  size_t n = strlen(ctx) + strlen(prompt) + 8;
  char *full = malloc(n);
  if (!full) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  snprintf(full, n, "%s\n\n---\n\n%s", ctx, prompt);
  int rc = oc_prompt_add(f, full, split, id, cat, NULL, 0, err);
  free(full);
  return rc;
}

/* CSV with a header naming its layout. Rows and fields are walked in order (no indexed lookups: a
 * 50k-row file took 20 s that way). */
static int read_csv(prompt_file *f, oc_error *err) {
  cJSON *rows;
  if (oc_csv_parse(f->text, f->len, f->path, &rows, err)) return -1;
  const cJSON *hdr = rows->child;
  csv_header h;
  csv_header_scan(hdr, &h);
  csv_read r;
  int known = csv_layout(&h, f->path, &r, err);
  if (known <= 0) {
    char found[200];
    int rc = known < 0 ? -1 : unrecognised(f, columns_of(hdr, found, sizeof found), err);
    cJSON_Delete(rows);
    return rc;
  }
  set_layout(f, r.layout);
  const char **fl = malloc(sizeof *fl * (size_t)h.n);
  if (!fl) { cJSON_Delete(rows); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  int rc = 0, rec = 1;
  for (const cJSON *row = hdr->next; row && !rc; row = row->next, rec++) {
    int nf = 0;
    for (const cJSON *c = row->child; c; c = c->next, nf++) if (nf < h.n) fl[nf] = c->valuestring;
    if (nf != h.n) { rc = oc_fail(err, "%s: record %d has %d fields, the header has %d", f->path, rec + 1, nf, h.n); break; }
    rc = csv_record(f, &r, fl, rec, err);
  }
  free(fl);
  cJSON_Delete(rows);
  return rc;
}

/* whether the first line of a file that is not named .csv is a CSV header of a known layout */
static int csv_header_known(const prompt_file *f, size_t start) {
  const char *nl = memchr(f->text + start, '\n', f->len - start);
  size_t n = nl ? (size_t)(nl - f->text) - start : f->len - start;
  cJSON *rows;
  oc_error e;
  if (oc_csv_parse(f->text + start, n, f->path, &rows, &e)) return 0;
  csv_header h;
  csv_header_scan(rows->child, &h);
  csv_read r;
  int known = csv_layout(&h, f->path, &r, &e) != 0; /* (a repeated column: read as CSV, whose reader names it) */
  cJSON_Delete(rows);
  return known;
}

/* ---- plain text ---- */

/* why text[start, len) is not one prompt a line (NULL: it is): binary data, not UTF-8, a JSON
 * line (a JSONL file whose first line is broken is not prose), a tab in the first line
 * (tab-separated values) */
static const char *not_text(const prompt_file *f, size_t start, char *buf, size_t n) {
  const unsigned char *t = (const unsigned char *)f->text;
  if (f->len >= 2 && t[0] == 0x1f && t[1] == 0x8b) return "gzip-compressed data: decompress it first";
  if (f->len >= 4 && memcmp(t, "PK\x03\x04", 4) == 0) return "a zip archive";
  if (memchr(t, 0, f->len)) return "binary data (a NUL byte)";
  if (!oc_utf8_valid(f->text, f->len)) return "bytes that are not UTF-8 text";
  int64_t line = 1;
  int first = 1;
  for (size_t i = start; i < f->len; line++) {
    const unsigned char *nl = memchr(t + i, '\n', f->len - i);
    size_t e = nl ? (size_t)(nl - t) : f->len, j = i;
    for (size_t k = i; k < e; k++)
      if (t[k] < 0x20 && t[k] != '\t' && !(t[k] == '\r' && k + 1 == e)) {
        snprintf(buf, n, "text with the control character 0x%02x on line %lld", t[k], (long long)line);
        return buf;
      }
    if (first && memchr(t + i, '\t', e - i)) return "a first line with tabs (tab-separated values?)";
    while (j < e && (t[j] == ' ' || t[j] == '\t')) j++;
    if (j < e && (t[j] == '{' || t[j] == '[')) {
      snprintf(buf, n, "text whose line %lld starts with %c (a JSON line in a text file)", (long long)line, t[j]);
      return buf;
    }
    if (j < e) first = 0;
    i = e + 1;
  }
  size_t pl = strlen(f->path);
  if (f->in_dir && !(pl > 4 && strcmp(f->path + pl - 4, ".txt") == 0))
    return "text in a file not named *.txt (in a directory, plain text is read only from .txt files)";
  return NULL;
}

/* One prompt a line (MaliciousInstruct): the line as it is, without its line end; blank lines skipped. */
static int read_text(prompt_file *f, size_t start, oc_error *err) {
  set_layout(f, OC_LAYOUT_TEXT);
  const char *t = f->text;
  int64_t line = 0;
  for (size_t i = 0; i < start; i++) line += t[i] == '\n';
  char *buf = NULL;
  size_t cap = 0;
  int rc = 0;
  for (size_t i = start; i < f->len && !rc;) {
    const char *nl = memchr(t + i, '\n', f->len - i);
    size_t e = nl ? (size_t)(nl - t) : f->len, n = e - i;
    line++;
    if (n && t[i + n - 1] == '\r') n--;
    size_t j = 0;
    while (j < n && (t[i + j] == ' ' || t[i + j] == '\t')) j++;
    if (j < n) {
      if (n + 1 > cap) {
        char *nb = realloc(buf, cap = n + 1);
        if (!nb) { rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); break; }
        buf = nb;
      }
      memcpy(buf, t + i, n);
      buf[n] = 0;
      char idb[300];
      snprintf(idb, sizeof idb, "%s:%lld", f->stem, (long long)line);
      rc = oc_prompt_add(f, buf, f->def_split, idb, NULL, NULL, 0, err);
    }
    i = e + 1;
  }
  free(buf);
  return rc;
}

int oc_prompt_file_read(prompt_file *f, oc_error *err) {
  const char *t = f->text;
  size_t pl = strlen(f->path);
  if (pl > 4 && strcmp(f->path + pl - 4, ".csv") == 0) return read_csv(f, err);
  size_t b = f->len >= 3 && memcmp(t, "\xef\xbb\xbf", 3) == 0 ? 3 : 0, k = b; /* after a byte-order mark */
  while (k < f->len && (t[k] == ' ' || t[k] == '\n' || t[k] == '\r' || t[k] == '\t')) k++;
  if (k == f->len && !b) { set_layout(f, OC_LAYOUT_JSONL); return 0; } /* nothing but white space: no prompts (as before) */
  if (k < f->len && t[k] == '[') return read_json_array(f, err);       /* (the JSON parser names a byte-order mark) */
  if (k < f->len && t[k] == '{') return read_json_braced(f, k, err);
  size_t line = k; /* the first line with text, from its start */
  while (line > b && t[line - 1] != '\n') line--;
  if (csv_header_known(f, line)) return read_csv(f, err);
  char buf[160];
  const char *why = not_text(f, line, buf, sizeof buf);
  return why ? unrecognised(f, why, err) : read_text(f, line, err);
}
