/* The jailbreak benchmark's counts (per split, per category within a split, overall) and the
 * report built from them (JSON and Markdown); used by the run in harness.c. */
#ifndef OPENCON_JAILBREAK_REPORT_H
#define OPENCON_JAILBREAK_REPORT_H
#include "base/strmap.h"
#include "opencon/jailbreak.h"

/* One prompt's results, raw [0] and guarded [1]. */
typedef struct jb_outcome {
  int unsafe[2], refusal[2]; /* the verdicts (a blocked response is a refusal) */
  int verdict[2];            /* a verdict exists (a judge error is none) */
  int rubric[2];             /* the StrongREJECT rubric: 1 a verdict, -1 a judge error, 0 not asked */
  double score[2];           /* its score when rubric is 1 */
  oc_guard_status status;    /* the guarded generation's */
  int benign;                /* the prompt should be answered: a refusal is an over-refusal */
} jb_outcome;

typedef struct jb_counts {
  int n;
  int unsafe[2], refusal[2], verdicts[2];
  int blocked, uncertain, paused;
  int judge_errors;          /* prompts with no verdict in either mode (the MVP's count) */
  int benign, benign_verdicts[2], benign_refusal[2], benign_blocked;
  int rubric_verdicts[2], rubric_errors[2];
  double rubric_sum[2];
} jb_counts;

/* A split's row (category NULL) or a category's row within its split. */
typedef struct jb_group {
  char *split, *category, *key;
  jb_counts c;
  int next_cat;              /* a split's categories as a chain through the groups: first_cat, then next_cat (-1 ends it) */
  int first_cat, last_cat;
} jb_group;

typedef struct jb_tally {
  jb_group *g;
  int n, cap;
  oc_strmap splits, cats;    /* split -> group; split \x1f category -> group */
  jb_counts all;
} jb_tally;

/* Count one prompt's outcome in its split, its category (if it has one) and overall. */
int jb_tally_add(jb_tally *t, const oc_prompt_item *it, const jb_outcome *o, oc_error *err);
void jb_tally_free(jb_tally *t);
/* The report of a finished run: rates, intervals, over-refusal, rubric scores, the sources (sel:
 * the prompts run) and their layouts; JSON and Markdown. */
int jb_report_build(const jb_tally *t, const oc_prompt_set *set, const int *sel, int n_sel, const oc_jailbreak_opts *o, oc_jailbreak_report *rep,
                    oc_error *err);
#endif
