/* The CPU's vector features, read once per process, and the kernel level chosen from them. */
#ifndef OC_CPU_H
#define OC_CPU_H

/* Kernel levels, each including the ones below it. OPENCON_CPU=scalar|avx2|avx512 (read once per
 * process) forces a lower level than the CPU has, so tests can run every variant the CPU offers
 * against the scalar reference; a higher one than the CPU has is ignored. */
typedef enum oc_cpu_level { OC_CPU_SCALAR = 0, OC_CPU_AVX2 = 1, OC_CPU_AVX512 = 2 } oc_cpu_level;

typedef struct oc_cpu_info {
  oc_cpu_level level;   /* the level the kernels take */
  oc_cpu_level detected;/* the best the CPU supports */
  int avx2, fma, f16c;  /* the AVX2 level needs all three */
  int avx512f, avx512bw, avx512vl, avx512_vnni, avx512_bf16, avx_vnni, amx_int8, amx_bf16;
  int forced;           /* OPENCON_CPU lowered the level */
  char env[16];         /* OPENCON_CPU as given, cut to 15 bytes ("" when unset) */
  int env_unknown;      /* it was not scalar, avx2 or avx512: ignored */
} oc_cpu_info;

const oc_cpu_info *oc_cpu(void);
/* the level's kernels are in use */
int oc_have_avx2(void);
int oc_have_avx512(void); /* AVX-512 F, BW, VL */
int oc_have_avx512_vnni(void); /* the AVX-512 level with VNNI: the int8 kernel's 512-bit form */
const char *oc_cpu_level_name(oc_cpu_level l);

#endif
