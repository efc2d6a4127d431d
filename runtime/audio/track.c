/* qc_track: bytes -> whole frames -> qc_resampler -> the STT stream. Bytes are copied into
 * one staging block of whole frames; what does not complete a frame stays at its start
 * until the next piece arrives. The staging block is int16-aligned, which the bytes of a
 * WebSocket message need not be. */
#define _POSIX_C_SOURCE 200809L
#include "audio/track.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/resampler.h"

/* Input frames per staging block: 10 ms at 48 kHz, one Egress message. */
#define STAGE_FRAMES 480

struct qc_track {
    qc_stt_stream *stream; /* NULL once the engine closed it */
    qc_resampler *rs;
    qc_stt_callbacks cb;
    void *ud;
    size_t frame_bytes, stage_cap, fill;
    int finishing;
    qc_track_stats st;
    int16_t *stage; /* stage_cap bytes */
    int16_t *out;
    size_t out_cap;
};

static void on_result(void *ud, const qc_stt_result *r) {
    qc_track *t = ud;
    if (t->cb.on_result) t->cb.on_result(t->ud, r);
}

static void on_state(void *ud, qc_stt_state state, const char *detail) {
    qc_track *t = ud;
    if (state == QC_STT_CLOSED) t->stream = NULL; /* the engine frees it */
    if (t->cb.on_state) t->cb.on_state(t->ud, state, detail);
    if (state == QC_STT_CLOSED && t->finishing) {
        qc_resampler_free(t->rs);
        free(t->stage);
        free(t->out);
        free(t);
    }
}

qc_track *qc_track_new(qc_stt_engine *e, unsigned rate, unsigned channels, int quality, const qc_stt_callbacks *cb,
                       void *ud, char *err, size_t errlen) {
    qc_track *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->rs = qc_resampler_new(rate, channels, quality, err, errlen);
    if (!t->rs) {
        free(t);
        return NULL;
    }
    t->cb = *cb;
    t->ud = ud;
    t->frame_bytes = 2 * (size_t)channels;
    t->stage_cap = STAGE_FRAMES * t->frame_bytes;
    t->out_cap = qc_resampler_out_max(t->rs, STAGE_FRAMES);
    t->stage = malloc(t->stage_cap);
    t->out = malloc(t->out_cap * sizeof *t->out);
    if (!t->stage || !t->out) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    static const qc_stt_callbacks ours = {on_result, on_state};
    t->stream = qc_stt_stream_open(e, &ours, t, err, errlen);
    if (!t->stream) goto fail;
    return t;
fail:
    qc_resampler_free(t->rs);
    free(t->stage);
    free(t->out);
    free(t);
    return NULL;
}

/* The whole frames in the staging block go out; the bytes of a partial frame move to its
 * start. */
static void drain(qc_track *t) {
    size_t nframes = t->fill / t->frame_bytes;
    if (nframes == 0) return;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (size_t i = 0; i < nframes * t->frame_bytes / 2; i++)
        t->stage[i] = (int16_t)__builtin_bswap16((uint16_t)t->stage[i]);
#endif
    size_t n = qc_resampler_process(t->rs, t->stage, nframes, t->out, t->out_cap);
    t->st.frames_in += nframes;
    if (n > 0 && t->stream) {
        size_t took = qc_stt_stream_write(t->stream, t->out, n);
        t->st.samples_out += took;
        t->st.dropped += n - took;
    } else {
        t->st.dropped += n;
    }
    size_t used = nframes * t->frame_bytes;
    t->fill -= used;
    if (t->fill) memmove(t->stage, (char *)t->stage + used, t->fill);
}

void qc_track_feed(qc_track *t, const void *bytes, size_t len) {
    const char *p = bytes;
    t->st.bytes_in += len;
    while (len > 0) {
        size_t k = t->stage_cap - t->fill;
        if (k > len) k = len;
        memcpy((char *)t->stage + t->fill, p, k);
        t->fill += k;
        p += k;
        len -= k;
        if (t->fill == t->stage_cap || len == 0) drain(t);
    }
}

size_t qc_track_frame_bytes(const qc_track *t) { return t->frame_bytes; }

size_t qc_track_room(const qc_track *t) { return t->stream ? qc_stt_stream_room(t->stream) : 0; }

void qc_track_set_muted(qc_track *t, int muted) {
    muted = muted != 0;
    if (muted != t->st.muted) t->st.mute_changes++;
    t->st.muted = muted;
}

void qc_track_stats_get(const qc_track *t, qc_track_stats *out) {
    *out = t->st;
    out->carried = t->fill;
}

void qc_track_finish(qc_track *t) {
    t->fill = 0;
    t->finishing = 1;
    if (t->stream) {
        qc_stt_stream_finish(t->stream);
        return;
    }
    /* The engine closed the stream already: nothing more will come. */
    qc_resampler_free(t->rs);
    free(t->stage);
    free(t->out);
    free(t);
}

void qc_track_abort(qc_track *t) {
    if (t->stream) qc_stt_stream_abort(t->stream);
    qc_resampler_free(t->rs);
    free(t->stage);
    free(t->out);
    free(t);
}
