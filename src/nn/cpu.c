/* CPU feature detection (cpuid) and the kernel level, read once per process. */
#include "nn/cpu.h"

#include "nn/gemm.h"
#include "opencon/base.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static oc_cpu_info cpu; /* written once under cpu_once, read-only afterwards */

static void read_cpu(void) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  unsigned a, b, c, d;
  cpu.f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
  cpu.avx2 = __builtin_cpu_supports("avx2");
  cpu.fma = __builtin_cpu_supports("fma");
  cpu.avx512f = __builtin_cpu_supports("avx512f");
  cpu.avx512bw = __builtin_cpu_supports("avx512bw");
  cpu.avx512vl = __builtin_cpu_supports("avx512vl");
  cpu.avx512_vnni = __builtin_cpu_supports("avx512vnni");
  cpu.avx2 = !!cpu.avx2; cpu.fma = !!cpu.fma; cpu.avx512f = !!cpu.avx512f; cpu.avx512bw = !!cpu.avx512bw;
  cpu.avx512vl = !!cpu.avx512vl; cpu.avx512_vnni = !!cpu.avx512_vnni;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
    cpu.avx512_bf16 = (a >> 5) & 1;
    cpu.avx_vnni = (a >> 4) & 1;
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    cpu.amx_bf16 = (d >> 22) & 1;
    cpu.amx_int8 = (d >> 25) & 1;
  }
  if (cpu.avx2 && cpu.fma && cpu.f16c) {
    cpu.detected = OC_CPU_AVX2;
    if (cpu.avx512f && cpu.avx512bw && cpu.avx512vl) cpu.detected = OC_CPU_AVX512;
  }
#endif
  cpu.level = cpu.detected;
  const char *e = getenv("OPENCON_CPU");
  if (e) {
    strncpy(cpu.env, e, sizeof cpu.env - 1);
    oc_cpu_level want = cpu.level;
    if (strcmp(e, "scalar") == 0) want = OC_CPU_SCALAR;
    else if (strcmp(e, "avx2") == 0) want = OC_CPU_AVX2;
    else if (strcmp(e, "avx512") == 0) want = OC_CPU_AVX512;
    else cpu.env_unknown = 1;
    if (want < cpu.level) { cpu.level = want; cpu.forced = 1; }
  }
}

const oc_cpu_info *oc_cpu(void) {
  pthread_once(&cpu_once, read_cpu);
  return &cpu;
}

int oc_have_avx2(void) { return oc_cpu()->level >= OC_CPU_AVX2; }
int oc_have_avx512(void) { return oc_cpu()->level >= OC_CPU_AVX512; }
int oc_have_avx512_vnni(void) { return oc_cpu()->level >= OC_CPU_AVX512 && cpu.avx512_vnni; }

const char *oc_cpu_level_name(oc_cpu_level l) {
  return l == OC_CPU_AVX512 ? "avx512" : l == OC_CPU_AVX2 ? "avx2" : "scalar";
}

/* The CPU's name from cpuid (brand string), "" where there is none. */
static void cpu_brand(char *out, size_t n) {
  out[0] = 0;
#if defined(__x86_64__)
  unsigned r[12];
  if (n < 49 || (unsigned)__get_cpuid_max(0x80000000u, NULL) < 0x80000004u) return; /* (an int in clang's cpuid.h) */
  for (unsigned i = 0; i < 3; i++) __get_cpuid(0x80000002u + i, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3]);
  memcpy(out, r, 48);
  out[48] = 0;
  char *s = out;
  while (*s == ' ') s++;
  memmove(out, s, strlen(s) + 1);
  for (size_t k = strlen(out); k > 0 && out[k - 1] == ' '; k--) out[k - 1] = 0;
#endif
}

void oc_system_info(char *buf, size_t n) {
  const oc_cpu_info *c = oc_cpu();
  char brand[64];
  cpu_brand(brand, sizeof brand);
  const char *better = oc_blas_better_core();
  const char *q8 = c->level == OC_CPU_AVX512 && c->avx512_vnni ? "avx512-vnni (vpdpbusd)" : c->level >= OC_CPU_AVX2 ? "avx2 (vpmaddubsw)" : "scalar";
  const char *bf16 = c->level == OC_CPU_AVX512 ? "avx512 (16-wide widen + FMA, tiles of 4 rows x 4 inputs)" : c->level == OC_CPU_AVX2 ? "avx2 (8-wide widen + FMA, tiles of 4 rows x 2 inputs)" : "scalar";
  snprintf(buf, n,
           "cpu: %s\n"
           "features: avx2=%d fma=%d f16c=%d avx512f=%d avx512bw=%d avx512vl=%d avx512_vnni=%d avx512_bf16=%d avx_vnni=%d amx_int8=%d amx_bf16=%d\n"
           "kernels: %s (the CPU supports %s%s%s%s)\n"
           "  decode BF16: %s\n"
           "  decode Q8: %s\n"
           "  prefill: BF16/F16/F32 through f32 sgemm (OpenBLAS) on converted tiles; Q8 the decode kernel (all rows)\n",
           brand[0] ? brand : "unknown", c->avx2, c->fma, c->f16c, c->avx512f, c->avx512bw, c->avx512vl, c->avx512_vnni, c->avx512_bf16,
           c->avx_vnni, c->amx_int8, c->amx_bf16, oc_cpu_level_name(c->level), oc_cpu_level_name(c->detected),
           c->forced ? "; lowered by OPENCON_CPU=" : c->env_unknown ? "; OPENCON_CPU ignored, not scalar, avx2 or avx512: " : c->env[0] ? "; OPENCON_CPU=" : "",
           c->env, "", bf16, q8);
  const size_t len = strlen(buf);
  const char *env = getenv("OPENBLAS_CORETYPE");
  if (len < n)
    snprintf(buf + len, n - len, "blas: OpenBLAS kernels %s%s%s%s%s%s\n", oc_blas_core(), env ? " (OPENBLAS_CORETYPE=" : "", env ? env : "",
             env ? ")" : "", better ? ": generic ones on a CPU with AVX2; OPENBLAS_CORETYPE=" : "", better ? better : "");
}
