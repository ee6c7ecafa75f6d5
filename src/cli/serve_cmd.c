/* serve: the guard behind an OpenAI-compatible HTTP API (the library's oc_server) */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "opencon/serve.h"
#include "opts.h"

static int run_serve(const cli_args *a) {
  oc_error err = {0};
  oc_serve_opts o;
  oc_serve_opts_defaults(&o);
  if (guard_spec(a, &o.spec, &err)) return die(&err);
  o.final_classifier_check = arg_flag(a, "final_classifier_check");
  o.host = arg_str(a, "host");
  o.port = arg_int(a, "port");
  o.engine.parallel = arg_int(a, "parallel");
  o.engine.ctx_size = arg_int(a, "ctx_size");
  o.engine.queue = arg_int(a, "queue");
  o.engine.threads = arg_int(a, "threads");
  o.engine.prefill_chunk = arg_int(a, "prefill_chunk");
  o.engine.adapt_team = !arg_flag(a, "fixed_threads");
  o.api_key = arg_str(a, "api_key");
  o.api_key_file = arg_str(a, "api_key_file");
  o.audit_log = arg_str(a, "audit_log");
  o.log_content = arg_flag(a, "log_content");
  o.max_body_bytes = (size_t)arg_i64(a, "max_body_bytes");
  o.allow_observe = arg_flag(a, "allow_observe");
  o.default_max_tokens = arg_int(a, "default_max_tokens");
  o.model_name = arg_str(a, "model_name");
  const double drain_s = arg_double(a, "drain_s");
  if (o.api_key && o.api_key_file) return cli_usage_error(a, "give --api_key or --api_key_file, not both");
  sigset_t stop;
  cli_block_stop_signals(&stop);
  oc_server *s;
  if (oc_server_start(&o, &s, &err)) return die(&err);
  fprintf(stderr, "opencon serve: listening on http://%s%s%s:%d (loading %s)\n", strchr(o.host, ':') ? "[" : "", o.host, strchr(o.host, ':') ? "]" : "",
          oc_server_port(s), o.spec.model_id);
  return cli_serve_until_signal(s, o.host, &stop, drain_s);
}

void cli_block_stop_signals(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGTERM);
  sigaddset(set, SIGINT);
  pthread_sigmask(SIG_BLOCK, set, NULL);
  signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an error return, not the end of the server */
}

int cli_serve_until_signal(oc_server *s, const char *host, const sigset_t *stop, double drain_s) {
  oc_error err = {0};
  int loading = 1, rc = 0;
  for (;;) {
    struct timespec tick = {0, 200 * 1000000L};
    int sig = sigtimedwait(stop, NULL, &tick);
    if (sig == SIGTERM || sig == SIGINT) {
      fprintf(stderr, "opencon serve: %s: draining (up to %g s)\n", sig == SIGTERM ? "SIGTERM" : "SIGINT", drain_s);
      break;
    }
    if (loading) {
      int st = oc_server_load_status(s, &err);
      if (st < 0) { rc = die(&err); break; }
      if (st == 0) {
        loading = 0;
        fprintf(stderr, "opencon serve: ready; the console: http://%s%s%s:%d/\n", strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
                oc_server_port(s));
      }
    }
  }
  oc_server_drain(s, rc ? 0 : drain_s);
  oc_server_free(s);
  if (!rc) fprintf(stderr, "opencon serve: stopped\n");
  return rc;
}

static const opt_spec serve_opts[] = {
    GUARD_OPTS,
    O_FLAG("final_classifier_check", "classify each whole response at its end (block -> refusal, uncertain -> held)"),
    O_STR("host", "127.0.0.1", "the address to listen on (IPv4 or IPv6)"),
    O_INT("port", "8080", 0, 65535, "the port (0: any free port, printed at start)"),
    O_INT("parallel", "4", 1, 256, "slots: generations decoded together, each with its own KV cache"),
    O_INT("ctx_size", "4096", 2, 1 << 24, "positions per slot: prompt + generated tokens"),
    O_INT("queue", "64", 0, 65536, "requests waiting for a slot; more get 429"),
    O_INT("prefill_chunk", "256", 1, 1 << 20, "prompt tokens read per step while other slots decode"),
    O_STR("api_key", NULL, "require Authorization: Bearer KEY (not /health)"),
    O_IN("api_key_file", "keys, one per line (# comments); the audit log names them key1, key2, ..."),
    O_OUT("audit_log", NULL, "a JSONL line per request: ids, key id, token counts, guard status, max risk, classifier scores"),
    O_FLAG("log_content", "the audit log also holds prompts and released responses"),
    O_I64("max_body_bytes", "1048576", 1024, 1 << 30, "larger request bodies get 413"),
    O_FLAG("allow_observe", "requests may ask for guard mode observe (stream everything, report what the guard would do)"),
    O_INT("default_max_tokens", "0", 0, 1 << 20, "max_tokens of a request that names none (0: the rest of the slot's context)"),
    O_STR("model_name", NULL, "the model id /v1/models lists and responses name (default: --model_id)"),
    O_DBL("drain_s", "30", 0, 86400, "on SIGTERM/SIGINT: seconds running requests may take to finish"),
    O_FLAG("fixed_threads", "keep all --threads even while another process contends for the cores (by default the engine then runs on one)"),
    O_THREADS, O_END};
const cli_command cmd_serve = {
    "serve", "an OpenAI-compatible server: guarded chat completions, continuously batched, and moderations",
    "POST /v1/chat/completions (streamed or not), POST /v1/moderations, GET /v1/models, GET /v1/guard/config, GET /health,\n"
    "GET /metrics, POST /tokenize, /detokenize, /apply-template, and a web console at / (chat, the guard's risk chart,\n"
    "moderation; no key needed to load it). Only text the guard has released is ever sent; a guard stop ends\n"
    "with the refusal and finish_reason content_filter. The port opens at once; /health is 503 until the guard is loaded.\n"
    "SIGTERM/SIGINT: new requests get 503, running ones finish (up to --drain_s), the audit log is flushed, exit 0.",
    serve_opts, run_serve};
