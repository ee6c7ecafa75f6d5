#include "opencon/base.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *oc_errcode_name(oc_errcode c) {
  switch (c) {
    case OC_ERR_NONE: return "none";
    case OC_ERR_INVALID: return "invalid_input";
    case OC_ERR_NOT_FOUND: return "not_found";
    case OC_ERR_IO: return "io";
    case OC_ERR_NOMEM: return "out_of_memory";
    case OC_ERR_UNSUPPORTED: return "unsupported";
    case OC_ERR_CANCELLED: return "cancelled";
    case OC_ERR_BUSY: return "busy";
  }
  return "unknown";
}

oc_errcode oc_errno_code(int e) {
  return e == ENOENT || e == ENOTDIR ? OC_ERR_NOT_FOUND : e == ENOMEM ? OC_ERR_NOMEM : OC_ERR_IO;
}

static int vfail(oc_error *err, oc_errcode code, const char *fmt, va_list ap) {
  if (!err) return -1;
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  err->code = code;
  return -1;
}

int oc_fail(oc_error *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(err, OC_ERR_INVALID, fmt, ap);
  va_end(ap);
  return -1;
}

int oc_fail_code(oc_error *err, oc_errcode code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(err, code, fmt, ap);
  va_end(ap);
  return -1;
}

int oc_wrap(oc_error *err, const char *fmt, ...) {
  if (!err) return -1;
  char prefix[512], old[sizeof err->msg];
  memcpy(old, err->msg, sizeof old);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  size_t n = strlen(prefix);
  if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
  memcpy(err->msg, prefix, n);
  err->msg[n] = ':';
  err->msg[n + 1] = ' ';
  size_t room = sizeof err->msg - n - 3, m = strlen(old);
  if (m > room) m = room;
  memcpy(err->msg + n + 2, old, m);
  err->msg[n + 2 + m] = 0;
  return -1;
}
