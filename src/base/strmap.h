/* A map from NUL-terminated strings to ints for keys that come from files (split names, JSON
 * object keys): open addressing over a seeded hash, so a file cannot choose keys that all collide
 * and make lookups quadratic. Keys are borrowed: they must outlive the map. */
#ifndef OPENCON_STRMAP_H
#define OPENCON_STRMAP_H
#include <stddef.h>
#include <stdint.h>

/* A random seed (getrandom, else the clock) and the seeded hash of a string. */
uint64_t oc_hash_seed(void);
uint64_t oc_hash_str(const char *s, uint64_t seed);

typedef struct { const char *key; uint64_t hash; int value; } oc_strmap_slot;
typedef struct oc_strmap {
  oc_strmap_slot *slot;
  size_t n, cap;  /* cap: 0 or a power of two, at least twice n */
  uint64_t seed;  /* chosen at the first insert */
} oc_strmap;

void oc_strmap_init(oc_strmap *m); /* empty, allocates nothing */
void oc_strmap_free(oc_strmap *m);
/* the value of key, or -1 when absent */
int oc_strmap_find(const oc_strmap *m, const char *key);
/* 0: inserted; 1: key was present (*existing, if not NULL, gets its value; nothing changes);
 * -1: out of memory */
int oc_strmap_insert(oc_strmap *m, const char *key, int value, int *existing);
#endif
