/* The exchange classifier's decisions, as the MVP makes them. */
#include "opencon/classifier.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "opencon/hub.h"
#include "opencon/json.h"

void oc_classifier_free(oc_classifier *c) {
  if (!c) return;
  oc_mbert_free(c->m);
  oc_chat_free(c->tok);
  cJSON_Delete(c->config);
  free(c);
}

int oc_classifier_set_thresholds(oc_classifier *c, double allow, double block, oc_error *err) {
  if (!(allow >= 0 && allow < block && block <= 1))
    return oc_fail(err, "thresholds must satisfy 0 <= allow < block <= 1 (allow %g, block %g)", allow, block);
  c->allow_threshold = allow;
  c->block_threshold = block;
  return 0;
}

/* classifier_config.json: a name that does not exist at all means the defaults; anything else that
 * cannot be read as a regular file (a dangling symlink, as a Hugging Face cache with a missing blob
 * leaves it, or a directory) is an error naming it, never a silent fall back to thresholds nobody
 * calibrated. *out is NULL when absent. */
static int read_optional_json(const char *path, cJSON **out, oc_error *err) {
  *out = NULL;
  int present = oc_file_present(path, err);
  if (present <= 0) return present;
  if (oc_json_parse_file(path, out, err)) return -1;
  return cJSON_IsObject(*out) ? 0 : oc_fail(err, "%s: not a JSON object", path);
}

/* whether every label has the name transformers gives an unnamed head (LABEL_0, LABEL_1, ...) */
static int generic_labels(const oc_mbert_config *mc) {
  for (int i = 0; i < mc->n_labels; i++) {
    char want[32];
    snprintf(want, sizeof want, "LABEL_%d", i);
    if (strcmp(mc->labels[i], want) != 0) return 0;
  }
  return 1;
}

/* The label whose probability is the unsafe score: classifier_config.json's "unsafe_label" (a label
 * name) when given; else the one named "unsafe" or "unsafe_compliance" (both present is ambiguous);
 * else, for an unnamed head (LABEL_0..), the last (the MVP's rule). Any other naming is an error:
 * guessing the last label of a head like {harmful, ..., safe} would score the safe label and allow
 * what it blocks. */
static int find_unsafe_label(const oc_mbert_config *mc, const cJSON *ccfg, const char *mp, const char *cp, int *out, oc_error *err) {
  *out = -1;
  const cJSON *ul = ccfg ? cJSON_GetObjectItemCaseSensitive(ccfg, "unsafe_label") : NULL;
  if (ul && !cJSON_IsNull(ul)) {
    if (!cJSON_IsString(ul)) return oc_fail(err, "%s: \"unsafe_label\" must be the name of a label", cp);
    for (int i = 0; i < mc->n_labels; i++)
      if (strcmp(mc->labels[i], ul->valuestring) == 0) *out = i;
    if (*out < 0) return oc_fail(err, "%s: \"unsafe_label\" \"%.64s\" is not one of config.json's labels", cp, ul->valuestring);
    return 0;
  }
  for (int i = 0; i < mc->n_labels; i++) {
    if (strcmp(mc->labels[i], "unsafe") != 0 && strcmp(mc->labels[i], "unsafe_compliance") != 0) continue;
    if (*out >= 0)
      return oc_fail(err, "%s: id2label has both \"%s\" (%d) and \"%s\" (%d): which one is the unsafe label is ambiguous", mp,
                     mc->labels[*out], *out, mc->labels[i], i);
    *out = i;
  }
  if (*out >= 0) return 0;
  if (generic_labels(mc)) { *out = mc->n_labels - 1; return 0; }
  char names[400] = "";
  for (int i = 0; i < mc->n_labels && strlen(names) < 300; i++) snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", mc->labels[i]);
  return oc_fail(err, "%s: no label is named \"unsafe\" or \"unsafe_compliance\" (labels: %s): name the unsafe one in %s as \"unsafe_label\"", mp, names,
                 cp);
}

/* The exchange text the classifier was trained on: only opencon's (and the MVP's) frame is known;
 * a classifier trained on another would be scored on text it never saw */
#define OC_EXCHANGE_TEXT_FORMAT "User:\n{prompt}\n\nAssistant:\n{response}"
static int check_text_format(const cJSON *ccfg, const char *cp, oc_error *err) {
  const cJSON *tf = cJSON_GetObjectItemCaseSensitive(ccfg, "text_format");
  if (!tf || cJSON_IsNull(tf)) return 0;
  if (!cJSON_IsString(tf) || strcmp(tf->valuestring, OC_EXCHANGE_TEXT_FORMAT) != 0)
    return oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: \"text_format\" must be \"User:\\n{prompt}\\n\\nAssistant:\\n{response}\" (the only exchange text opencon builds)", cp);
  return 0;
}

/* classifier_config.json's thresholds, max_length and label_mapping (training writes it: name -> id,
 * which must be id2label's). */
static int apply_classifier_config(oc_classifier *c, const char *cp, oc_error *err) {
  const oc_mbert_config *mc = oc_mbert_cfg(c->m);
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(c->config, "allow_threshold"), *b = cJSON_GetObjectItemCaseSensitive(c->config, "block_threshold"),
              *ml = cJSON_GetObjectItemCaseSensitive(c->config, "max_length"), *lm = cJSON_GetObjectItemCaseSensitive(c->config, "label_mapping");
  if ((a && !cJSON_IsNumber(a)) || (b && !cJSON_IsNumber(b)) || (ml && !cJSON_IsNumber(ml)))
    return oc_fail(err, "%s: allow_threshold, block_threshold and max_length must be numbers", cp);
  if (oc_classifier_set_thresholds(c, a ? a->valuedouble : 0.35, b ? b->valuedouble : 0.65, err)) return oc_wrap(err, "%s", cp);
  /* [CLS] + one token + [SEP] at least (with the tokenizer: the exchange's frame + one token, checked
   * by the caller); at most the model's positions */
  if (ml && !(ml->valuedouble >= 3 && ml->valuedouble <= mc->max_position_embeddings && ml->valuedouble == floor(ml->valuedouble)))
    return oc_fail(err, "%s: max_length must be an integer in [3, %d] (the model's max_position_embeddings), got %g", cp, mc->max_position_embeddings,
                   ml->valuedouble);
  if (ml) c->max_length = (int)ml->valuedouble;
  if (lm && !cJSON_IsNull(lm)) {
    int ok = cJSON_IsObject(lm) && cJSON_GetArraySize(lm) == mc->n_labels;
    for (int i = 0; i < mc->n_labels && ok; i++) {
      const cJSON *v = cJSON_GetObjectItemCaseSensitive(lm, mc->labels[i]);
      ok = cJSON_IsNumber(v) && v->valuedouble == i;
    }
    if (!ok) return oc_fail(err, "%s: label_mapping contradicts config.json's id2label (each of its %d names must map to its id)", cp, mc->n_labels);
  }
  return 0;
}

/* With the tokenizer: max_length must hold the exchange's frame and at least one token of text.
 * cp: the classifier_config.json that set max_length, NULL for the default; mp: config.json. */
static int check_max_length_holds_frame(const oc_classifier *c, const char *cp, const char *mp, oc_error *err) {
  int least = oc_exchange_min_length(c->tok, err);
  if (least < 0) return -1;
  const int mpe = oc_mbert_cfg(c->m)->max_position_embeddings;
  if (c->max_length >= least) return 0;
  if (least > mpe || !cp)
    return oc_fail(err, "%s: max_position_embeddings %d leaves no room for an exchange (at least %d tokens: its frame and one token of text)", mp, mpe,
                   least);
  return oc_fail(err, "%s: max_length %d cannot hold an exchange (its frame and one token of text take %d); valid range [%d, %d]", cp, c->max_length,
                 least, least, mpe);
}

static int load(const char *dir, int with_tokenizer, oc_classifier **out, oc_error *err) {
  *out = NULL;
  /* a classifier directory whose writer was killed between its two renames: set aside, restored here */
  if (!oc_is_dir(dir) && oc_artifact_dir_recover(dir, err)) return -1;
  oc_classifier *c = calloc(1, sizeof *c);
  if (!c) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  c->allow_threshold = 0.35;
  c->block_threshold = 0.65;
  char *cp = oc_path_join(dir, "classifier_config.json"), *mp = oc_path_join(dir, "config.json");
  int rc = -1;
  if (!cp || !mp) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (oc_mbert_load(dir, &c->m, err) || (with_tokenizer && oc_chat_load(dir, &c->tok, err))) goto done;
  const oc_mbert_config *mc = oc_mbert_cfg(c->m);
  c->max_length = mc->max_position_embeddings < 512 ? mc->max_position_embeddings : 512; /* the default, within the model */
  if (read_optional_json(cp, &c->config, err)) goto done;
  if (!c->config && !(c->config = cJSON_CreateObject())) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (find_unsafe_label(mc, c->config, mp, cp, &c->unsafe_label, err) || check_text_format(c->config, cp, err)) goto done;
  /* every id the tokenizer can produce must be a row of the model's embedding (else the first text
   * that contains such a token fails mid-stream) */
  if (c->tok && oc_tokenizer_vocab_size(c->tok->tok) > mc->vocab) {
    oc_fail(err, "%s/tokenizer.json: ids up to %d, but config.json's vocab_size is %d", dir, oc_tokenizer_vocab_size(c->tok->tok) - 1, mc->vocab);
    goto done;
  }
  const char *ml_from = cJSON_GetObjectItemCaseSensitive(c->config, "max_length") ? cp : NULL;
  if (apply_classifier_config(c, cp, err) || (c->tok && check_max_length_holds_frame(c, ml_from, mp, err))) goto done;
  rc = 0;
done:
  free(cp);
  free(mp);
  if (rc) { oc_classifier_free(c); return -1; }
  *out = c;
  return 0;
}

int oc_classifier_load(const char *dir, oc_classifier **out, oc_error *err) { return load(dir, 1, out, err); }
int oc_classifier_load_ids_only(const char *dir, oc_classifier **out, oc_error *err) { return load(dir, 0, out, err); }

int oc_classifier_open(const char *id, int ids_only, double allow, double block, oc_classifier **out, oc_error *err) {
  char *dir;
  *out = NULL;
  if (oc_resolve_model(id, NULL, &dir, err)) return -1;
  oc_classifier *c;
  int rc = load(dir, !ids_only, &c, err);
  free(dir);
  if (rc) return -1;
  double a = isnan(allow) ? c->allow_threshold : allow, b = isnan(block) ? c->block_threshold : block;
  if (oc_classifier_set_thresholds(c, a, b, err)) {
    oc_classifier_free(c);
    return oc_wrap(err, "classifier thresholds (allow %g, block %g)", a, b);
  }
  *out = c;
  return 0;
}

const char *oc_verdict_name(oc_verdict v) {
  switch (v) {
    case OC_VERDICT_ALLOW: return "allow";
    case OC_VERDICT_UNCERTAIN: return "uncertain";
    case OC_VERDICT_BLOCK: return "block";
  }
  return "block";
}

void oc_decide(double score, double allow, double block, oc_decision *d) {
  d->score = score;
  d->allow_threshold = allow;
  d->block_threshold = block;
  if (!isfinite(score)) {
    d->verdict = OC_VERDICT_BLOCK;
    snprintf(d->reason, sizeof d->reason, "unsafe score is not finite (%g): treated as maximum risk", score);
  } else if (score >= block) {
    d->verdict = OC_VERDICT_BLOCK;
    snprintf(d->reason, sizeof d->reason, "unsafe score %.4f >= block threshold %.4f", score, block);
  } else if (score >= allow) {
    d->verdict = OC_VERDICT_UNCERTAIN;
    snprintf(d->reason, sizeof d->reason, "unsafe score %.4f between allow threshold %.4f and block threshold %.4f", score, allow, block);
  } else {
    d->verdict = OC_VERDICT_ALLOW;
    snprintf(d->reason, sizeof d->reason, "unsafe score %.4f < allow threshold %.4f", score, allow);
  }
}

void oc_softmax(const float *logits, int C, double *probs) {
  double mx = logits[0], s = 0;
  for (int k = 1; k < C; k++) if (logits[k] > mx) mx = logits[k];
  for (int k = 0; k < C; k++) { probs[k] = exp(logits[k] - mx); s += probs[k]; }
  for (int k = 0; k < C; k++) probs[k] /= s;
}

static void finish(const oc_classifier *c, const float *logits, oc_decision *d) {
  int C = oc_mbert_cfg(c->m)->n_labels, finite = 1;
  d->n_labels = C;
  for (int k = 0; k < C; k++) { d->logits[k] = logits[k]; finite &= isfinite(logits[k]) != 0; }
  oc_softmax(logits, C, d->probs);
  /* fail closed: a non-finite logit makes the score NaN, which oc_decide blocks (a -Inf unsafe
   * logit would otherwise read as probability 0, "allow") */
  oc_decide(finite ? d->probs[c->unsafe_label] : NAN, c->allow_threshold, c->block_threshold, d);
}

/* The exchange text of prompt[0, pn) and the response's last rn bytes, encoded untruncated. */
static int encode_cut(const oc_chat *tok, const char *prompt, size_t pn, const char *response, size_t rn, oc_encoding *enc, oc_error *err) {
  char *p = strndup(prompt, pn), *r = strdup(response + strlen(response) - rn), *text = NULL;
  int rc = -1;
  if (!p || !r) oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  else if (!oc_chat_format_exchange(NULL, p, r, 0, &text, err)) rc = oc_chat_encode(tok, text, 1, 0, enc, err);
  free(p); free(r); free(text);
  return rc;
}

/* Token count of the exchange cut to prompt[0, pn) and the response's last rn bytes; -1 on error. */
static int cut_tokens(const oc_chat *tok, const char *prompt, size_t pn, const char *response, size_t rn, oc_error *err) {
  oc_encoding e;
  if (encode_cut(tok, prompt, pn, response, rn, &e, err)) return -1;
  int n = e.n;
  oc_encoding_free(&e);
  return n;
}

static size_t char_floor(const char *s, size_t k) { /* k moved back to a character start */
  while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80) k--;
  return k;
}

/* The longest cut (bytes, on a character boundary, in [0, hi]) for which fits(cut) holds, given
 * that it holds for 0: binary search over byte counts, each probe one encode. */
typedef struct { const oc_chat *tok; const char *prompt, *response; size_t pn, rn; int which, limit; } cut_probe;
static int cut_fits(cut_probe *c, size_t k, oc_error *err) {
  size_t pn = c->which == 0 ? k : c->pn, rn = c->which == 1 ? k : c->rn;
  int n = cut_tokens(c->tok, c->prompt, pn, c->response, rn, err);
  return n < 0 ? -1 : n <= c->limit;
}
static int longest_cut(cut_probe *c, const char *s, size_t hi, size_t *out, oc_error *err) {
  size_t lo = 0; /* fits */
  while (lo < hi) {
    size_t mid = lo + (hi - lo + 1) / 2, k = c->which == 0 ? char_floor(s, mid) : strlen(s) - char_floor(s, strlen(s) - mid);
    if (k <= lo) { hi = mid - 1; continue; }
    int f = cut_fits(c, k, err);
    if (f < 0) return -1;
    if (f) lo = k; else hi = mid - 1;
  }
  *out = lo;
  return 0;
}

int oc_exchange_min_length(const oc_chat *tok, oc_error *err) {
  int frame = cut_tokens(tok, "", 0, "", 0, err);
  return frame < 0 ? -1 : frame + 1;
}

int oc_exchange_encode(const oc_chat *tok, const char *prompt, const char *response, int max_length, oc_encoding *enc, oc_error *err) {
  if (!response) response = "";
  const size_t pl = strlen(prompt), rl = strlen(response);
  if (encode_cut(tok, prompt, pl, response, rl, enc, err)) return -1;
  if (enc->n == 0) { oc_encoding_free(enc); return oc_fail(err, "the exchange encodes to no tokens"); }
  if (max_length <= 0 || enc->n <= max_length) return 0;
  oc_encoding_free(enc);
  /* Too long. The newest response text is what the guard must judge, so the response keeps its END;
   * the prompt keeps its start. The whole response and as much prompt as fits, else a prompt start
   * of at most a quarter of the text's tokens and as much of the response's end as fits. */
  cut_probe c = {tok, prompt, response, 0, rl, 0, max_length};
  size_t pn = 0, rn = rl;
  int f = cut_fits(&c, 0, err);
  if (f < 0) return -1;
  if (f) {
    if (longest_cut(&c, prompt, pl, &pn, err)) return -1;
  } else {
    c.rn = 0;
    int frame = cut_tokens(tok, prompt, 0, response, 0, err); /* "User:", "Assistant:", special tokens */
    if (frame < 0) return -1;
    c.limit = frame + (max_length - frame) / 4;
    if (longest_cut(&c, prompt, pl, &pn, err)) return -1;
    c.pn = pn;
    c.which = 1;
    c.limit = max_length;
    if (longest_cut(&c, response, rl, &rn, err)) return -1;
  }
  if (encode_cut(tok, prompt, pn, response, rn, enc, err)) return -1;
  if (enc->n > max_length) { /* the frame itself ("User:", "Assistant:", special tokens) exceeds max_length */
    oc_encoding_free(enc);
    return oc_fail(err, "max_length %d cannot hold an exchange (%d tokens without text)", max_length, cut_tokens(tok, prompt, 0, response, 0, err));
  }
  return 0;
}

int oc_classifier_encode(const oc_classifier *c, const char *prompt, const char *response, oc_encoding *enc, oc_error *err) {
  if (!c->tok) return oc_fail(err, "the classifier was loaded without its tokenizer: it scores token ids only");
  return oc_exchange_encode(c->tok, prompt, response, c->max_length, enc, err);
}

int oc_classifier_score_ids(oc_classifier *c, const int32_t *ids, int n, oc_decision *out, oc_error *err) {
  float logits[OC_MBERT_MAX_LABELS];
  const int mpe = oc_mbert_cfg(c->m)->max_position_embeddings;
  if (n > mpe) return oc_fail(err, "%d token ids exceed the classifier's %d positions (max_position_embeddings)", n, mpe);
  oc_mbert_batch b = {ids, &n, 1};
  if (oc_mbert_forward(c->m, &b, logits, err)) return -1;
  finish(c, logits, out);
  return 0;
}

int oc_classifier_score_batch_ws(const oc_classifier *c, oc_mbert_ws *ws, const char *const *prompts, const char *const *responses, int n,
                                 oc_decision *out, oc_error *err) {
  if (n < 1) return 0;
  oc_encoding *enc = calloc((size_t)n, sizeof *enc);
  int *lens = malloc(sizeof(int) * (size_t)n), C = oc_mbert_cfg(c->m)->n_labels, tot = 0, done = 0, rc = -1;
  float *logits = malloc(sizeof(float) * (size_t)n * C);
  int32_t *ids = NULL;
  if (!enc || !lens || !logits) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto out; }
  for (; done < n; done++) {
    if (oc_classifier_encode(c, prompts[done], responses[done], &enc[done], err)) { oc_wrap(err, "exchange %d", done); goto out; }
    lens[done] = enc[done].n;
    tot += enc[done].n;
  }
  ids = malloc(sizeof(int32_t) * (size_t)tot);
  if (!ids) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto out; }
  for (int i = 0, o = 0; i < n; o += lens[i++]) memcpy(ids + o, enc[i].ids, sizeof(int32_t) * (size_t)lens[i]);
  oc_mbert_batch b = {ids, lens, n};
  if (oc_mbert_forward_ws(c->m, ws, &b, logits, err)) goto out;
  for (int i = 0; i < n; i++) finish(c, logits + (size_t)i * C, &out[i]);
  rc = 0;
out:
  for (int i = 0; i < done; i++) oc_encoding_free(&enc[i]);
  free(enc); free(lens); free(logits); free(ids);
  return rc;
}

int oc_classifier_score_ws(const oc_classifier *c, oc_mbert_ws *ws, const char *prompt, const char *response, oc_decision *out, oc_error *err) {
  return oc_classifier_score_batch_ws(c, ws, &prompt, &response, 1, out, err);
}

int oc_classifier_score_batch(oc_classifier *c, const char *const *prompts, const char *const *responses, int n, oc_decision *out,
                              oc_error *err) {
  return oc_classifier_score_batch_ws(c, oc_mbert_own_ws(c->m), prompts, responses, n, out, err);
}

int oc_classifier_score(oc_classifier *c, const char *prompt, const char *response, oc_decision *out, oc_error *err) {
  return oc_classifier_score_batch(c, &prompt, &response, 1, out, err);
}

cJSON *oc_decision_json(const oc_classifier *c, const oc_decision *d, int with_logits) {
  const oc_mbert_config *mc = oc_mbert_cfg(c->m);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "verdict", oc_verdict_name(d->verdict));
  cJSON_AddItemToObject(o, "score", isfinite(d->score) ? cJSON_CreateNumber(d->score) : cJSON_CreateNull());
  cJSON_AddStringToObject(o, "reason", d->reason);
  cJSON_AddNumberToObject(o, "allow_threshold", d->allow_threshold);
  cJSON_AddNumberToObject(o, "block_threshold", d->block_threshold);
  cJSON *ls = cJSON_AddObjectToObject(o, "label_scores");
  for (int k = 0; k < d->n_labels; k++) cJSON_AddNumberToObject(ls, mc->labels[k], d->probs[k]);
  cJSON_AddStringToObject(o, "unsafe_label", mc->labels[c->unsafe_label]);
  if (with_logits) {
    cJSON *l = cJSON_AddArrayToObject(o, "logits");
    for (int k = 0; k < d->n_labels; k++) cJSON_AddItemToArray(l, cJSON_CreateNumber(d->logits[k]));
  }
  return o;
}
