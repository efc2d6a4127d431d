/* Stands in for runtime/stt/elevenlabs.c until that engine is built: CMakeLists.txt compiles
 * this file only when elevenlabs.c does not exist. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>

#include "stt/stt.h"

qc_stt_engine *qc_stt_elevenlabs_new(uv_loop_t *loop, const qc_stt_config *cfg, char *err, size_t errlen) {
    (void)loop;
    (void)cfg;
    snprintf(err, errlen, "elevenlabs engine not built");
    return NULL;
}
