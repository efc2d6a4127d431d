/* The null engine: a sink that counts the samples it is given and never reports a word. It
 * is what benchmarks of the ingest path measure against, so a write costs a few additions.
 * A finished stream reports QC_STT_CLOSED from the loop (a zero timer), never from inside
 * qc_stt_stream_finish, as the other engines do. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "stt/stt.h"

typedef struct {
    qc_stt_engine base;
    uv_loop_t *loop;
    size_t streams;
    uint64_t samples_in;
} null_engine;

typedef struct {
    qc_stt_stream base;
    null_engine *e;
    qc_stt_callbacks cb;
    void *ud;
    uv_timer_t closer;
} null_stream;

static void freed(uv_handle_t *h) { free(h->data); }

static qc_stt_stream *n_open(qc_stt_engine *eng, const qc_stt_callbacks *cb, void *ud, char *err, size_t errlen);

static size_t n_write(qc_stt_stream *s, const int16_t *samples, size_t n) {
    (void)samples;
    ((null_stream *)s)->e->samples_in += n;
    return n;
}

static void closed(uv_timer_t *tm) {
    null_stream *s = tm->data;
    s->e->streams--;
    if (s->cb.on_state) s->cb.on_state(s->ud, QC_STT_CLOSED, NULL);
    uv_close((uv_handle_t *)&s->closer, freed);
}

static void n_finish(qc_stt_stream *s) {
    null_stream *ns = (null_stream *)s;
    uv_timer_start(&ns->closer, closed, 0, 0);
}

static void n_abort(qc_stt_stream *s) {
    null_stream *ns = (null_stream *)s;
    ns->e->streams--;
    uv_timer_stop(&ns->closer);
    uv_close((uv_handle_t *)&ns->closer, freed);
}

static void n_stats(const qc_stt_engine *eng, qc_stt_stats *out) {
    const null_engine *e = (const null_engine *)eng;
    out->name = "null";
    out->state = "ready";
    out->streams = e->streams;
    out->samples_in = e->samples_in;
}

static void n_free(qc_stt_engine *eng) { free(eng); }

static const qc_stt_ops null_ops = {
    .name = "null",
    .open = n_open,
    .write = n_write,
    .finish = n_finish,
    .abort = n_abort,
    .stats = n_stats,
    .free = n_free,
    .room = NULL,
};

static qc_stt_stream *n_open(qc_stt_engine *eng, const qc_stt_callbacks *cb, void *ud, char *err, size_t errlen) {
    null_engine *e = (null_engine *)eng;
    null_stream *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base.ops = &null_ops;
    s->e = e;
    s->cb = *cb;
    s->ud = ud;
    uv_timer_init(e->loop, &s->closer);
    s->closer.data = s;
    e->streams++;
    return &s->base;
}

qc_stt_engine *qc_stt_null_new(uv_loop_t *loop, const qc_stt_config *cfg, char *err, size_t errlen) {
    (void)cfg;
    null_engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->base.ops = &null_ops;
    e->loop = loop;
    return &e->base;
}
