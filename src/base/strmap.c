/* Seeded string hash and the string -> int map of strmap.h. */
#include "base/strmap.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "opencon/base.h"

uint64_t oc_hash_seed(void) {
  uint64_t seed;
  if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t)sizeof seed) return seed;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return oc_mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&ts);
}

uint64_t oc_hash_str(const char *s, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ull ^ seed; /* FNV-1a from a secret start, then a full mix */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return oc_mix64(h);
}

void oc_strmap_init(oc_strmap *m) { memset(m, 0, sizeof *m); }

void oc_strmap_free(oc_strmap *m) {
  free(m->slot);
  memset(m, 0, sizeof *m);
}

/* the slot of key (hash h): its own, or the empty one where it would go */
static oc_strmap_slot *probe(const oc_strmap *m, const char *key, uint64_t h) {
  size_t i = (size_t)h & (m->cap - 1);
  while (m->slot[i].key && !(m->slot[i].hash == h && strcmp(m->slot[i].key, key) == 0)) i = (i + 1) & (m->cap - 1);
  return &m->slot[i];
}

int oc_strmap_find(const oc_strmap *m, const char *key) {
  if (!m->cap) return -1;
  const oc_strmap_slot *s = probe(m, key, oc_hash_str(key, m->seed));
  return s->key ? s->value : -1;
}

int oc_strmap_insert(oc_strmap *m, const char *key, int value, int *existing) {
  if (!m->cap) m->seed = oc_hash_seed();
  if (2 * (m->n + 1) > m->cap) { /* grow: rehash by the stored hashes, never reading the keys */
    size_t nc = m->cap ? 2 * m->cap : 16;
    oc_strmap_slot *ns = calloc(nc, sizeof *ns);
    if (!ns) return -1;
    for (size_t i = 0; i < m->cap; i++) {
      if (!m->slot[i].key) continue;
      size_t k = (size_t)m->slot[i].hash & (nc - 1);
      while (ns[k].key) k = (k + 1) & (nc - 1);
      ns[k] = m->slot[i];
    }
    free(m->slot);
    m->slot = ns;
    m->cap = nc;
  }
  uint64_t h = oc_hash_str(key, m->seed);
  oc_strmap_slot *s = probe(m, key, h);
  if (s->key) {
    if (existing) *existing = s->value;
    return 1;
  }
  *s = (oc_strmap_slot){key, h, value};
  m->n++;
  return 0;
}
