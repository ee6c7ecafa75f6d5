/* opencon — safetensors reader (mmap, validated header) and atomic writer. */
#ifndef OPENCON_SAFETENSORS_H
#define OPENCON_SAFETENSORS_H
#include "opencon/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum oc_dtype {
  OC_DT_F32, OC_DT_F16, OC_DT_BF16, OC_DT_F64, OC_DT_I64, OC_DT_I32, OC_DT_I16, OC_DT_I8,
  OC_DT_U8, OC_DT_U16, OC_DT_U32, OC_DT_U64, OC_DT_BOOL, OC_DT_F8_E4M3, OC_DT_F8_E5M2,
  OC_DT_COUNT, /* the safetensors dtypes are the ones above */
  OC_DT_Q8     /* in memory only: int8 values with an f16 scale per block of 32 (data, scales; docs/formats.md) */
} oc_dtype;

const char *oc_dtype_name(oc_dtype dt);
size_t oc_dtype_size(oc_dtype dt);

#define OC_MAX_DIMS 8
typedef struct oc_tensor {
  const char *name;
  const char *file;      /* path of the file that holds it */
  oc_dtype dtype;
  int ndim;
  int64_t shape[OC_MAX_DIMS];
  int64_t numel;
  const void *data;      /* points into the mapping */
  size_t nbytes;
  const uint16_t *scales;/* OC_DT_Q8: f16 scales [rows][ceil(cols / 32)]; NULL otherwise */
  int q8_il;             /* OC_DT_Q8: rows interleaved in memory for the kernels (src/nn/q8.h;
                            oc_tensor_row reads them in order); 0: as in a file */
} oc_tensor;

/* One safetensors file, memory-mapped read-only. */
typedef struct oc_st_file oc_st_file;

/* Parse and validate a header held in memory: `buf` is the whole file (len bytes).
 * Used by oc_st_open and by the fuzz harness. `path` only names the file in errors. */
int oc_st_parse(const void *buf, size_t len, const char *path, oc_st_file **out, oc_error *err);
int oc_st_open(const char *path, oc_st_file **out, oc_error *err);
void oc_st_close(oc_st_file *f);
int oc_st_count(const oc_st_file *f);
const oc_tensor *oc_st_at(const oc_st_file *f, int i);
const oc_tensor *oc_st_get(const oc_st_file *f, const char *name);
/* __metadata__ value or NULL */
const char *oc_st_metadata(const oc_st_file *f, const char *key);

/* The weights of a model directory: model.safetensors, or the shards listed in
 * model.safetensors.index.json. Names are looked up across all shards. */
typedef struct oc_weights oc_weights;
int oc_weights_open(const char *dir, oc_weights **out, oc_error *err);
void oc_weights_close(oc_weights *w);
const oc_tensor *oc_weights_get(const oc_weights *w, const char *name);
int oc_weights_count(const oc_weights *w);
const oc_tensor *oc_weights_at(const oc_weights *w, int i);
/* Bytes of all mapped tensor data. */
size_t oc_weights_bytes(const oc_weights *w);

/* Writer: add tensors (data is copied by reference until commit), then write atomically. */
typedef struct oc_st_writer oc_st_writer;
oc_st_writer *oc_st_writer_new(void);
int oc_st_writer_add(oc_st_writer *w, const char *name, oc_dtype dt, int ndim, const int64_t *shape,
                     const void *data, oc_error *err);
/* Tensor whose bytes are produced by a callback at write time (large outputs). */
/* Called in chunks: write `nbytes` bytes of the tensor starting at byte `offset` into dst. */
typedef int (*oc_st_fill_fn)(void *ctx, const char *name, void *dst, size_t offset, size_t nbytes, oc_error *err);
int oc_st_writer_add_lazy(oc_st_writer *w, const char *name, oc_dtype dt, int ndim, const int64_t *shape,
                          oc_st_fill_fn fill, void *ctx, oc_error *err);
int oc_st_writer_set_metadata(oc_st_writer *w, const char *key, const char *value, oc_error *err);
int oc_st_writer_write(oc_st_writer *w, const char *path, oc_error *err);
void oc_st_writer_free(oc_st_writer *w);

/* Row `row` of a 2-D F32/F16/BF16/Q8 tensor into f32, elements [col0, col0+n) (a Q8 tensor's
 * values dequantized, in order whatever its layout). */
void oc_tensor_row(const oc_tensor *t, int64_t row, int64_t col0, int64_t n, float *dst);

/* bf16/f16 helpers */
float oc_bf16_to_f32(uint16_t v);
uint16_t oc_f32_to_bf16(float f); /* round to nearest even */
float oc_f16_to_f32(uint16_t v);
uint16_t oc_f32_to_f16(float f); /* round to nearest even; beyond the range: infinity */
/* Convert n elements of a tensor's dtype (F32/F16/BF16) to f32. */
int oc_to_f32(oc_dtype dt, const void *src, float *dst, size_t n);

#ifdef __cplusplus
}
#endif
#endif
