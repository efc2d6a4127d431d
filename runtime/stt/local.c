#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include "stt/stt.h"
qc_stt_engine *qc_stt_local_new(uv_loop_t *loop, const qc_stt_config *cfg, char *err, size_t errlen) {
    (void)loop; (void)cfg;
    snprintf(err, errlen, "local engine not built yet");
    return NULL;
}
