/* train-exchange-classifier: the MVP's job (records, prefix augmentation, stratified split,
 * Hugging Face Trainer defaults) on the C ModernBERT, with checkpoints that resume bit-identically. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/classifier.h"
#include "opencon/dataset.h"
#include "opencon/json.h"
#include "opencon/safetensors.h"

void oc_cls_train_defaults(oc_cls_train_opts *o) {
  memset(o, 0, sizeof *o);
  o->epochs = 5;
  o->batch_size = 8;
  o->max_length = 512;
  o->prefix_copies = 1;
  o->logging_steps = 50;
  o->learning_rate = 2e-5;
  o->weight_decay = 0.01;
  o->validation_size = 0.2;
  o->allow_threshold = 0.35;
  o->block_threshold = 0.65;
  o->max_grad_norm = 1.0;
}

char *oc_prefix_cut(const char *response, oc_rng *r) {
  size_t n = strlen(response), chars = 0;
  for (size_t i = 0; i < n; i++) chars += ((unsigned char)response[i] & 0xc0) != 0x80;
  double frac = 0.2 + 0.6 * oc_rng_uniform(r);
  size_t keep = (size_t)(chars * frac);
  if (keep < 1 && chars > 0) keep = 1;
  size_t i = 0, seen = 0;
  for (; i < n; i++) {
    if (((unsigned char)response[i] & 0xc0) != 0x80) {
      if (seen == keep) break;
      seen++;
    }
  }
  return strndup(response, i);
}

/* ---- metrics ---- */
cJSON *oc_cls_metrics(const int32_t *y, const double *probs, int n, int C, int unsafe_label) {
  cJSON *o = cJSON_CreateObject();
  int correct = 0;
  int64_t *conf = calloc((size_t)C * C, sizeof *conf); /* [true][pred] */
  if (!conf) return o;
  for (int i = 0; i < n; i++) {
    int p = 0;
    for (int k = 1; k < C; k++) if (probs[(size_t)i * C + k] > probs[(size_t)i * C + p]) p = k;
    correct += p == y[i];
    conf[(size_t)y[i] * C + p]++;
  }
  double prec_sum = 0, rec_sum = 0, f1_sum = 0;
  double P[OC_MBERT_MAX_LABELS], R[OC_MBERT_MAX_LABELS], F[OC_MBERT_MAX_LABELS];
  for (int k = 0; k < C; k++) {
    int64_t tp = conf[(size_t)k * C + k], fp = 0, fn = 0;
    for (int j = 0; j < C; j++) if (j != k) { fp += conf[(size_t)j * C + k]; fn += conf[(size_t)k * C + j]; }
    P[k] = tp + fp ? (double)tp / (double)(tp + fp) : 0;
    R[k] = tp + fn ? (double)tp / (double)(tp + fn) : 0;
    F[k] = P[k] + R[k] > 0 ? 2 * P[k] * R[k] / (P[k] + R[k]) : 0;
    prec_sum += P[k]; rec_sum += R[k]; f1_sum += F[k];
  }
  cJSON_AddNumberToObject(o, "accuracy", n ? (double)correct / n : 0);
  if (C == 2) {
    cJSON_AddNumberToObject(o, "precision", P[1]);
    cJSON_AddNumberToObject(o, "recall", R[1]);
    cJSON_AddNumberToObject(o, "f1", F[1]);
  } else {
    cJSON_AddNumberToObject(o, "precision", prec_sum / C);
    cJSON_AddNumberToObject(o, "recall", rec_sum / C);
    cJSON_AddNumberToObject(o, "f1", f1_sum / C);
    cJSON_AddStringToObject(o, "average", "macro");
  }
  float *s = malloc(sizeof(float) * (size_t)(n ? n : 1));
  int32_t *yb = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
  if (s && yb) {
    for (int i = 0; i < n; i++) { s[i] = (float)probs[(size_t)i * C + unsafe_label]; yb[i] = y[i] == unsafe_label; }
    /* no AUC of scores that are not numbers (oc_roc_auc's tie grouping never ends on a NaN) */
    double auc = oc_find_nonfinite(s, (size_t)n) < (size_t)n ? NAN : oc_roc_auc(s, yb, n);
    cJSON *v = isfinite(auc) ? cJSON_CreateNumber(auc) : cJSON_CreateNull();
    cJSON_AddItemToObject(o, C == 2 ? "roc_auc" : "roc_auc_unsafe_vs_rest", v);
  }
  free(s); free(yb);
  cJSON_AddNumberToObject(o, "examples", n);
  cJSON *cm = cJSON_AddArrayToObject(o, "confusion_matrix");
  for (int k = 0; k < C; k++) {
    cJSON *row = cJSON_CreateArray();
    for (int j = 0; j < C; j++) cJSON_AddItemToArray(row, cJSON_CreateNumber((double)conf[(size_t)k * C + j]));
    cJSON_AddItemToArray(cm, row);
  }
  free(conf);
  return o;
}

/* ---- the job ---- */
typedef struct {
  int32_t *ids;
  int n, label, val;
} record;

static const char *const three_names[3] = {"safe_compliance", "safe_refusal", "unsafe_compliance"};
static const char *const two_names[2] = {"safe", "unsafe"};

static int copy_file(const char *src, const char *dst, oc_error *err) {
  char *data;
  size_t len;
  if (oc_read_file(src, &data, &len, err)) return -1;
  int rc = oc_write_file_atomic(dst, data, len, err);
  free(data);
  return rc;
}

/* config.json (the base config as a sequence classifier), model.safetensors, tokenizer files, into dir */
static int write_model_files(const char *dir, const char *base_dir, const oc_mbert *m, oc_error *err) {
  char *src = oc_path_join(base_dir, "config.json");
  int rc = -1;
  cJSON *cfg = NULL;
  if (!src) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (oc_json_parse_file(src, &cfg, err)) goto done;
  if (!cJSON_IsObject(cfg)) { oc_fail(err, "%s: not a JSON object", src); goto done; }
  const oc_mbert_config *c = oc_mbert_cfg(m);
  cJSON *arch = cJSON_CreateArray();
  cJSON_AddItemToArray(arch, cJSON_CreateString("ModernBertForSequenceClassification"));
  if (!cJSON_ReplaceItemInObjectCaseSensitive(cfg, "architectures", arch)) cJSON_AddItemToObject(cfg, "architectures", arch);
  cJSON *id2 = cJSON_CreateObject(), *l2i = cJSON_CreateObject();
  for (int k = 0; k < c->n_labels; k++) {
    char key[16];
    snprintf(key, sizeof key, "%d", k);
    cJSON_AddStringToObject(id2, key, c->labels[k]);
    cJSON_AddNumberToObject(l2i, c->labels[k], k);
  }
  cJSON_DeleteItemFromObjectCaseSensitive(cfg, "id2label");
  cJSON_DeleteItemFromObjectCaseSensitive(cfg, "label2id");
  cJSON_DeleteItemFromObjectCaseSensitive(cfg, "problem_type");
  cJSON_AddItemToObject(cfg, "id2label", id2);
  cJSON_AddItemToObject(cfg, "label2id", l2i);
  cJSON_AddStringToObject(cfg, "problem_type", "single_label_classification");
  char *out = cJSON_Print(cfg);
  char *dst = oc_path_join(dir, "config.json"), *wp = oc_path_join(dir, "model.safetensors");
  rc = oc_write_file_atomic(dst, out, strlen(out), err) || oc_mbert_save_weights(m, wp, err) ? -1 : 0;
  free(out); free(dst); free(wp);
  const char *tok_files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"};
  for (int i = 0; i < 3 && !rc; i++) {
    char *s = oc_path_join(base_dir, tok_files[i]), *d = oc_path_join(dir, tok_files[i]);
    int present = oc_file_present(s, err);
    rc = present < 0 ? -1 : present ? copy_file(s, d, err) : 0;
    free(s); free(d);
  }
done:
  cJSON_Delete(cfg);
  free(src);
  return rc;
}

/* x[0, n) of tensor `name` finite (and, nonneg, >= 0: an Adam second moment); the first element that
 * is not, as an error naming where (a file) and the tensor. */
static int check_values(const float *x, size_t n, int nonneg, const char *where, const char *name, oc_error *err) {
  for (size_t k = 0; k < n; k++)
    if (!isfinite(x[k]) || (nonneg && x[k] < 0))
      return oc_fail(err, "%s: tensor \"%s\" has %s value (%g) at element %zu%s", where, name, isfinite(x[k]) ? "a negative" : "a non-finite",
                     (double)x[k], k, nonneg ? " (an Adam second moment is finite and >= 0)" : "");
  return 0;
}

/* A checkpoint's files: the model files, optimizer.safetensors (Adam moments), trainer_state.json.
 * Weights or moments that are not finite are not written (training diverged): a checkpoint of them
 * would resume into NaN. */
static int write_checkpoint_files(const char *dir, const char *base_dir, const oc_mbert *m, const oc_adamw_state *st, int64_t total_steps,
                                  double epoch, uint64_t seed, uint64_t fingerprint, oc_error *err) {
  if (write_model_files(dir, base_dir, m, err)) return -1;
  oc_st_writer *w = oc_st_writer_new();
  int rc = 0, np = oc_mbert_n_params(m);
  char (*names)[200] = calloc((size_t)np * 2, sizeof *names);
  if (!names) { oc_st_writer_free(w); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  const float *base = oc_mbert_param((oc_mbert *)m, 0, NULL, NULL, NULL);
  for (int i = 0; i < np && !rc; i++) {
    int64_t numel, shape[2];
    int ndim;
    const float *p = oc_mbert_param((oc_mbert *)m, i, &numel, &ndim, shape);
    if (!p) continue; /* absent in this model (attn_norm of layer 0, head.dense.bias) */
    size_t off = (size_t)(p - base);
    snprintf(names[2 * i], sizeof names[0], "m.%s", oc_mbert_param_name(m, i));
    snprintf(names[2 * i + 1], sizeof names[0], "v.%s", oc_mbert_param_name(m, i));
    rc = check_values(st->m + off, (size_t)numel, 0, "optimizer.safetensors not written", names[2 * i], err) ||
         check_values(st->v + off, (size_t)numel, 1, "optimizer.safetensors not written", names[2 * i + 1], err) ||
         oc_st_writer_add(w, names[2 * i], OC_DT_F32, ndim, shape, st->m + off, err) ||
         oc_st_writer_add(w, names[2 * i + 1], OC_DT_F32, ndim, shape, st->v + off, err);
  }
  char *op = oc_path_join(dir, "optimizer.safetensors");
  if (!rc) rc = oc_st_writer_write(w, op, err);
  free(op);
  oc_st_writer_free(w);
  free(names);
  if (rc) return -1;
  cJSON *s = cJSON_CreateObject();
  cJSON_AddNumberToObject(s, "global_step", (double)st->step);
  cJSON_AddNumberToObject(s, "total_steps", (double)total_steps);
  cJSON_AddNumberToObject(s, "epoch", epoch);
  cJSON_AddNumberToObject(s, "seed", (double)seed); /* the Trainer's key (a JSON number: exact only below 2^53) */
  char seed_hex[17];
  snprintf(seed_hex, sizeof seed_hex, "%016llx", (unsigned long long)seed);
  cJSON_AddStringToObject(s, "seed_hex", seed_hex); /* exact, for the resume check */
  char fp[32];
  snprintf(fp, sizeof fp, "%016llx", (unsigned long long)fingerprint);
  cJSON_AddStringToObject(s, "data_fingerprint", fp);
  cJSON_AddStringToObject(s, "rng", "batch order and augmentation derive from (seed, epoch): no generator state to restore");
  char *js = cJSON_Print(s), *sp = oc_path_join(dir, "trainer_state.json");
  cJSON_Delete(s);
  rc = !js || !sp ? oc_fail_code(err, OC_ERR_NOMEM, "out of memory") : oc_write_file_atomic(sp, js, strlen(js), err);
  free(js); free(sp);
  return rc;
}

/* checkpoint-N written whole (oc_atomic_dir): a kill or a failure leaves the previous checkpoint-N or none */
static int save_checkpoint(const char *dir, const char *base_dir, const oc_mbert *m, const oc_adamw_state *st, int64_t total_steps,
                           double epoch, uint64_t seed, uint64_t fingerprint, oc_error *err) {
  oc_atomic_dir d;
  if (oc_atomic_dir_open(&d, dir, err)) return -1;
  if (write_checkpoint_files(d.tmp_path, base_dir, m, st, total_steps, epoch, seed, fingerprint, err)) {
    oc_atomic_dir_abort(&d);
    return oc_wrap(err, "%s", dir);
  }
  return oc_atomic_dir_commit(&d, err);
}

/* The output directory written whole: the model files and classifier_config.json; the entries of a
 * previous output the new one does not write (checkpoint-N/) are kept. */
static int save_classifier(const char *dir, const char *base_dir, const oc_mbert *m, const char *classifier_config, oc_error *err) {
  oc_atomic_dir d;
  if (oc_atomic_dir_open(&d, dir, err)) return -1;
  char *cp = oc_atomic_dir_file(&d, "classifier_config.json");
  int rc = !cp ? oc_fail_code(err, OC_ERR_NOMEM, "out of memory")
               : write_model_files(d.tmp_path, base_dir, m, err) || oc_write_file_atomic(cp, classifier_config, strlen(classifier_config), err) ? -1 : 0;
  free(cp);
  if (rc) {
    oc_atomic_dir_abort(&d);
    return oc_wrap(err, "%s", dir);
  }
  return oc_atomic_dir_commit(&d, err);
}

/* ---- resuming ---- */
typedef struct {
  int64_t global_step, total_steps;
  double epoch, seed;
  int have_seed_hex;
  uint64_t seed_hex; /* exact seed (checkpoints written since seed_hex exists) */
  char fingerprint[17];
} trainer_state;

/* key of o: an integer-valued number in [lo, hi] */
static int state_int(const cJSON *o, const char *key, double lo, double hi, const char *path, double *out, oc_error *err) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsNumber(v)) return oc_fail(err, "%s: \"%s\" is missing or not a number", path, key);
  double x = v->valuedouble;
  if (!isfinite(x) || x != floor(x) || x < lo || x > hi) return oc_fail(err, "%s: \"%s\" must be an integer in [%.0f, %.0f], got %.17g", path, key, lo, hi, x);
  *out = x;
  return 0;
}

/* trainer_state.json with every value it holds checked: 1 <= total_steps <= 2^53, 0 <= global_step <=
 * total_steps, 0 <= epoch <= global_step, seed an integer in [0, 2^64), data_fingerprint 16 hex digits. */
static int read_trainer_state(const char *path, trainer_state *ts, oc_error *err) {
  cJSON *s = NULL;
  if (oc_json_parse_file(path, &s, err)) return -1;
  int rc = -1;
  double gs = 0, total = 0;
  const cJSON *ep = cJSON_GetObjectItemCaseSensitive(s, "epoch"), *fp = cJSON_GetObjectItemCaseSensitive(s, "data_fingerprint"),
              *sh = cJSON_GetObjectItemCaseSensitive(s, "seed_hex");
  if (!cJSON_IsObject(s)) oc_fail(err, "%s: not a JSON object", path);
  else if (state_int(s, "total_steps", 1, 9007199254740992.0, path, &total, err) || state_int(s, "global_step", 0, total, path, &gs, err) ||
           state_int(s, "seed", 0, 18446744073709549568.0, path, &ts->seed, err))
    ;
  else if (!cJSON_IsNumber(ep) || !isfinite(ep->valuedouble) || ep->valuedouble < 0 || ep->valuedouble > gs)
    oc_fail(err, "%s: \"epoch\" must be a number in [0, global_step %.0f]", path, gs);
  else if (!cJSON_IsString(fp) || strlen(fp->valuestring) != 16 || strspn(fp->valuestring, "0123456789abcdef") != 16)
    oc_fail(err, "%s: \"data_fingerprint\" must be 16 hexadecimal digits", path);
  else if (sh && (!cJSON_IsString(sh) || strlen(sh->valuestring) != 16 || strspn(sh->valuestring, "0123456789abcdef") != 16))
    oc_fail(err, "%s: \"seed_hex\" must be 16 hexadecimal digits", path);
  else if (sh && (double)strtoull(sh->valuestring, NULL, 16) != ts->seed)
    oc_fail(err, "%s: \"seed\" and \"seed_hex\" disagree", path);
  else {
    ts->have_seed_hex = sh != NULL;
    if (sh) ts->seed_hex = strtoull(sh->valuestring, NULL, 16);
    ts->global_step = (int64_t)gs;
    ts->total_steps = (int64_t)total;
    ts->epoch = ep->valuedouble;
    memcpy(ts->fingerprint, fp->valuestring, 17);
    rc = 0;
  }
  cJSON_Delete(s);
  return rc;
}

/* The tensors of a checkpoint's safetensors file as training wrote them: F32 and finite; in
 * optimizer.safetensors only Adam moments, m.* and v.* (v >= 0). A NaN there would resume into NaN
 * weights that the next save would call a checkpoint. */
static int check_checkpoint_tensors(const oc_st_file *f, int optimizer, const char *path, oc_error *err) {
  for (int i = 0; i < oc_st_count(f); i++) {
    const oc_tensor *t = oc_st_at(f, i);
    int second = optimizer && strncmp(t->name, "v.", 2) == 0;
    if (optimizer && !second && strncmp(t->name, "m.", 2) != 0) return oc_fail(err, "%s: tensor \"%s\" is not an Adam moment (m.*, v.*)", path, t->name);
    if (t->dtype != OC_DT_F32) return oc_fail(err, "%s: tensor \"%s\" is %s, a checkpoint holds F32", path, t->name, oc_dtype_name(t->dtype));
    if (check_values(t->data, (size_t)t->numel, second, path, t->name, err)) return -1;
  }
  return 0;
}

/* A directory named checkpoint-N claims step N: trainer_state.json's global_step must be that step,
 * written as training writes it (a checkpoint-9 holding step 4 would be taken by "latest" over a
 * newer complete checkpoint-6). Other names claim no step. */
static int check_name_matches_step(const char *dir, int64_t global_step, oc_error *err) {
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/') n--;
  size_t b = n;
  while (b > 0 && dir[b - 1] != '/') b--;
  const char *base = dir + b;
  size_t bl = n - b;
  if (bl <= 11 || strncmp(base, "checkpoint-", 11) != 0 || strspn(base + 11, "0123456789") != bl - 11) return 0;
  char want[40];
  snprintf(want, sizeof want, "checkpoint-%lld", (long long)global_step);
  if (strlen(want) == bl && strncmp(base, want, bl) == 0) return 0;
  return oc_fail(err, "%s: not a checkpoint of the step its name says: its trainer_state.json has global_step %lld (%s)", dir, (long long)global_step, want);
}

/* A complete checkpoint: its four files present, both safetensors files whole (header and size
 * checked) with F32 finite values (Adam second moments >= 0), trainer_state.json valid and its
 * global_step the N of the directory's name checkpoint-N. */
static int check_checkpoint(const char *dir, trainer_state *ts, oc_error *err) {
  static const char *const files[] = {"config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"};
  int rc = 0;
  for (int i = 0; i < 4 && !rc; i++) {
    char *p = oc_path_join(dir, files[i]);
    oc_st_file *f = NULL;
    if (!p) rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    else if (!oc_file_exists(p)) rc = oc_fail_code(err, OC_ERR_NOT_FOUND, "%s: incomplete checkpoint: %s is missing (or not a regular file)", dir, files[i]);
    else if (i == 1 || i == 2) rc = oc_st_open(p, &f, err) ? -1 : check_checkpoint_tensors(f, i == 2, p, err) ? oc_wrap(err, "%s: corrupt checkpoint", dir) : 0;
    else if (i == 3) rc = read_trainer_state(p, ts, err);
    if (f) oc_st_close(f);
    free(p);
  }
  return rc ? rc : check_name_matches_step(dir, ts->global_step, err);
}

typedef struct {
  long step;
  char *name;
} ckpt_entry;

static int cmp_step_desc(const void *a, const void *b) {
  long x = ((const ckpt_entry *)a)->step, y = ((const ckpt_entry *)b)->step;
  return (x < y) - (x > y);
}

/* The newest complete checkpoint-N of out_dir; incomplete ones are reported on stderr and skipped. */
static char *latest_checkpoint(const char *out_dir, trainer_state *ts, oc_error *err) {
  DIR *d = opendir(out_dir);
  if (!d) { oc_fail_code(err, oc_errno_code(errno), "%s: no checkpoint-N directory to resume from (%s)", out_dir, strerror(errno)); return NULL; }
  ckpt_entry *ents = NULL;
  size_t n = 0, cap = 0;
  int oom = 0;
  struct dirent *e;
  while ((e = readdir(d)) && !oom) {
    char *end;
    if (strncmp(e->d_name, "checkpoint-", 11) != 0 || e->d_name[11] < '0' || e->d_name[11] > '9') continue;
    errno = 0;
    long v = strtol(e->d_name + 11, &end, 10);
    if (*end || errno) continue;
    if (n == cap) {
      ckpt_entry *ne = realloc(ents, (cap = 2 * cap + 16) * sizeof *ents);
      if (!ne) { oom = 1; break; }
      ents = ne;
    }
    if (!(ents[n].name = strdup(e->d_name))) { oom = 1; break; }
    ents[n++].step = v;
  }
  closedir(d);
  char *found = NULL;
  if (oom) oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  else if (n) qsort(ents, n, sizeof *ents, cmp_step_desc);
  for (size_t i = 0; i < n && !found && !oom; i++) {
    char *p = oc_path_join(out_dir, ents[i].name);
    if (p && check_checkpoint(p, ts, err) == 0) found = p;
    else {
      if (p) fprintf(stderr, "skipping %s: %s\n", p, err->msg);
      free(p);
    }
  }
  for (size_t i = 0; i < n; i++) free(ents[i].name);
  free(ents);
  if (!found && !oom) oc_fail_code(err, OC_ERR_NOT_FOUND, "%s: no complete checkpoint-N directory to resume from", out_dir);
  return found;
}

/* Weights and Adam moments of a checked checkpoint made with this run's data and settings. */
static int load_checkpoint(const char *dir, const trainer_state *ts, oc_mbert *m, oc_adamw_state *st, int64_t total_steps, int64_t steps_per_epoch,
                           uint64_t seed, uint64_t fingerprint, oc_error *err) {
  char *wp = oc_path_join(dir, "model.safetensors"), *op = oc_path_join(dir, "optimizer.safetensors"), *sp = oc_path_join(dir, "trainer_state.json");
  oc_st_file *f = NULL;
  int rc = -1;
  char want[32];
  snprintf(want, sizeof want, "%016llx", (unsigned long long)fingerprint);
  int same_seed = ts->have_seed_hex ? ts->seed_hex == seed : ts->seed == (double)seed;
  if (ts->total_steps != total_steps || strcmp(ts->fingerprint, want) != 0 || !same_seed) {
    oc_fail(err, "%s: the checkpoint was made with other data or settings (total_steps %lld vs %lld, data %s vs %s, seed %.0f vs %llu)", sp,
            (long long)ts->total_steps, (long long)total_steps, ts->fingerprint, want, ts->seed, (unsigned long long)seed);
    goto done;
  }
  double epoch = (double)ts->global_step / (double)steps_per_epoch;
  if (fabs(ts->epoch - epoch) > 1e-9 * (epoch > 1 ? epoch : 1)) {
    oc_fail(err, "%s: \"epoch\" %.17g does not match global_step %lld at %lld steps per epoch", sp, ts->epoch, (long long)ts->global_step,
            (long long)steps_per_epoch);
    goto done;
  }
  if (oc_mbert_load_weights(m, wp, err) || oc_st_open(op, &f, err)) goto done;
  const float *base = oc_mbert_param(m, 0, NULL, NULL, NULL);
  int moments = 0;
  for (int i = 0; i < oc_mbert_n_params(m); i++) {
    int64_t numel;
    const float *p = oc_mbert_param(m, i, &numel, NULL, NULL);
    if (!p) continue;
    moments += 2;
    char n1[200], n2[200];
    snprintf(n1, sizeof n1, "m.%s", oc_mbert_param_name(m, i));
    snprintf(n2, sizeof n2, "v.%s", oc_mbert_param_name(m, i));
    const oc_tensor *tm = oc_st_get(f, n1), *tv = oc_st_get(f, n2);
    if (!tm || !tv || tm->numel != numel || tv->numel != numel || tm->dtype != OC_DT_F32 || tv->dtype != OC_DT_F32) {
      oc_fail(err, "%s: optimizer state of \"%s\" missing or of the wrong shape", op, oc_mbert_param_name(m, i));
      goto done;
    }
    size_t off = (size_t)(p - base);
    memcpy(st->m + off, tm->data, tm->nbytes);
    memcpy(st->v + off, tv->data, tv->nbytes);
  }
  if (oc_st_count(f) != moments) {
    oc_fail(err, "%s: %d tensors where this model has %d Adam moments (the optimizer state of another model)", op, oc_st_count(f), moments);
    goto done;
  }
  st->step = ts->global_step;
  rc = 0;
done:
  if (f) oc_st_close(f);
  free(wp); free(op); free(sp);
  return rc;
}

/* --resume_from_checkpoint: "latest"/"true" is the newest complete checkpoint-N of out_dir; a named
 * checkpoint must be complete. */
static int resume_checkpoint(const oc_cls_train_opts *o, oc_mbert *m, oc_adamw_state *st, int64_t total, int64_t spe, uint64_t fingerprint,
                             oc_error *err) {
  trainer_state ts;
  char *dir;
  if (strcmp(o->resume_from, "latest") == 0 || strcmp(o->resume_from, "true") == 0) {
    if (!(dir = latest_checkpoint(o->out_dir, &ts, err))) return -1;
  } else {
    if (!(dir = strdup(o->resume_from))) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    if (oc_artifact_dir_recover(dir, err) || check_checkpoint(dir, &ts, err)) { free(dir); return -1; }
  }
  int rc = load_checkpoint(dir, &ts, m, st, total, spe, o->seed, fingerprint, err);
  if (!rc) fprintf(stderr, "resuming from %s at step %lld of %lld\n", dir, (long long)st->step, (long long)total);
  free(dir);
  return rc;
}

static int evaluate(oc_mbert *m, const record *recs, const int *idx, int n, int bs, double *probs, int32_t *y, oc_error *err) {
  const int C = oc_mbert_cfg(m)->n_labels;
  int32_t *ids = NULL;
  int lens[1024], cap = 0;
  float logits[1024 * OC_MBERT_MAX_LABELS];
  if (bs > 1024) bs = 1024;
  for (int s0 = 0; s0 < n; s0 += bs) {
    int nb = n - s0 < bs ? n - s0 : bs, tot = 0;
    for (int j = 0; j < nb; j++) tot += recs[idx[s0 + j]].n;
    if (tot > cap) {
      int32_t *ni = realloc(ids, sizeof(int32_t) * (size_t)tot);
      if (!ni) { free(ids); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
      ids = ni;
      cap = tot;
    }
    for (int j = 0, o = 0; j < nb; o += lens[j++]) {
      const record *r = &recs[idx[s0 + j]];
      lens[j] = r->n;
      memcpy(ids + o, r->ids, sizeof(int32_t) * (size_t)r->n);
      y[s0 + j] = r->label;
    }
    oc_mbert_batch b = {ids, lens, nb};
    if (oc_mbert_forward(m, &b, logits, err)) { free(ids); return -1; }
    for (int j = 0; j < nb; j++) oc_softmax(logits + j * C, C, probs + (size_t)(s0 + j) * C);
  }
  free(ids);
  return 0;
}

int oc_cls_train(const oc_cls_train_opts *o, cJSON **metrics_out, oc_error *err) {
  if (metrics_out) *metrics_out = NULL;
  if (o->epochs < 1 || o->batch_size < 1 || o->batch_size > 1024 || o->max_length < 2 || !(o->learning_rate > 0))
    return oc_fail(err, "epochs, batch_size (1..1024), max_length (>= 2) and learning_rate must be positive");
  if (!(o->allow_threshold >= 0 && o->allow_threshold < o->block_threshold && o->block_threshold <= 1))
    return oc_fail(err, "thresholds must satisfy 0 <= allow < block <= 1");
  if (oc_artifact_dir_check(o->out_dir, err)) return -1; /* before any work whose result it will hold */
  oc_progress prog;
  oc_progress_start(&prog, "train-exchange-classifier", "steps", 0, o->progress_path);
  oc_progress_keys(&prog, "step", "total_steps");
  oc_progress_phase(&prog, "loading_data", 0, 0);
  oc_dataset ds;
  oc_mbert *m = NULL;
  oc_chat *tok = NULL;
  record *recs = NULL;
  int nrec = 0, rc = -1, *tr = NULL, *va = NULL, ntr = 0, nva = 0;
  int64_t *tri = NULL, *vai = NULL;
  int32_t *ybuf = NULL, *batch_ids = NULL, *batch_labels = NULL;
  int *batch_lens = NULL;
  double *probs = NULL;
  oc_adamw_state st = {0};
  cJSON *metrics = NULL;
  if (oc_dataset_load(o->data_path, 0, o->seed, &ds, err)) { oc_progress_end(&prog, "failed"); return -1; }
  const int C = ds.max_label + 1 < 2 ? 2 : ds.max_label + 1;
  const char *const *names = C == 3 ? three_names : two_names;
  if (ds.n < 2) { oc_fail(err, "%s: need at least 2 examples", o->data_path); goto done; }
  /* split the examples (stratified); prefix copies follow their example, so no exchange is on both sides */
  ybuf = malloc(sizeof(int32_t) * (size_t)ds.n);
  if (!ybuf) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  for (int i = 0; i < ds.n; i++) ybuf[i] = ds.ex[i].label;
  int ntr_ex, nva_ex;
  if (oc_stratified_split(ybuf, ds.n, o->validation_size, o->seed, &tri, &ntr_ex, &vai, &nva_ex, err)) goto done;
  char *is_val = calloc((size_t)ds.n, 1);
  if (!is_val) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  for (int i = 0; i < nva_ex; i++) is_val[vai[i]] = 1;
  if (oc_chat_load(o->model_dir, &tok, err)) { free(is_val); goto done; }
  int least = oc_exchange_min_length(tok, err);
  if (least < 0 || o->max_length < least) {
    if (least >= 0) oc_fail(err, "max_length %d cannot hold an exchange (its frame and one token of text take %d)", o->max_length, least);
    free(is_val);
    goto done;
  }
  int copies = o->prefix_augment ? (o->prefix_copies > 0 ? o->prefix_copies : 1) : 0;
  recs = calloc((size_t)ds.n * (size_t)(1 + copies), sizeof *recs);
  if (!recs) { free(is_val); oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  oc_progress_phase(&prog, "tokenizing", 0, ds.n);
  oc_rng aug;
  oc_rng_seed(&aug, oc_mix64(o->seed ^ 0xa06a3e17ull));
  uint64_t fingerprint = 0;
  for (int i = 0; i < ds.n; i++) {
    for (int c = 0; c <= copies; c++) {
      char *resp = c == 0 ? ds.ex[i].response : oc_prefix_cut(ds.ex[i].response, &aug);
      oc_encoding e;
      int erc = !resp ? oc_fail_code(err, OC_ERR_NOMEM, "out of memory") : oc_exchange_encode(tok, ds.ex[i].prompt, resp, o->max_length, &e, err);
      if (c) free(resp);
      if (erc) { free(is_val); oc_wrap(err, "%s:%lld", o->data_path, (long long)ds.ex[i].line); goto done; }
      record *r = &recs[nrec++];
      r->ids = e.ids;
      e.ids = NULL;
      r->n = e.n;
      r->label = ds.ex[i].label;
      r->val = is_val[i];
      oc_encoding_free(&e);
      fingerprint = oc_fnv1a64(r->ids, sizeof(int32_t) * (size_t)r->n, fingerprint);
      fingerprint = oc_fnv1a64(&r->label, sizeof r->label, fingerprint);
      fingerprint = oc_fnv1a64(&r->val, sizeof r->val, fingerprint);
    }
    oc_progress_update(&prog, i + 1);
  }
  free(is_val);
  tr = malloc(sizeof(int) * (size_t)nrec);
  va = malloc(sizeof(int) * (size_t)nrec);
  if (!tr || !va) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  for (int i = 0; i < nrec; i++) { if (recs[i].val) va[nva++] = i; else tr[ntr++] = i; }
  if (ntr == 0) { oc_fail(err, "no training records after the split"); goto done; }
  fprintf(stderr, "%s: %d examples -> %d records (%d train, %d validation), %d labels\n", o->data_path, ds.n, nrec, ntr, nva, C);

  oc_progress_phase(&prog, "loading_model", 0, 0);
  if (oc_mbert_load_for_training(o->model_dir, C, names, o->seed, &m, err) || oc_mbert_adamw_init(m, &st, err)) goto done;
  if (o->max_length > oc_mbert_cfg(m)->max_position_embeddings) {
    oc_fail(err, "max_length %d exceeds the model's %d positions (max_position_embeddings of %s/config.json)", o->max_length,
            oc_mbert_cfg(m)->max_position_embeddings, o->model_dir);
    goto done;
  }
  const int64_t spe = (ntr + o->batch_size - 1) / o->batch_size, total = (int64_t)o->epochs * spe;
  /* what a killed run left in out_dir: set-aside versions restored or settled, temporaries removed */
  if (oc_artifact_dir_recover(o->out_dir, err)) goto done;
  oc_tidy_dir(o->out_dir);
  if (o->resume_from && resume_checkpoint(o, m, &st, total, spe, fingerprint, err)) goto done;
  batch_ids = malloc(sizeof(int32_t) * (size_t)o->batch_size * (size_t)o->max_length);
  batch_lens = malloc(sizeof(int) * (size_t)o->batch_size);
  batch_labels = malloc(sizeof(int32_t) * (size_t)o->batch_size);
  int *perm = malloc(sizeof(int) * (size_t)ntr);
  int64_t *permi = malloc(sizeof(int64_t) * (size_t)ntr);
  if (!batch_ids || !batch_lens || !batch_labels || !perm || !permi) { free(perm); free(permi); oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  oc_progress_phase(&prog, "training", st.step, total);
  int64_t perm_epoch = -1;
  double loss_acc = 0;
  int loss_n = 0;
  for (int64_t k = st.step; k < total; k++) {
    int64_t ep = k / spe, bi = k % spe;
    if (ep != perm_epoch) { /* the epoch's order depends only on (seed, epoch): resumable */
      for (int i = 0; i < ntr; i++) permi[i] = i;
      oc_rng r;
      oc_rng_seed(&r, oc_mix64(o->seed + 0x9e3779b97f4a7c15ull * (uint64_t)(ep + 1)));
      oc_shuffle_i64(&r, permi, (size_t)ntr);
      for (int i = 0; i < ntr; i++) perm[i] = tr[permi[i]];
      perm_epoch = ep;
    }
    int nb = 0, tot = 0;
    for (int64_t j = bi * o->batch_size; j < ntr && nb < o->batch_size; j++, nb++) {
      const record *r = &recs[perm[j]];
      memcpy(batch_ids + tot, r->ids, sizeof(int32_t) * (size_t)r->n);
      batch_lens[nb] = r->n;
      batch_labels[nb] = r->label;
      tot += r->n;
    }
    oc_mbert_batch b = {batch_ids, batch_lens, nb};
    float loss;
    if (oc_mbert_loss_backward(m, &b, batch_labels, &loss, NULL, err)) { oc_wrap(err, "step %lld", (long long)k + 1); free(perm); free(permi); goto done; }
    double lr = o->learning_rate * (double)(total - k) / (double)total, gn, cc;
    oc_mbert_clip_and_step(m, &st, lr, o->weight_decay, o->max_grad_norm, &gn, &cc);
    /* diverged: the weights are (or will be) NaN; nothing is saved from here */
    if (!isfinite(loss) || !isfinite(gn)) {
      oc_fail(err, "step %lld: training diverged (loss %g, gradient norm %g); no checkpoint or classifier is written from it", (long long)k + 1,
              (double)loss, gn);
      free(perm); free(permi); goto done;
    }
    loss_acc += loss;
    loss_n++;
    double epoch_f = (double)(k + 1) / (double)spe;
    oc_progress_set(&prog, "epoch", epoch_f);
    oc_progress_set(&prog, "loss", loss);
    oc_progress_set(&prog, "learning_rate", lr);
    oc_progress_update(&prog, k + 1);
    if (o->logging_steps > 0 && ((k + 1) % o->logging_steps == 0 || k + 1 == total)) {
      fprintf(stderr, "{\"step\": %lld, \"epoch\": %.4f, \"loss\": %.6f, \"learning_rate\": %.6g, \"grad_norm\": %.6f}\n", (long long)k + 1, epoch_f,
              loss_acc / loss_n, lr, gn);
      loss_acc = 0;
      loss_n = 0;
    }
    if (o->save_steps > 0 && (k + 1) % o->save_steps == 0) {
      char name[64];
      snprintf(name, sizeof name, "checkpoint-%lld", (long long)k + 1);
      char *cd = oc_path_join(o->out_dir, name);
      int src = save_checkpoint(cd, o->model_dir, m, &st, total, epoch_f, o->seed, fingerprint, err);
      free(cd);
      if (src) { free(perm); free(permi); goto done; }
    }
    if (o->stop_after_steps > 0 && k + 1 >= o->stop_after_steps && k + 1 < total) {
      fprintf(stderr, "stopped after step %lld of %lld (--stop_after_steps)\n", (long long)k + 1, (long long)total);
      free(perm); free(permi);
      oc_progress_end(&prog, "stopped");
      rc = 0;
      goto done;
    }
  }
  free(perm); free(permi);
  /* the last update can overflow weights whose gradients were finite */
  if (oc_mbert_check_finite(m, "training diverged: the final weights are not finite", err)) goto done;
  oc_progress_phase(&prog, "evaluating", 0, nva);
  int unsafe = C - 1;
  if (nva > 0) {
    probs = malloc(sizeof(double) * (size_t)nva * C);
    int32_t *yv = malloc(sizeof(int32_t) * (size_t)nva);
    if (!probs || !yv) { free(yv); oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
    if (evaluate(m, recs, va, nva, o->batch_size, probs, yv, err)) { free(yv); goto done; }
    metrics = oc_cls_metrics(yv, probs, nva, C, unsafe);
    free(yv);
  } else {
    metrics = cJSON_CreateObject();
  }
  oc_progress_phase(&prog, "saving", 0, 0);
  cJSON *cc = cJSON_CreateObject();
  cJSON_AddStringToObject(cc, "model_id", o->model_id ? o->model_id : o->model_dir);
  cJSON_AddStringToObject(cc, "data_path", o->data_path);
  cJSON_AddNumberToObject(cc, "max_length", o->max_length);
  cJSON_AddNumberToObject(cc, "allow_threshold", o->allow_threshold);
  cJSON_AddNumberToObject(cc, "block_threshold", o->block_threshold);
  cJSON *lm = cJSON_AddObjectToObject(cc, "label_mapping");
  for (int k = 0; k < C; k++) cJSON_AddNumberToObject(lm, names[k], k);
  cJSON_AddNumberToObject(cc, "seed", (double)o->seed);
  cJSON_AddItemToObject(cc, "metrics", cJSON_Duplicate(metrics, 1));
  cJSON_AddStringToObject(cc, "text_format", "User:\n{prompt}\n\nAssistant:\n{response}"); /* checked by the loader (classifier.c) */
  cJSON_AddNumberToObject(cc, "epochs", o->epochs);
  cJSON_AddNumberToObject(cc, "batch_size", o->batch_size);
  cJSON_AddNumberToObject(cc, "learning_rate", o->learning_rate);
  cJSON_AddNumberToObject(cc, "weight_decay", o->weight_decay);
  cJSON_AddNumberToObject(cc, "validation_size", o->validation_size);
  cJSON_AddBoolToObject(cc, "prefix_augment", o->prefix_augment);
  cJSON_AddNumberToObject(cc, "prefix_copies", copies);
  cJSON_AddNumberToObject(cc, "train_records", ntr);
  cJSON_AddNumberToObject(cc, "validation_records", nva);
  cJSON_AddNumberToObject(cc, "total_steps", (double)total);
  cJSON_AddStringToObject(cc, "created_by", "opencon");
  char *js = cJSON_Print(cc);
  cJSON_Delete(cc);
  int wrc = !js ? oc_fail_code(err, OC_ERR_NOMEM, "out of memory") : save_classifier(o->out_dir, o->model_dir, m, js, err);
  free(js);
  if (wrc) goto done;
  oc_progress_end(&prog, "completed");
  if (metrics_out) { *metrics_out = metrics; metrics = NULL; }
  rc = 0;
done:
  if (rc) oc_progress_end(&prog, "failed");
  cJSON_Delete(metrics);
  for (int i = 0; i < nrec; i++) free(recs[i].ids);
  free(recs); free(tr); free(va); free(tri); free(vai); free(ybuf); free(batch_ids); free(batch_lens); free(batch_labels); free(probs);
  oc_adamw_free(&st);
  oc_mbert_free(m);
  oc_chat_free(tok);
  oc_dataset_free(&ds);
  return rc;
}
