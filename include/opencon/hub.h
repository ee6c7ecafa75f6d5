/* opencon — resolving --model_id: local directory, Hugging Face cache, or Hub download. */
#ifndef OPENCON_HUB_H
#define OPENCON_HUB_H
#include "opencon/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct oc_hub_options {
  const char *endpoint;   /* NULL: $HF_ENDPOINT or https://huggingface.co */
  const char *token;      /* NULL: $HF_TOKEN */
  const char *cache_dir;  /* NULL: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub */
  const char *revision;   /* NULL: "main" */
  int offline;            /* 1: never download ($HF_HUB_OFFLINE=1 too) */
  int quiet;              /* no progress output */
} oc_hub_options;

/* The hub cache directory the options resolve to (malloc'd). */
char *oc_hub_cache_dir(const oc_hub_options *o);
/* Find `org/name` in the cache; returns the snapshot directory (malloc'd) or NULL. */
char *oc_hub_find_cached(const char *repo_id, const oc_hub_options *o);
/* Download a repository's model files into the cache layout (resumable, atomic). */
int oc_hub_download(const char *repo_id, const oc_hub_options *o, char **snapshot_dir, oc_error *err);
/* --model_id: an existing local directory, else a cached Hub id, else download it. */
int oc_resolve_model(const char *model_id, const oc_hub_options *o, char **dir, oc_error *err);

#ifdef __cplusplus
}
#endif
#endif
