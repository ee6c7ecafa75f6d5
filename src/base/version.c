/* The version the library was built as (include/opencon/version.h.in). */
#include "opencon/version.h"

const char *oc_version(void) { return OPENCON_VERSION_STRING; }
