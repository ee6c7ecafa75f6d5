/* opencon — Hugging Face tokenizer.json engine. */
#ifndef OPENCON_TOKENIZER_H
#define OPENCON_TOKENIZER_H
#include "opencon/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct oc_tokenizer oc_tokenizer;

/* Growth limit of the pipeline: a normalizer, pre-tokenizer or decoder step may make at most
 * OC_TOKENIZER_MAX_GROWTH times the bytes of the text given to encode (of the token strings given
 * to decode) + OC_TOKENIZER_GROWTH_SLACK bytes; a step that would make more is an error naming it
 * (OC_ERR_INVALID), found before it allocates more. Real pipelines stay far below: Unicode
 * normalization makes at most 11 times a character's bytes (NFKC of U+FDFA), a Metaspace space 3,
 * byte-level characters 2. A Replace step of tokenizer.json (a -> 10,000 a's, three times) once
 * made 4 bytes of text into gigabytes. */
#define OC_TOKENIZER_MAX_GROWTH 32
#define OC_TOKENIZER_GROWTH_SLACK 4096

typedef struct oc_encoding {
  int32_t *ids;
  int32_t *type_ids;
  char **tokens;   /* token strings (vocabulary entries, or the matched text of added tokens) */
  char *tok_blob;  /* owns the strings tokens point to */
  int n;
} oc_encoding;

/* Parse tokenizer.json text; errors name `path` and the JSON path of the problem. */
int oc_tokenizer_load_json(const char *json, size_t len, const char *path, oc_tokenizer **out, oc_error *err);
int oc_tokenizer_load_file(const char *path, oc_tokenizer **out, oc_error *err);
void oc_tokenizer_free(oc_tokenizer *t);

/* Encode UTF-8 text (invalid UTF-8 is an error). text_pair may be NULL. max_length > 0
 * truncates (longest_first, right, counting the special tokens the post-processor adds). */
int oc_tokenizer_encode(const oc_tokenizer *t, const char *text, const char *text_pair, int add_special_tokens,
                        int max_length, oc_encoding *out, oc_error *err);
/* The same with explicit lengths (text may contain NUL characters). */
int oc_tokenizer_encode_n(const oc_tokenizer *t, const char *text, size_t len, const char *text_pair, size_t pair_len,
                          int add_special_tokens, int max_length, oc_encoding *out, oc_error *err);
/* The same without the token strings (out->tokens is NULL): what a pipeline that only needs ids calls. */
int oc_tokenizer_encode_ids(const oc_tokenizer *t, const char *text, size_t len, const char *text_pair, size_t pair_len,
                            int add_special_tokens, int max_length, oc_encoding *out, oc_error *err);
void oc_encoding_free(oc_encoding *e);
/* For tests: 0 runs only the general pipeline (no fused byte-level path, Oniguruma for every
 * split), which must give the same result as the fast paths (1, the default). */
void oc_tokenizer_set_fast_paths(oc_tokenizer *t, int on);

/* Decode ids to text (malloc'd, NUL-terminated; len, if given, counts NUL characters inside),
 * as tokenizers' Tokenizer.decode. */
int oc_tokenizer_decode(const oc_tokenizer *t, const int32_t *ids, int n, int skip_special_tokens, char **text,
                        size_t *len, oc_error *err);

const char *oc_tokenizer_id_to_token(const oc_tokenizer *t, int32_t id); /* NULL if unknown */
int32_t oc_tokenizer_token_to_id(const oc_tokenizer *t, const char *token); /* -1 if unknown */
int oc_tokenizer_vocab_size(const oc_tokenizer *t);                           /* incl. added tokens */
int oc_tokenizer_is_special(const oc_tokenizer *t, int32_t id);

#ifdef __cplusplus
}
#endif
#endif
