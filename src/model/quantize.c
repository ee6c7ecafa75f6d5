/* `opencon quantize`: a checkpoint rewritten with its streamed matrices in q8 (include/opencon/model.h). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nn/q8.h"
#include "opencon/json.h"
#include "opencon/model.h"

/* config.json with "quantization_config" naming the format (transformers refuses an unknown
 * quant_method instead of loading int8 values as if they were weights). */
static int write_config(const char *src_dir, const char *dst, oc_error *err) {
  char *path = oc_path_join(src_dir, "config.json"), *text = NULL;
  size_t len = 0;
  int rc = oc_read_file(path, &text, &len, err);
  cJSON *root = rc ? NULL : cJSON_ParseWithLength(text, len);
  if (!rc && !cJSON_IsObject(root)) rc = oc_fail(err, "%s: not a JSON object", path);
  if (!rc) {
    cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization_config");
    cJSON *q = cJSON_AddObjectToObject(root, "quantization_config");
    cJSON_AddStringToObject(q, "quant_method", "opencon_q8");
    cJSON_AddNumberToObject(q, "block_size", OC_Q8_BLOCK);
    cJSON_AddStringToObject(q, "scale_dtype", "float16");
    cJSON_AddStringToObject(q, "scale_suffix", "_scale");
    rc = oc_json_save(root, dst, err);
  }
  cJSON_Delete(root);
  free(text);
  free(path);
  return rc;
}

/* A quantized model is written whole into a new or empty directory: replacing an existing one would
 * keep the entries the new version does not write (oc_atomic_dir moves them over), such as another
 * model's tokenizer or the shards of the source itself when out_dir is src_dir. */
static int check_out_empty(const char *out_dir, oc_error *err) {
  DIR *d = opendir(out_dir);
  if (!d) return 0; /* not there yet (or not a directory: oc_artifact_dir_check said so) */
  struct dirent *e;
  int used = 0;
  while (!used && (e = readdir(d))) used = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
  closedir(d);
  if (used) return oc_fail(err, "%s: exists and is not empty; quantize writes a model into a new or empty directory", out_dir);
  return 0;
}

/* The source directory's other regular files (tokenizer, template, generation config, ...); a
 * dangling link (a Hugging Face cache missing a blob) is an error, subdirectories are not copied. */
static int copy_other_files(const char *src_dir, const oc_atomic_dir *ad, oc_error *err) {
  DIR *d = opendir(src_dir);
  if (!d) return oc_fail_code(err, OC_ERR_IO, "%s: cannot list the directory", src_dir);
  int rc = 0;
  struct dirent *e;
  while (!rc && (e = readdir(d))) {
    const char *n = e->d_name;
    const size_t len = strlen(n);
    if (n[0] == '.' || strcmp(n, "config.json") == 0 || strcmp(n, "model.safetensors.index.json") == 0 ||
        (len > 12 && strcmp(n + len - 12, ".safetensors") == 0))
      continue;
    char *from = oc_path_join(src_dir, n), *data = NULL;
    struct stat st;
    size_t size = 0;
    if (stat(from, &st) != 0) rc = oc_fail_code(err, oc_errno_code(errno), "%s: cannot read (a dangling link?): %s", from, strerror(errno));
    else if (S_ISREG(st.st_mode)) {
      char *to = oc_atomic_dir_file(ad, n);
      rc = oc_read_file(from, &data, &size, err) || oc_write_file_atomic(to, data, size, err) ? -1 : 0;
      free(to);
    }
    free(data);
    free(from);
  }
  closedir(d);
  return rc;
}

/* The lazy writer's source for an interleaved matrix: its values back in the file's row order, a
 * row at a time (the writer asks for ranges that may start and end inside rows). */
static int fill_natural(void *ctx, const char *name, void *dst, size_t offset, size_t nbytes, oc_error *err) {
  const oc_tensor *h = ctx;
  const size_t cols = (size_t)h->shape[1];
  int8_t *row = malloc(cols);
  if (!row) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory writing \"%s\"", name);
  oc_q8_deinterleave_range((const int8_t *)h->data, (int64_t)cols, offset, nbytes, row, dst);
  free(row);
  return 0;
}

int oc_model_quantize(const char *src_dir, const char *out_dir, size_t *bytes_in, size_t *bytes_out, oc_error *err) {
  oc_model *m = NULL;
  oc_model_opts o = {OC_WEIGHTS_Q8};
  if (oc_artifact_dir_check(out_dir, err) || check_out_empty(out_dir, err) || oc_model_load_ex(src_dir, &o, &m, err)) return -1;
  const oc_weights *w = oc_model_weights(m);
  oc_st_writer *wr = oc_st_writer_new();
  int rc = wr ? 0 : oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  size_t in = 0, out = 0;
  for (int i = 0; !rc && i < oc_weights_count(w); i++) {
    const oc_tensor *t = oc_weights_at(w, i), *h = oc_model_tensor(m, t->name);
    in += t->nbytes;
    if (h->dtype != OC_DT_Q8 || t->dtype == OC_DT_I8) { /* as it was (a q8 checkpoint's values and scales included) */
      rc = oc_st_writer_add(wr, t->name, t->dtype, t->ndim, t->shape, t->data, err);
      out += t->nbytes;
      continue;
    }
    char sname[600];
    snprintf(sname, sizeof sname, "%s_scale", t->name);
    const int64_t sshape[2] = {t->shape[0], oc_q8_nblocks(t->shape[1])};
    rc = (h->q8_il ? oc_st_writer_add_lazy(wr, t->name, OC_DT_I8, 2, t->shape, fill_natural, (void *)h, err)
                   : oc_st_writer_add(wr, t->name, OC_DT_I8, 2, t->shape, h->data, err)) ||
         oc_st_writer_add(wr, sname, OC_DT_F16, 2, sshape, h->scales, err);
    out += h->nbytes;
  }
  if (!rc) rc = oc_st_writer_set_metadata(wr, "format", "pt", err) || oc_st_writer_set_metadata(wr, "opencon_quant", "q8_block32_f16", err);
  oc_atomic_dir ad;
  int opened = 0;
  if (!rc) rc = oc_atomic_dir_open(&ad, out_dir, err), opened = !rc;
  if (!rc) {
    char *st = oc_atomic_dir_file(&ad, "model.safetensors"), *cfg = oc_atomic_dir_file(&ad, "config.json");
    rc = oc_st_writer_write(wr, st, err) || write_config(src_dir, cfg, err) || copy_other_files(src_dir, &ad, err) ? -1 : 0;
    free(st);
    free(cfg);
  }
  if (opened) rc = rc ? (oc_atomic_dir_abort(&ad), -1) : oc_atomic_dir_commit(&ad, err);
  oc_st_writer_free(wr);
  oc_model_free(m);
  if (rc) return oc_wrap(err, "quantizing %s into %s", src_dir, out_dir);
  if (bytes_in) *bytes_in = in;
  if (bytes_out) *bytes_out = out;
  return 0;
}
