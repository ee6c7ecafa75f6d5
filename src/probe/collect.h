/* Internal pieces shared by the final-token collection (collect.c), the token-level collection
 * (token_level.c) and evaluate-probe (evaluate.c). */
#ifndef OPENCON_PROBE_COLLECT_H
#define OPENCON_PROBE_COLLECT_H
#include <cjson/cJSON.h>

#include "opencon/probe.h"

/* The settings a collection journal must match to be resumed (model, weights, layers, template,
 * max_length, packing, the data's fingerprint) as a JSON object the caller may extend; NULL: out of memory. */
cJSON *oc_collect_header_json(const oc_model *m, const oc_dataset *ds, const oc_collect_opts *o);
/* The exchange as the guard sees it: the prompt formatted for generation, then the response's own
 * tokens (no special tokens), cut to max_len in all; *n_prompt of the *n ids are the prompt's.
 * *ids is malloc'd. An error when the prompt alone fills max_len. */
int oc_probe_exchange_ids(const oc_chat *chat, const oc_example *ex, int use_template, int max_len, int32_t **ids, int *n, int *n_prompt,
                          oc_error *err);
/* The dataset (src's sample; with src->binary, labels 0/1 and at least 4 examples), the model and
 * its chat (src's template options) of a collection; counts (may be NULL) gets the dataset's
 * counts. On error nothing is left to free. */
int oc_collect_source_open(const oc_activation_source *src, oc_dataset *ds, oc_model **m, oc_chat **c, oc_collection_counts *counts,
                           oc_progress *prog, oc_error *err);
/* A token-level journal at path read back as oc_collect_tokens reads it once collection is done
 * (fuzzing): it must begin with this settings header and hold an intact record of each of ds's
 * exchanges in order (rows H wide over nl layers, at most row_cap of them, responses of at most max_len tokens);
 * out gets their rows in memory, or (stream) keeps the journal open to read them while fitting.
 * Anything else is an error naming the journal. */
int oc_token_journal_load(const char *path, const char *header, const oc_dataset *ds, int H, int nl, int row_cap, int max_len, int stream,
                          oc_token_activations *out, oc_error *err);
#endif
