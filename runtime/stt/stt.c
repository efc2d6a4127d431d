/* Engine choice by name and dispatch through each engine's ops table. Engines know nothing
 * of one another; this file knows only their constructors. */
#define _POSIX_C_SOURCE 200809L
#include "stt/stt.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

qc_stt_engine *qc_stt_engine_new(uv_loop_t *loop, const qc_stt_config *cfg, char *err, size_t errlen) {
    const char *name = cfg->engine && *cfg->engine ? cfg->engine : "local";
    if (strcmp(name, "local") == 0) return qc_stt_local_new(loop, cfg, err, errlen);
    if (strcmp(name, "elevenlabs") == 0) return qc_stt_elevenlabs_new(loop, cfg, err, errlen);
    if (strcmp(name, "null") == 0) return qc_stt_null_new(loop, cfg, err, errlen);
    snprintf(err, errlen, "unknown STT engine \"%s\" (local, elevenlabs or null)", name);
    return NULL;
}

qc_stt_stream *qc_stt_stream_open(qc_stt_engine *e, const qc_stt_callbacks *cb, void *ud, char *err,
                                  size_t errlen) {
    return e->ops->open(e, cb, ud, err, errlen);
}

size_t qc_stt_stream_write(qc_stt_stream *s, const int16_t *samples, size_t n) {
    return s->ops->write(s, samples, n);
}

void qc_stt_stream_finish(qc_stt_stream *s) { s->ops->finish(s); }

void qc_stt_stream_abort(qc_stt_stream *s) { s->ops->abort(s); }

size_t qc_stt_stream_room(const qc_stt_stream *s) { return s->ops->room ? s->ops->room(s) : SIZE_MAX; }

void qc_stt_engine_stats(const qc_stt_engine *e, qc_stt_stats *out) {
    memset(out, 0, sizeof *out);
    e->ops->stats(e, out);
}

void qc_stt_engine_free(qc_stt_engine *e) {
    if (e) e->ops->free(e);
}
