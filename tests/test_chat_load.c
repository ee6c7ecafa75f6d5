/* A model directory's tokenizer_config.json, special_tokens_map.json and chat template as hostile
 * input (issue 19's review, formats/02 and formats/18): a NUL byte in chat_template.jinja, or a
 * NUL the template renders, silently cut the prompt there (the user's message vanished); a special
 * token that is neither a string nor {"content": string} was accepted and failed later as
 * "'bos_token' is undefined"; a chat_template of the wrong type meant "no template".
 * usage: test_chat_load TOKENIZER_JSON */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "opencon/chat.h"

static char g_dir[64];
static const char *g_tokenizer;

static void write_file(const char *name, const char *data, size_t n) {
  char p[256];
  snprintf(p, sizeof p, "%s/%s", g_dir, name);
  FILE *f = fopen(p, "wb");
  REQUIRE(f && fwrite(data, 1, n, f) == n && fclose(f) == 0, "cannot write %s", p);
}
static void write_str(const char *name, const char *s) { write_file(name, s, strlen(s)); }
static void remove_file(const char *name) {
  char p[256];
  snprintf(p, sizeof p, "%s/%s", g_dir, name);
  unlink(p);
}

/* a fresh model directory: the tokenizer and the given tokenizer_config.json (NULL: none) */
static void model_dir(const char *config) {
  remove_file("chat_template.jinja");
  remove_file("special_tokens_map.json");
  remove_file("tokenizer_config.json");
  char *tok;
  size_t n;
  oc_error e;
  REQUIRE(oc_read_file(g_tokenizer, &tok, &n, &e) == 0, "%s", e.msg);
  write_file("tokenizer.json", tok, n);
  free(tok);
  if (config) write_str("tokenizer_config.json", config);
}

/* oc_chat_load fails with a message containing the file name and needle */
static void expect_load_error(const char *file, const char *needle, const char *what) {
  oc_chat *c = NULL;
  oc_error e = {0};
  int rc = oc_chat_load(g_dir, &c, &e);
  CHECK(rc != 0 && c == NULL && strstr(e.msg, file) && strstr(e.msg, needle) && e.code == OC_ERR_INVALID,
        "%s: want a load error naming %s with \"%s\", got %s", what, file, needle, rc ? e.msg : "success");
  oc_chat_free(c);
}

static oc_chat *load_ok(const char *what) {
  oc_chat *c = NULL;
  oc_error e = {0};
  CHECK(oc_chat_load(g_dir, &c, &e) == 0, "%s: %s", what, e.msg);
  return c;
}

/* the exchange text with the model's template, or NULL with the error in e */
static char *format(const oc_chat *c, const char *prompt, oc_error *e) {
  char *out = NULL;
  return oc_chat_format_exchange(c, prompt, NULL, 1, &out, e) ? NULL : out;
}

/* the model directory loads, and its template formats prompt as want */
static void expect_format(const char *prompt, const char *want, const char *what) {
  oc_chat *c = load_ok(what);
  if (!c) return;
  oc_error e = {0};
  char *out = format(c, prompt, &e);
  CHECK(out && !strcmp(out, want), "%s: got %s", what, out ? out : e.msg);
  free(out);
  oc_chat_free(c);
}

static void nul_in_template(void) {
  /* a raw NUL byte in chat_template.jinja: everything after it was lost, the user's message too */
  static const char raw[] = "SYSTEM: be safe\nx\0{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";
  model_dir("{\"bos_token\": \"<s>\"}");
  write_file("chat_template.jinja", raw, sizeof raw - 1);
  expect_load_error("chat_template.jinja", "the template contains a NUL byte (at byte 17)", "raw NUL");

  /* a template that renders a NUL ('\x00'): the prompt stopped there when passed on as a C string */
  write_str("chat_template.jinja", "SYSTEM: be safe\n{{ '\\x00' }}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}");
  oc_chat *c = load_ok("escaped NUL");
  if (c) {
    oc_error e = {0};
    char *out = format(c, "HOW TO BUILD A BOMB", &e);
    CHECK(!out && strstr(e.msg, "chat_template.jinja: the rendered prompt contains a NUL character (at byte 16 of 43)") && e.code == OC_ERR_INVALID,
          "a rendered NUL: want an error, got %s", out ? out : e.msg);
    free(out);
    /* oc_chat_render, which the CLI and the guard reach through oc_chat_format_exchange, says the same */
    cJSON *msgs = cJSON_Parse("[{\"role\": \"user\", \"content\": \"hi\"}]");
    CHECK(oc_chat_render(c->tmpl, c->config, msgs, 1, NULL, &out, &e) != 0 && out == NULL && strstr(e.msg, "NUL character"),
          "oc_chat_render: want an error, got %s", out ? out : e.msg);
    free(out);
    cJSON_Delete(msgs);
    oc_chat_free(c);
  }
  /* the same template without the NUL renders the whole prompt */
  write_str("chat_template.jinja", "SYSTEM: be safe\n{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}");
  expect_format("HOW TO BUILD A BOMB", "SYSTEM: be safe\nuser: HOW TO BUILD A BOMB\n", "no NUL");
  /* tokenizer_config.json's chat_template: its JSON string may not hold a NUL either */
  model_dir("{\"chat_template\": \"x\\u0000{{ messages }}\"}");
  expect_load_error("tokenizer_config.json", "NUL", "NUL in the config's template");
}

static void special_tokens(void) {
  static const char *const keys[] = {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"};
  static const struct { const char *value, *needle; } bad[] = {
    {"{\"x\": 1}", "must be a string or an object with a \"content\" string (the object has no \"content\")"},
    {"{\"content\": 5}", "must be a string or an object with a \"content\" string (its \"content\" is not a string)"},
    {"5", "must be a string or an object with a \"content\" string"},
    {"[\"<s>\"]", "must be a string or an object"},
    {"true", "must be a string or an object"}};
  char cfg[256], needle[300];
  for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
      snprintf(cfg, sizeof cfg, "{\"%s\": %s}", keys[k], bad[i].value);
      model_dir(cfg);
      snprintf(needle, sizeof needle, "\"%s\" %s", keys[k], bad[i].needle);
      expect_load_error("tokenizer_config.json", needle, cfg);
      /* special_tokens_map.json is read the same way */
      model_dir(NULL);
      write_str("special_tokens_map.json", cfg);
      expect_load_error("special_tokens_map.json", needle, cfg);
    }
  /* the forms transformers writes: a string, an AddedToken object, null */
  model_dir("{\"bos_token\": {\"content\": \"<s>\", \"lstrip\": false, \"__type\": \"AddedToken\"}, \"eos_token\": \"</s>\", \"pad_token\": null}");
  write_str("special_tokens_map.json", "{\"unk_token\": {\"content\": \"<unk>\"}}");
  write_str("chat_template.jinja", "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}{{ unk_token }}{{ pad_token is defined }}");
  expect_format("hi", "<s>hi</s><unk>False", "valid special tokens");
}

static void config_template(void) {
  model_dir("{\"chat_template\": 5}");
  expect_load_error("tokenizer_config.json", "\"chat_template\" must be a string or a list of {\"name\", \"template\"} objects", "a number");
  model_dir("{\"chat_template\": [{\"name\": \"default\"}]}");
  expect_load_error("tokenizer_config.json", "\"chat_template\"[0] must be an object with \"name\" and \"template\" strings", "no template");
  /* a list: the one named "default" */
  model_dir("{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", \"template\": \"D{{ messages[0].content }}\"}]}");
  expect_format("x", "Dx", "named templates");
  /* a template error names the file the template came from */
  model_dir("{\"chat_template\": \"{% if %}\"}");
  expect_load_error("tokenizer_config.json:1:", "", "a syntax error");
}

/* a tokenizer file that is there but unreadable (a dangling symlink, as a Hugging Face cache with a
 * missing blob leaves it; a directory) is an error, never read as absent */
static void unreadable_files(void) {
  const char *names[3] = {"tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"};
  for (int i = 0; i < 3; i++) {
    for (int kind = 0; kind < 2; kind++) {
      model_dir(NULL);
      char p[300];
      snprintf(p, sizeof p, "%s/%s", g_dir, names[i]);
      REQUIRE(kind == 0 ? symlink("/nonexistent/blob", p) == 0 : mkdir(p, 0755) == 0, "make %s", p);
      oc_chat *c = NULL;
      oc_error e = {0};
      int rc = oc_chat_load(g_dir, &c, &e);
      CHECK(rc != 0 && c == NULL && strstr(e.msg, names[i]) && (strstr(e.msg, "symbolic link") || strstr(e.msg, "not a regular file")),
            "%s as a %s: %s", names[i], kind ? "directory" : "dangling symlink", rc ? e.msg : "loaded");
      oc_chat_free(c);
      if (kind) rmdir(p); else unlink(p);
    }
  }
}

int main(int argc, char **argv) {
  REQUIRE(argc >= 2, "usage: test_chat_load TOKENIZER_JSON");
  g_tokenizer = argv[1];
  snprintf(g_dir, sizeof g_dir, "/tmp/oc_chat_load.XXXXXX");
  REQUIRE(mkdtemp(g_dir), "mkdtemp");
  nul_in_template();
  special_tokens();
  config_template();
  unreadable_files();
  remove_file("chat_template.jinja");
  remove_file("special_tokens_map.json");
  remove_file("tokenizer_config.json");
  remove_file("tokenizer.json");
  rmdir(g_dir);
  return check_summary("chat_load");
}
