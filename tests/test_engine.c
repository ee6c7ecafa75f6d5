/* The continuous-batching engine against one-at-a-time guarded generation: jobs with different
 * guard paths (completed, paused then allowed, blocked mid-stream, uncertain, blocked by the final
 * check, observe, stop strings, sampling) run together in 3 slots with chunked prefill and a queue,
 * and each must produce exactly what oc_guard_generate produces alone: the same tokens, status,
 * released text and events. Also: stop strings and observe mode against their definitions, stricter
 * thresholds only, a full queue, cancellation, a prompt too long for the slots. A probe over two
 * layers: the engine's batched steps tap both and give what one-at-a-time generation gives. And
 * oc_release_threads, which the engine's creator calls: the calling thread's idle OpenMP workers go. */
#include <dirent.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "opencon/serve.h"

static oc_model *M;
static oc_chat *CH;
static oc_classifier *CLS;

typedef struct { char text[8192]; size_t n; char ev[16384]; size_t en; } sink;
/* the process's threads (/proc/self/task) */
static int n_threads(void) {
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
  if (d) closedir(d);
  return n;
}

/* a parallel region leaves this thread 3 idle workers (libgomp); oc_release_threads ends them */
static void check_release_threads(void) {
  const int alone = n_threads();
  oc_set_threads(4);
  omp_set_dynamic(0);
  int team = 0;
#pragma omp parallel num_threads(4)
#pragma omp atomic
  team++;
  const int pooled = n_threads();
  oc_release_threads();
  int left = n_threads();
  for (int i = 0; i < 200 && left != alone; i++) { /* (the workers exit as they wake) */
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
    left = n_threads();
  }
  CHECK(team >= 2 && pooled == alone + team - 1 && left == alone, "oc_release_threads: %d threads alone, %d with the team of %d, %d after", alone, pooled,
        team, left);
}

static void emit(void *ud, const char *t, size_t n) {
  sink *s = ud;
  if (s->n + n < sizeof s->text) { memcpy(s->text + s->n, t, n); s->n += n; s->text[s->n] = 0; }
}
static void on_event(void *ud, const char *json) {
  sink *s = ud;
  size_t k = strlen(json);
  if (s->en + k + 2 < sizeof s->ev) { memcpy(s->ev + s->en, json, k); s->en += k; s->ev[s->en++] = '\n'; s->ev[s->en] = 0; }
}

typedef struct {
  const char *name, *prompt;
  oc_guard_opts o;
  oc_guard_status want; /* the status the case is built for */
  /* the engine's */
  oc_job *job;
  sink got;
  size_t toff, eoff;
  /* one at a time */
  oc_guard_result ref;
  sink ref_out;
} job_case;

static void encode(const char *prompt, oc_encoding *e) {
  char *text;
  oc_error err;
  REQUIRE(oc_chat_format_exchange(CH, prompt, NULL, 1, &text, &err) == 0 && oc_chat_encode(CH, text, 0, 0, e, &err) == 0, "%s", err.msg);
  free(text);
}

/* poll a job to its end, collecting released text and events */
static void drain(job_case *c) {
  for (int spins = 0; spins < 100000; spins++) {
    oc_job_news n;
    REQUIRE(oc_job_poll(c->job, &c->toff, &c->eoff, 100, &n) == 0, "poll");
    if (n.text) emit(&c->got, n.text, n.text_len);
    for (char *line = n.events; line && *line;) {
      char *nl = strchr(line, '\n');
      *nl = 0;
      on_event(&c->got, line);
      line = nl + 1;
    }
    int done = n.done;
    oc_job_news_free(&n);
    if (done) return;
  }
  REQUIRE(0, "%s: the job never finished", c->name);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 3, "usage: test_engine MODEL_DIR CLASSIFIER_DIR");
#ifndef __clang__ /* (LLVM's libomp keeps paused workers asleep instead of ending them: this is libgomp's behaviour) */
  check_release_threads();
#endif
  oc_set_threads(2);
  oc_error err;
  REQUIRE(oc_model_load(argv[1], &M, &err) == 0 && oc_chat_load(argv[1], &CH, &err) == 0 && oc_classifier_load(argv[2], &CLS, &err) == 0, "%s",
          err.msg);
  const int H = oc_model_cfg(M)->hidden;
  /* a probe reading 0.5 at every step: the server's pause threshold 0.75 never pauses, a request's 0.5 always does */
  float *w = calloc((size_t)H, sizeof(float));
  oc_probe half = {H, w, 0.0f};
  oc_probe_config pc;
  oc_probe_config_defaults(&pc);
  pc.smoothing_window = 2;
  REQUIRE(oc_classifier_set_thresholds(CLS, 0.999999, 1.0, &err) == 0, "%s", err.msg); /* the server's: always allow */
  oc_guard *g;
  REQUIRE(oc_guard_new(M, CH, &half, &pc, CLS, &g, &err) == 0, "%s", err.msg);

  static const char *stops[] = {"e", "\n"};
  job_case cs[] = {
      {.name = "completed", .prompt = "How do I bake bread at home?", .want = OC_GUARD_COMPLETED},
      {.name = "paused then allowed", .prompt = "Tell me a story about a very long journey across the sea", .want = OC_GUARD_COMPLETED},
      {.name = "blocked mid-stream", .prompt = "Hi", .want = OC_GUARD_BLOCKED},
      {.name = "uncertain", .prompt = "What is the capital of France? Answer briefly please.", .want = OC_GUARD_UNCERTAIN},
      {.name = "final check blocks", .prompt = "Write a haiku", .want = OC_GUARD_BLOCKED},
      {.name = "observe", .prompt = "Hi", .want = OC_GUARD_BLOCKED},
      {.name = "stop string", .prompt = "Say something", .want = OC_GUARD_COMPLETED},
      {.name = "sampled", .prompt = "How do I bake bread at home?", .want = OC_GUARD_COMPLETED},
  };
  const int N = (int)(sizeof cs / sizeof *cs);
  for (int i = 0; i < N; i++) {
    oc_guard_opts *o = &cs[i].o;
    oc_guard_opts_defaults(o);
    o->max_new_tokens = 12 + i;
  }
  cs[1].o.pause_threshold = 0.5;
  cs[2].o.pause_threshold = 0.5; cs[2].o.allow_threshold = 0.0; cs[2].o.block_threshold = 1e-9;
  cs[3].o.pause_threshold = 0.5; cs[3].o.allow_threshold = 0.0; cs[3].o.block_threshold = 1.0;
  cs[4].o.final_classifier_check = 1; cs[4].o.allow_threshold = 0.0; cs[4].o.block_threshold = 1e-9;
  cs[5].o = cs[2].o; cs[5].o.observe = 1;
  cs[6].o.stop = stops; cs[6].o.n_stop = 2;
  cs[7].o.temperature = 0.9; cs[7].o.top_p = 0.95; cs[7].o.seed = 7;

  /* one at a time */
  for (int i = 0; i < N; i++) {
    REQUIRE(oc_guard_generate(g, cs[i].prompt, &cs[i].o, emit, on_event, &cs[i].ref_out, &cs[i].ref, &err) == 0, "%s: %s", cs[i].name, err.msg);
    CHECK(cs[i].ref.status == cs[i].want, "%s: built for %s, got %s", cs[i].name, oc_guard_status_name(cs[i].want), oc_guard_status_name(cs[i].ref.status));
  }
  /* the engine: 3 slots, a 5-token prefill chunk, everything submitted at once */
  oc_engine_opts eo;
  oc_engine_opts_defaults(&eo);
  eo.parallel = 3;
  eo.ctx_size = 256;
  eo.queue = N;
  eo.prefill_chunk = 5;
  eo.threads = 2;
  oc_engine *e;
  REQUIRE(oc_engine_new(g, &eo, &e, &err) == 0, "%s", err.msg);
  for (int i = 0; i < N; i++) {
    oc_encoding enc;
    encode(cs[i].prompt, &enc);
    REQUIRE(oc_engine_submit(e, enc.ids, enc.n, cs[i].prompt, &cs[i].o, 1, &cs[i].job, &err) == 0, "%s: %s", cs[i].name, err.msg);
    oc_encoding_free(&enc);
  }
  for (int i = 0; i < N; i++) {
    job_case *c = &cs[i];
    drain(c);
    const oc_guard_result *r;
    REQUIRE(oc_job_result(c->job, &r, NULL, &err) == 0, "%s: %s", c->name, err.msg);
    int same_tokens = r->n_tokens == c->ref.n_tokens && memcmp(r->tokens, c->ref.tokens, sizeof(int32_t) * (size_t)r->n_tokens) == 0;
    CHECK(same_tokens, "%s: batched tokens equal one-at-a-time (%d vs %d)", c->name, r->n_tokens, c->ref.n_tokens);
    CHECK(r->status == c->ref.status && r->stop_reason == c->ref.stop_reason && strcmp(r->response, c->ref.response) == 0,
          "%s: same status %s/%s, stop %s/%s, response", c->name, oc_guard_status_name(r->status), oc_guard_status_name(c->ref.status),
          oc_stop_reason_name(r->stop_reason), oc_stop_reason_name(c->ref.stop_reason));
    CHECK(strcmp(c->got.text, c->ref_out.text) == 0, "%s: the same text released (\"%s\" vs \"%s\")", c->name, c->got.text, c->ref_out.text);
    CHECK(strcmp(c->got.ev, c->ref_out.ev) == 0, "%s: the same events:\n%s---\n%s", c->name, c->got.ev, c->ref_out.ev);
    CHECK(r->probe_calls == c->ref.probe_calls && r->classifier_calls == c->ref.classifier_calls, "%s: the same probe and classifier calls", c->name);
    double *scores;
    int n_scores = oc_job_classifier_scores(c->job, &scores);
    free(scores);
    CHECK(n_scores == r->classifier_calls, "%s: one recorded score per classifier call (%d vs %d)", c->name, n_scores, r->classifier_calls);
  }
  {
    oc_engine_stats st;
    oc_engine_get_stats(e, &st);
    CHECK(st.decode_tokens > st.decode_steps && st.prefill_tokens > 0, "decode steps were batched: %lld tokens in %lld steps", (long long)st.decode_tokens,
          (long long)st.decode_steps);
  }
  /* the paths themselves */
  CHECK(cs[1].ref.classifier_calls >= 1 && cs[1].ref.status == OC_GUARD_COMPLETED, "paused then allowed: the classifier was asked and allowed");
  CHECK(strcmp(cs[2].ref.response, OC_REFUSAL) == 0 && cs[2].ref_out.n == 0, "blocked at the first probe step: nothing released");
  CHECK(cs[3].ref_out.n == 0 && cs[3].ref.held_response_chars > 0, "uncertain: held text never released");
  CHECK(cs[4].ref.final_classifier_check && cs[4].ref.classifier_calls == 1 && strcmp(cs[4].ref.response, OC_REFUSAL) == 0,
        "final check: one classifier call at the end, the refusal");
  /* observe: everything released, the guard's would-be stop reported */
  {
    oc_guard_opts plain = cs[5].o;
    plain.observe = 0;
    plain.pause_threshold = NAN;
    oc_guard_result full;
    sink fo = {0};
    REQUIRE(oc_guard_generate(g, cs[5].prompt, &plain, emit, NULL, &fo, &full, &err) == 0, "%s", err.msg);
    CHECK(strcmp(cs[5].ref.response, full.response) == 0 && strcmp(cs[5].ref_out.text, full.response) == 0 && cs[5].ref.n_tokens == full.n_tokens,
          "observe: the whole unguarded answer is released (\"%s\" vs \"%s\")", cs[5].ref_out.text, full.response);
    CHECK(cs[5].ref.classifier_calls >= 2, "observe: the guard keeps reading after its would-be block (%d classifier calls)", cs[5].ref.classifier_calls);
    /* stop strings: the answer is the unstopped one cut before the first stop string */
    plain = cs[6].o;
    plain.stop = NULL;
    plain.n_stop = 0;
    oc_guard_result unstopped;
    REQUIRE(oc_guard_generate(g, cs[6].prompt, &plain, NULL, NULL, NULL, &unstopped, &err) == 0, "%s", err.msg);
    size_t cut = strcspn(unstopped.response, "e\n");
    CHECK(strlen(cs[6].ref.response) == cut && strncmp(cs[6].ref.response, unstopped.response, cut) == 0 &&
              (cut < strlen(unstopped.response) ? cs[6].ref.stop_reason == OC_STOP_SEQUENCE : 1),
          "stop strings: \"%s\" is \"%s\" cut at %zu", cs[6].ref.response, unstopped.response, cut);
    oc_guard_result_free(&full);
    oc_guard_result_free(&unstopped);
  }
  /* stop strings taken from the answer itself, at many places (this tokenizer's bytes make multi-byte
   * characters and unfinished ones): the answer is the unstopped one cut before the first
   * occurrence, and nothing of the stop string was ever emitted */
  {
    oc_guard_opts o;
    oc_guard_opts_defaults(&o);
    o.max_new_tokens = 24;
    oc_guard_result full;
    REQUIRE(oc_guard_generate(g, "Tell me a story", &o, NULL, NULL, NULL, &full, &err) == 0, "%s", err.msg);
    const size_t L = strlen(full.response);
    int cases = 0, ok = 1;
    for (size_t at = 0; at + 2 <= L && cases < 40; at += 1 + L / 20)
      for (size_t len = 2; len <= 5 && at + len <= L; len += 3, cases++) {
        char stop[8];
        memcpy(stop, full.response + at, len);
        stop[len] = 0;
        const char *stops1[] = {stop};
        oc_guard_opts so = o;
        so.stop = stops1;
        so.n_stop = 1;
        sink out = {0};
        oc_guard_result r;
        REQUIRE(oc_guard_generate(g, "Tell me a story", &so, emit, NULL, &out, &r, &err) == 0, "%s", err.msg);
        const char *first = strstr(full.response, stop);
        const size_t cut = first ? (size_t)(first - full.response) : L;
        int good = strlen(r.response) == cut && strncmp(r.response, full.response, cut) == 0 && strcmp(out.text, r.response) == 0 &&
                   strstr(out.text, stop) == NULL && r.stop_reason == OC_STOP_SEQUENCE;
        if (!good) fprintf(stderr, "stop \"%s\" at %zu: got \"%s\" (emitted \"%s\"), want the first %zu bytes of \"%s\"\n", stop, at, r.response, out.text, cut,
                           full.response);
        ok &= good;
        oc_guard_result_free(&r);
      }
    CHECK(ok && cases >= 8, "stop strings cut the answer before their first occurrence, never emitted (%d cases)", cases);
    oc_guard_result_free(&full);
  }
  /* a final check to come: the tail after the last mid-stream reading waits for it (and a block
   * never releases it) */
  {
    oc_guard_opts o;
    oc_guard_opts_defaults(&o);
    o.max_new_tokens = 14; /* 3 readings at 4, 8, 12, then a tail of 2 tokens */
    oc_guard_result plain, checked;
    sink po = {0}, co = {0};
    REQUIRE(oc_guard_generate(g, "Write a haiku about rain", &o, emit, NULL, &po, &plain, &err) == 0, "%s", err.msg);
    o.final_classifier_check = 1;
    o.allow_threshold = 0.0;
    o.block_threshold = 1e-9;
    REQUIRE(oc_guard_generate(g, "Write a haiku about rain", &o, emit, NULL, &co, &checked, &err) == 0, "%s", err.msg);
    char *at12;
    size_t n12;
    REQUIRE(oc_tokenizer_decode(CH->tok, plain.tokens, 12 < plain.n_tokens ? 12 : plain.n_tokens, 1, &at12, &n12, &err) == 0, "%s", err.msg);
    CHECK(plain.n_tokens == 14 && checked.status == OC_GUARD_BLOCKED && strcmp(checked.response, OC_REFUSAL) == 0 && co.n < po.n &&
              strncmp(co.text, po.text, co.n) == 0 && co.n <= n12,
          "a blocking final check: only what the readings at steps 4-12 released went out (%zu bytes of %zu; %zu at step 12)", co.n, po.n, n12);
    free(at12);
    oc_guard_result_free(&plain);
    oc_guard_result_free(&checked);
  }
  /* a caller may only tighten the guard */
  {
    oc_guard_opts o;
    oc_guard_opts_defaults(&o);
    oc_guard_result r;
    o.pause_threshold = 0.9;
    CHECK(oc_guard_generate(g, "Hi", &o, NULL, NULL, NULL, &r, &err) != 0 && strstr(err.msg, "stricter"), "a looser pause threshold is refused: %s", err.msg);
    oc_guard_opts_defaults(&o);
    o.allow_threshold = 0.2;
    o.block_threshold = 0.1;
    CHECK(oc_guard_generate(g, "Hi", &o, NULL, NULL, NULL, &r, &err) != 0, "allow above block is refused");
    oc_guard_opts_defaults(&o);
    const char *empty[] = {""};
    o.stop = empty;
    o.n_stop = 1;
    CHECK(oc_guard_generate(g, "Hi", &o, NULL, NULL, NULL, &r, &err) != 0 && strstr(err.msg, "stop string"), "an empty stop string is refused");
  }
  for (int i = 0; i < N; i++) { oc_job_release(cs[i].job); oc_guard_result_free(&cs[i].ref); }

  /* a prompt too long for the slots, a full queue, cancellation */
  {
    oc_encoding enc;
    encode("Tell me a story about a very long journey across the sea", &enc);
    oc_guard_opts o;
    oc_guard_opts_defaults(&o);
    o.max_new_tokens = 256 - enc.n;
    oc_job *j;
    CHECK(oc_engine_submit(e, enc.ids, enc.n, "x", &o, 0, &j, &err) != 0 && err.code == OC_ERR_INVALID && strstr(err.msg, "do not fit"),
          "prompt + max_tokens beyond ctx_size: %s", err.msg);
    o.max_new_tokens = 150;
    o.pause_threshold = 0.9;
    CHECK(oc_engine_submit(e, enc.ids, enc.n, "x", &o, 0, &j, &err) != 0 && err.code == OC_ERR_INVALID && strstr(err.msg, "stricter"),
          "a looser threshold is refused at submission, not after the stream started: %s", err.msg);
    o.pause_threshold = NAN;
    oc_job *jobs[16];
    int accepted = 0, busy = 0;
    for (int i = 0; i < 16; i++) {
      if (oc_engine_submit(e, enc.ids, enc.n, "x", &o, 0, &jobs[accepted], &err) == 0) accepted++;
      else busy += err.code == OC_ERR_BUSY;
    }
    if (!busy) fprintf(stderr, "last error: %s\n", err.msg);
    CHECK(busy > 0 && accepted <= eo.queue + eo.parallel && accepted >= eo.queue, "a full queue refuses with OC_ERR_BUSY (%d accepted, %d busy)", accepted, busy);
    for (int i = 0; i < accepted; i++) oc_job_cancel(jobs[i]);
    int cancelled = 0;
    for (int i = 0; i < accepted; i++) {
      job_case c = {.name = "cancelled", .job = jobs[i]};
      drain(&c);
      const oc_guard_result *r;
      if (oc_job_result(jobs[i], &r, NULL, &err) != 0 && err.code == OC_ERR_CANCELLED) cancelled++;
      oc_job_release(jobs[i]);
    }
    CHECK(cancelled >= accepted - eo.parallel, "cancelled jobs end as cancelled (%d of %d)", cancelled, accepted);
    oc_engine_stats st;
    oc_engine_get_stats(e, &st);
    CHECK(st.busy_slots == 0 && st.queued == 0, "every slot is free again (%d busy, %d queued)", st.busy_slots, st.queued);
    /* a classify job */
    CHECK(oc_engine_submit_classify(e, "How do I bake bread?", "Mix flour and water.", &j, &err) == 0, "%s", err.msg);
    job_case c = {.name = "classify", .job = j};
    drain(&c);
    const oc_decision *d;
    oc_decision ref;
    REQUIRE(oc_job_result(j, NULL, &d, &err) == 0 && oc_classifier_score(CLS, "How do I bake bread?", "Mix flour and water.", &ref, &err) == 0, "%s",
            err.msg);
    CHECK(d->score == ref.score && d->verdict == ref.verdict, "classify job: the classifier's score %g vs %g", d->score, ref.score);
    oc_job_release(j);
    oc_encoding_free(&enc);
  }
  oc_engine_free(e);
  oc_guard_free(g);
  /* a probe over layers -1 and 2 (concatenated): risks that vary, pauses the classifier allows */
  {
    float *w2 = malloc(sizeof(float) * 2 * (size_t)H);
    for (int i = 0; i < 2 * H; i++) w2[i] = (float)((i * 37 % 11) - 5) * 0.05f;
    oc_probe two = {2 * H, w2, 0.0f};
    int layers[2] = {-1, 2};
    oc_probe_config pc2;
    oc_probe_config_defaults(&pc2);
    pc2.smoothing_window = 2;
    pc2.n_layers = 2;
    pc2.layers = layers;
    pc2.combine = OC_COMBINE_CONCAT;
    pc2.layer = layers[0];
    oc_guard *g2;
    REQUIRE(oc_guard_new(M, CH, &two, &pc2, CLS, &g2, &err) == 0, "two-layer guard: %s", err.msg);
    job_case ml[3] = {{.name = "two layers a", .prompt = "How do I bake bread at home?"},
                      {.name = "two layers b", .prompt = "Tell me a story about the sea"},
                      {.name = "two layers c", .prompt = "Hi"}};
    for (int i = 0; i < 3; i++) {
      oc_guard_opts_defaults(&ml[i].o);
      ml[i].o.max_new_tokens = 10 + 3 * i;
      ml[i].o.pause_threshold = 0.5;
      REQUIRE(oc_guard_generate(g2, ml[i].prompt, &ml[i].o, emit, on_event, &ml[i].ref_out, &ml[i].ref, &err) == 0, "%s: %s", ml[i].name, err.msg);
    }
    oc_engine *e2;
    eo.queue = 3;
    REQUIRE(oc_engine_new(g2, &eo, &e2, &err) == 0, "%s", err.msg);
    for (int i = 0; i < 3; i++) {
      oc_encoding enc;
      encode(ml[i].prompt, &enc);
      REQUIRE(oc_engine_submit(e2, enc.ids, enc.n, ml[i].prompt, &ml[i].o, 1, &ml[i].job, &err) == 0, "%s: %s", ml[i].name, err.msg);
      oc_encoding_free(&enc);
    }
    int probed = 0;
    for (int i = 0; i < 3; i++) {
      drain(&ml[i]);
      const oc_guard_result *r;
      REQUIRE(oc_job_result(ml[i].job, &r, NULL, &err) == 0, "%s: %s", ml[i].name, err.msg);
      /* the same tokens, decisions and released text; the risks within 1e-6: the engine prefills in
       * 5-token chunks (decode attention), one-at-a-time generation the prompt in one piece (sgemm
       * attention from 8 tokens), so the caches differ in f32 rounding (the cases above read with an
       * all-zero probe, 0.5 whatever the states, which is why their events match in every bit) */
      CHECK(r->status == ml[i].ref.status && r->n_tokens == ml[i].ref.n_tokens && memcmp(r->tokens, ml[i].ref.tokens, sizeof(int32_t) * (size_t)r->n_tokens) == 0 &&
                strcmp(r->response, ml[i].ref.response) == 0 && strcmp(ml[i].got.text, ml[i].ref_out.text) == 0 &&
                r->probe_calls == ml[i].ref.probe_calls && r->classifier_calls == ml[i].ref.classifier_calls &&
                fabs(r->max_risk - ml[i].ref.max_risk) <= 1e-6,
            "%s: the engine's two-layer guard equals one-at-a-time (%s/%s, max risk %.9g/%.9g):\n%s---\n%s", ml[i].name, oc_guard_status_name(r->status),
            oc_guard_status_name(ml[i].ref.status), r->max_risk, ml[i].ref.max_risk, ml[i].got.ev, ml[i].ref_out.ev);
      probed += r->probe_calls;
      oc_job_release(ml[i].job);
      oc_guard_result_free(&ml[i].ref);
    }
    CHECK(probed >= 6, "two-layer probe read (%d readings)", probed);
    oc_engine_free(e2);
    oc_guard_free(g2);
    free(w2);
  }
  free(w);
  oc_classifier_free(CLS);
  oc_chat_free(CH);
  oc_model_free(M);
  printf("engine: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail != 0;
}
