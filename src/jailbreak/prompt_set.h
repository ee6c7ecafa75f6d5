/* Prompt-set internals shared by the loader (prompts.c: sets, files and directories, CSV, the
 * selection) and the layout readers (layouts.c: which layout a file is, and reading it). */
#ifndef OPENCON_JAILBREAK_PROMPT_SET_H
#define OPENCON_JAILBREAK_PROMPT_SET_H
#include "opencon/jailbreak.h"

/* A file being read into a set, as one source. */
typedef struct prompt_file {
  oc_prompt_set *s;
  const char *path;      /* as named (messages) */
  const char *text;      /* its bytes, NUL-terminated; len of them */
  size_t len;
  const char *stem;      /* the file name without its extension */
  const char *def_split; /* the split the file name gives (harmful-behaviors -> harmful, ...; else the stem) */
  int in_dir;            /* found by walking a directory: plain text is taken only from .txt files */
  int source;            /* its index in s->sources */
} prompt_file;

/* Append a prompt to f's source. category, goal may be NULL; the item is benign when its split is
 * "benign" or when benign is set. */
int oc_prompt_add(prompt_file *f, const char *prompt, const char *split, const char *id, const char *category, const char *goal, int benign,
                  oc_error *err);
/* Recognise f's layout from its text and append its prompts (the source's layout, dataset name,
 * skipped count and note are set here). */
int oc_prompt_file_read(prompt_file *f, oc_error *err);
/* label-like values as split names: safe / benign / unharmful / 0 -> benign, unsafe / harmful / 1 -> harmful */
const char *oc_label_split(const char *v);
#endif
