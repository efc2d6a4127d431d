/* The ElevenLabs realtime engine (shared/protocols/stt-llm.md §1): one WebSocket per stream,
 * manual commits at pauses found by an energy detector of our own, and no word lost or
 * doubled across disconnects. The service has no resume, so each stream keeps every sample
 * after the last acknowledged boundary (the end of the audio a received committed transcript
 * covers); after any loss it reconnects with backoff, sends previous_text, replays from that
 * boundary and redoes the commits whose transcripts never came. A commit's transcript is
 * emitted once, when it arrives, with word times moved from the connection's timeline to the
 * stream's clock by the replay base.
 *
 * Memory: the unacknowledged audio is at most one segment (commits come at pauses, and are
 * forced after SEGMENT_MAX_S) plus what arrives while a transcript is on its way or the
 * connection is down, up to RING_S seconds of 16 kHz s16 (1.4 MB). Only the last MEM_SAMPLES
 * of it (16 KB) are kept in memory: enough for what the connection has not yet been sent in
 * normal running. Older unacknowledged audio is spooled to an unlinked file of its own (in
 * the data directory, else TMPDIR), written in blocks of about half a second as the memory
 * ring fills and read back only to replay after a reconnect; its pages are the kernel's page
 * cache, not the process's heap, and the file is emptied whenever an acknowledged commit
 * leaves every unacknowledged sample in memory again (normally at each commit). The file is
 * a ring of RING_SAMPLES indexed like the old heap ring, so it never grows past 1.4 MB. */
#define _GNU_SOURCE /* O_TMPFILE */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../log.h"
#include "../net/ws_client.h"
#include "elevenlabs.h"
#include "stt.h"

#define RING_S 45
#define RING_SAMPLES ((size_t)RING_S * QC_STT_RATE)
#define MEM_SAMPLES 8192                  /* in memory: 0.51 s, a power of two; > 2 chunks */
#define WRITE_PIECE (MEM_SAMPLES / 2)     /* samples taken into memory at a time */
#define CHUNK_SAMPLES (QC_STT_RATE / 5)   /* 200 ms: the protocol notes' 100-250 ms */
#define FRAME_SAMPLES (QC_STT_RATE / 50)  /* 20 ms frames for the pause detector */
#define SPEECH_MIN_S 1.0                  /* commit at a pause only after this much since speech began */
#define PAUSE_FRAMES 15                   /* 300 ms of quiet is a pause */
#define SEGMENT_MAX_S 20                  /* a commit is forced after this much audio */
#define MAX_COMMITS 64
#define SPEECH_RMS_MIN 300.0              /* about -40 dBFS */
#define SESSION_TIMEOUT_MS 10000
#define FINISH_TIMEOUT_MS 30000
#define BACKOFF_MAX_MS 10000
#define PREV_TEXT_MAX 49                  /* "under 50 chars" */
#define SEND_HIGH_WATER (32u << 10)       /* stop pumping while this much is queued: the audio waits in
                                           * the ring and the spool instead, not in the heap */
#define KEEPALIVE_MS 10000                /* an empty chunk after this long without audio (a muted track) */

typedef struct el_engine el_engine;
typedef struct el_stream el_stream;

struct el_engine {
    qc_stt_engine base; /* first: stt.h */
    uv_loop_t *loop;
    char *url;     /* endpoint with our query */
    char *spool_dir;
    char *api_key;
    size_t streams;
    uint64_t samples_in, finals, partials, reconnects, dropped;
    double replayed_s;
    size_t reconnecting; /* streams between connections */
    char fatal[160];     /* the last fatal error, for the engine's state */
    /* One chunk's JSON, built here and copied by qc_ws_client_send: one buffer for every
     * stream (the loop has one thread) instead of 9 KB in each. */
    char chunk_msg[128 + 4 * ((2 * CHUNK_SAMPLES + 2) / 3)];
};

typedef struct {
    uv_timer_t timer; /* first, data = the block (task.h's convention) */
    el_stream *owner;
} el_timer;

typedef enum { T_NONE, T_BACKOFF, T_SESSION, T_RECOMMIT, T_KEEPALIVE } timer_purpose;

typedef struct {
    uint64_t at; /* absolute sample index */
    int sent;    /* sent on the current connection */
} commit_mark;

struct el_stream {
    /* first: the layout of stt.h's stream struct on the audio branch, whose dispatch finds a
     * stream's ops there */
    const qc_stt_ops *ops;
    el_engine *e;
    qc_stt_callbacks cb;
    void *ud;
    qc_ws_client *ws;
    int session; /* session_started seen on ws */
    int state;   /* the qc_stt_state last reported */
    int failed, finishing, closing_final, dead;
    int busy; /* depth of our callbacks into the user's: a user's abort waits for it */
    el_timer *timer;
    timer_purpose purpose;
    el_timer *finish_timer;
    unsigned attempt;

    /* Samples by absolute index: [acked, flushed) are in the spool file at (i % RING_SAMPLES),
     * [written - MEM_SAMPLES, written) in mem at (i % MEM_SAMPLES), and
     * written - flushed <= MEM_SAMPLES, so every unacknowledged sample is in one or both. */
    int16_t *mem;
    int spool_fd;    /* -1 until the first spill */
    int spool_dirty; /* the file may hold data */
    int spool_error; /* logged once */
    uint64_t written, acked, sent, conn_base, max_sent, flushed;
    commit_mark commits[MAX_COMMITS];
    size_t ncommits;

    /* pause detector */
    double frame_sq;
    size_t frame_n;
    double noise;
    int had_speech;
    uint64_t speech_first, seg_start;
    unsigned quiet_frames;
    uint64_t last_commit_ms;
    uint64_t min_gap_ms;

    char prev_text[PREV_TEXT_MAX + 1];
    char last_partial[512];
    int partial_shown;
};

static int connect_stream(el_stream *s, char *err, size_t errlen);
static void stream_free(el_stream *s);
static void fail(el_stream *s, const char *detail);

/* Every way into a stream (a message, a close, a timer, the user's calls) holds it busy, so
 * a stream that ends, or that the user aborts from inside a callback, is freed only when
 * that way out returns. */
#define ENTER(s) ((s)->busy++)
#define LEAVE(s)                                   \
    do {                                           \
        if (--(s)->busy == 0 && (s)->dead) stream_free(s); \
    } while (0)

/* ---- small helpers ---- */

static uint64_t now_ms(el_stream *s) { return uv_now(s->e->loop); }

static void set_state(el_stream *s, qc_stt_state st, const char *detail) {
    if (s->state == (int)st && st != QC_STT_FAILED) return;
    if (s->state == QC_STT_RECONNECTING && st != QC_STT_RECONNECTING) s->e->reconnecting--;
    if (st == QC_STT_RECONNECTING && s->state != QC_STT_RECONNECTING) s->e->reconnecting++;
    s->state = (int)st;
    if (s->dead || !s->cb.on_state) return;
    s->cb.on_state(s->ud, st, detail);
}

static void emit(el_stream *s, const qc_stt_result *r) {
    if (s->dead || !s->cb.on_result) return;
    if (r->final) s->e->finals++;
    else s->e->partials++;
    s->cb.on_result(s->ud, r);
}

static void timer_closed(uv_handle_t *h) { free(h->data); }

static el_timer *timer_new(el_stream *s) {
    el_timer *t = malloc(sizeof *t);
    if (!t) return NULL;
    uv_timer_init(s->e->loop, &t->timer);
    t->timer.data = t;
    t->owner = s;
    return t;
}

static void timer_drop(el_timer **t) {
    if (!*t) return;
    (*t)->owner = NULL;
    uv_close((uv_handle_t *)&(*t)->timer, timer_closed);
    *t = NULL;
}

static void on_timer(uv_timer_t *h);

static void arm(el_stream *s, timer_purpose p, uint64_t ms) {
    s->purpose = p;
    uv_timer_start(&s->timer->timer, on_timer, ms, 0);
}

static void disarm(el_stream *s) {
    s->purpose = T_NONE;
    uv_timer_stop(&s->timer->timer);
}

/* ---- the audio: memory ring and spool file ---- */

static void spool_failed(el_stream *s, const char *what, int e) {
    if (s->spool_error) return;
    s->spool_error = 1;
    qc_log(QC_LOG_ERROR, "stt", "elevenlabs spool failed", " op=%s error=\"%s\" dir=\"%s\"", what, strerror(e),
           s->e->spool_dir);
}

static int spool_open(el_stream *s) {
    if (s->spool_fd >= 0) return 0;
    const char *dir = s->e->spool_dir;
    int fd = -1;
#ifdef O_TMPFILE
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
#endif
    if (fd < 0) {
        /* a file system without O_TMPFILE: a named file, unlinked at once */
        char path[1100];
        snprintf(path, sizeof path, "%s/qc-stt-spool-XXXXXX", dir);
        fd = mkstemp(path);
        if (fd >= 0) {
            unlink(path);
            fcntl(fd, F_SETFD, FD_CLOEXEC);
        }
    }
    if (fd < 0) {
        spool_failed(s, "open", errno);
        return -1;
    }
    s->spool_fd = fd;
    return 0;
}

/* pwrite/pread of samples [at, at + n) at their place in the file's ring, n <= RING_SAMPLES. */
static int spool_io(el_stream *s, int write, uint64_t at, size_t n, int16_t *x) {
    while (n > 0) {
        size_t pos = (size_t)(at % RING_SAMPLES), k = RING_SAMPLES - pos;
        if (k > n) k = n;
        size_t len = k * sizeof *x, done = 0;
        off_t off = (off_t)(pos * sizeof *x);
        while (done < len) {
            ssize_t r = write ? pwrite(s->spool_fd, (char *)x + done, len - done, off + (off_t)done)
                              : pread(s->spool_fd, (char *)x + done, len - done, off + (off_t)done);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                spool_failed(s, write ? "write" : "read", r < 0 ? errno : EIO);
                return -1;
            }
            done += (size_t)r;
        }
        at += k;
        n -= k;
        x += k;
    }
    return 0;
}

/* Moves what only memory holds of the unacknowledged audio to the file, making room for
 * MEM_SAMPLES more in memory. */
static int spool_flush(el_stream *s) {
    uint64_t from = s->flushed > s->acked ? s->flushed : s->acked;
    if (from < s->written) {
        if (spool_open(s) < 0) return -1;
        int16_t block[WRITE_PIECE];
        while (from < s->written) {
            size_t n = s->written - from < WRITE_PIECE ? (size_t)(s->written - from) : WRITE_PIECE;
            size_t pos = (size_t)(from % MEM_SAMPLES), k = MEM_SAMPLES - pos;
            if (k >= n) {
                if (spool_io(s, 1, from, n, s->mem + pos) < 0) return -1;
            } else {
                memcpy(block, s->mem + pos, k * sizeof *block);
                memcpy(block + k, s->mem, (n - k) * sizeof *block);
                if (spool_io(s, 1, from, n, block) < 0) return -1;
            }
            from += n;
        }
        s->spool_dirty = 1;
    }
    s->flushed = s->written;
    return 0;
}

/* After an acknowledged commit: when memory holds every unacknowledged sample again, the
 * file's content is dead; truncating it gives its pages back before they are written out. */
static void spool_release(el_stream *s) {
    if (s->written - s->acked > MEM_SAMPLES) return;
    if (s->spool_dirty && ftruncate(s->spool_fd, 0) == 0) s->spool_dirty = 0;
    s->flushed = s->acked;
}

/* Samples [from, from + n) (unacknowledged, written) into x. */
static int audio_get(el_stream *s, uint64_t from, size_t n, int16_t *x) {
    uint64_t mem_from = s->written > MEM_SAMPLES ? s->written - MEM_SAMPLES : 0;
    if (from < mem_from) {
        size_t k = mem_from - from < n ? (size_t)(mem_from - from) : n;
        if (spool_io(s, 0, from, k, x) < 0) return -1;
        from += k;
        x += k;
        n -= k;
    }
    while (n > 0) {
        size_t pos = (size_t)(from % MEM_SAMPLES), k = MEM_SAMPLES - pos;
        if (k > n) k = n;
        memcpy(x, s->mem + pos, k * sizeof *x);
        from += k;
        x += k;
        n -= k;
    }
    return 0;
}

/* ---- sending ---- */

static int send_chunk(el_stream *s, uint64_t from, size_t n) {
    static const char head[] = "{\"message_type\":\"input_audio_chunk\",\"audio_base_64\":\"";
    static const char tail[] = "\",\"commit\":false,\"sample_rate\":16000}";
    int16_t x[CHUNK_SAMPLES];
    uint8_t pcm[CHUNK_SAMPLES * 2];
    if (audio_get(s, from, n, x) < 0) return -1;
    for (size_t i = 0; i < n; i++) {
        pcm[2 * i] = (uint8_t)(x[i] & 0xff); /* s16le on the wire, whatever this machine is */
        pcm[2 * i + 1] = (uint8_t)((uint16_t)x[i] >> 8);
    }
    size_t b64 = 4 * ((2 * n + 2) / 3);
    if (sizeof head + b64 + sizeof tail > sizeof s->e->chunk_msg) return -1; /* n <= CHUNK_SAMPLES: never */
    char *p = s->e->chunk_msg;
    memcpy(p, head, sizeof head - 1);
    p += sizeof head - 1;
    p += EVP_EncodeBlock((unsigned char *)p, pcm, (int)(2 * n));
    memcpy(p, tail, sizeof tail - 1);
    p += sizeof tail - 1;
    return qc_ws_client_send(s->ws, 1, s->e->chunk_msg, (size_t)(p - s->e->chunk_msg));
}

static int send_commit(el_stream *s) {
    static const char msg[] = "{\"message_type\":\"input_audio_chunk\",\"audio_base_64\":\"\",\"commit\":true,\"sample_rate\":16000}";
    return qc_ws_client_send(s->ws, 1, msg, sizeof msg - 1);
}

static commit_mark *next_unsent(el_stream *s) {
    for (size_t i = 0; i < s->ncommits; i++)
        if (!s->commits[i].sent) return &s->commits[i];
    return NULL;
}

/* Sends what the connection has not had, in chunks that never cross a commit boundary,
 * with each commit right after the audio it closes. A short tail waits for a full chunk
 * unless a commit or the end of the stream closes it. */
static void pump(el_stream *s) {
    if (!s->ws || !s->session || s->closing_final) return;
    while (qc_ws_client_queued(s->ws) < SEND_HIGH_WATER) {
        commit_mark *c = next_unsent(s);
        if (c && c->at <= s->sent) {
            if (send_commit(s) < 0) return;
            c->sent = 1;
            continue;
        }
        uint64_t limit = s->written;
        if (c && c->at < limit) limit = c->at;
        uint64_t n = limit - s->sent;
        if (n == 0) return;
        if (n > CHUNK_SAMPLES) n = CHUNK_SAMPLES;
        else if (n < CHUNK_SAMPLES && !(c && c->at == limit) && !s->finishing) return;
        if (send_chunk(s, s->sent, (size_t)n) < 0) {
            if (s->spool_error) fail(s, "the spool file of unacknowledged audio cannot be read");
            return;
        }
        s->sent += n;
        if (s->purpose == T_NONE || s->purpose == T_KEEPALIVE) arm(s, T_KEEPALIVE, KEEPALIVE_MS);
        if (s->sent > s->max_sent) s->max_sent = s->sent;
    }
}

/* ---- commits and the pause detector ---- */

static void add_commit(el_stream *s, uint64_t at) {
    if (s->ncommits == MAX_COMMITS) return; /* the next one covers this audio too */
    if (s->ncommits && s->commits[s->ncommits - 1].at >= at) return;
    if (!s->ncommits && at <= s->acked) return;
    s->commits[s->ncommits].at = at;
    s->commits[s->ncommits].sent = 0;
    s->ncommits++;
    s->seg_start = at;
    s->had_speech = 0;
    s->quiet_frames = 0;
    s->last_commit_ms = now_ms(s);
}

static void frame_done(el_stream *s) {
    double rms = sqrt(s->frame_sq / FRAME_SAMPLES);
    s->frame_sq = 0;
    s->frame_n = 0;
    double threshold = 3.0 * s->noise;
    if (threshold < SPEECH_RMS_MIN) threshold = SPEECH_RMS_MIN;
    int speech = rms > threshold;
    if (!speech) s->noise = s->noise * 0.95 + rms * 0.05;
    uint64_t pos = s->written;
    if (speech) {
        s->quiet_frames = 0;
        if (!s->had_speech) {
            s->had_speech = 1;
            s->speech_first = pos - FRAME_SAMPLES;
        }
    } else {
        s->quiet_frames++;
    }
    if (s->had_speech && pos - s->speech_first >= (uint64_t)(SPEECH_MIN_S * QC_STT_RATE) &&
        s->quiet_frames >= PAUSE_FRAMES && now_ms(s) - s->last_commit_ms >= s->min_gap_ms)
        add_commit(s, pos);
    else if (pos - s->seg_start >= (uint64_t)SEGMENT_MAX_S * QC_STT_RATE)
        add_commit(s, pos);
}

/* ---- the connection ---- */

static void schedule_reconnect(el_stream *s, const char *why) {
    if (s->ws) {
        qc_ws_client_abort(s->ws);
        s->ws = NULL;
    }
    s->session = 0;
    static const unsigned steps[] = {500, 1000, 2000, 4000, 8000};
    unsigned delay = s->attempt < 5 ? steps[s->attempt] : BACKOFF_MAX_MS;
    s->attempt++;
    s->e->reconnects++;
    qc_log(QC_LOG_WARN, "stt", "elevenlabs connection lost", " reason=\"%s\" attempt=%u retry_ms=%u", why, s->attempt,
           delay);
    set_state(s, QC_STT_RECONNECTING, why);
    arm(s, T_BACKOFF, delay);
}

static void fail(el_stream *s, const char *detail) {
    s->failed = 1;
    snprintf(s->e->fatal, sizeof s->e->fatal, "%s", detail);
    qc_log(QC_LOG_ERROR, "stt", "elevenlabs stream failed", " detail=\"%s\"", detail);
    disarm(s);
    if (s->ws) qc_ws_client_abort(s->ws);
    s->ws = NULL;
    set_state(s, QC_STT_FAILED, detail);
    if (s->finishing && !s->dead) {
        set_state(s, QC_STT_CLOSED, NULL);
        s->dead = 1;
    }
}

/* Every commit acknowledged and every sample sent: the end of a finishing stream. */
static void maybe_done(el_stream *s) {
    if (!s->finishing || s->closing_final || s->ncommits || s->sent < s->written) return;
    s->closing_final = 1;
    if (s->ws) qc_ws_client_close(s->ws, 1000, "");
    else {
        set_state(s, QC_STT_CLOSED, NULL);
        s->dead = 1;
    }
}

static int fatal_type(const char *t) {
    return !strcmp(t, "auth_error") || !strcmp(t, "quota_exceeded") || !strcmp(t, "quota_exceeded_error") ||
           !strcmp(t, "unaccepted_terms") || !strcmp(t, "invalid_request");
}

static void on_committed(el_stream *s, json_t *m) {
    if (!s->ncommits || !s->commits[0].sent) {
        /* an auto-commit of the service: a boundary we do not know; ignore its text */
        qc_log(QC_LOG_WARN, "stt", "elevenlabs transcript for no commit of ours", NULL);
        return;
    }
    uint64_t from = s->acked, to = s->commits[0].at;
    memmove(s->commits, s->commits + 1, (s->ncommits - 1) * sizeof s->commits[0]);
    s->ncommits--;
    s->acked = to;
    spool_release(s);
    const char *text = json_string_value(json_object_get(m, "text"));
    if (!text) text = "";
    double base = (double)s->conn_base / QC_STT_RATE;
    json_t *words = json_object_get(m, "words");
    size_t nw = json_is_array(words) ? json_array_size(words) : 0, k = 0;
    qc_stt_word *w = nw ? calloc(nw, sizeof *w) : NULL;
    for (size_t i = 0; w && i < nw; i++) {
        json_t *it = json_array_get(words, i);
        const char *type = json_string_value(json_object_get(it, "type"));
        const char *wt = json_string_value(json_object_get(it, "text"));
        if (!wt || (type && strcmp(type, "word") != 0)) continue;
        w[k].text = wt;
        w[k].start_s = base + json_number_value(json_object_get(it, "start"));
        w[k].end_s = base + json_number_value(json_object_get(it, "end"));
        k++;
    }
    /* tail of what was said, for previous_text after a reconnect */
    size_t tl = strlen(text);
    if (tl) {
        const char *t = tl > PREV_TEXT_MAX ? text + tl - PREV_TEXT_MAX : text;
        while ((*t & 0xc0) == 0x80) t++; /* not in the middle of a UTF-8 sequence */
        while (t > text && *t == ' ') t++;
        snprintf(s->prev_text, sizeof s->prev_text, "%s", t);
    }
    if (tl || s->partial_shown) {
        qc_stt_result r = {.final = 1, .text = text, .words = w, .nwords = k};
        r.start_s = k ? w[0].start_s : (double)from / QC_STT_RATE;
        r.end_s = k ? w[k - 1].end_s : (double)to / QC_STT_RATE;
        emit(s, &r);
    }
    free(w);
    s->partial_shown = 0;
    s->last_partial[0] = 0;
}

static void on_ws_message(void *ud, qc_ws_client *c, int text, const uint8_t *data, size_t len) {
    el_stream *s = ud;
    if (!text || s->dead || c != s->ws) return;
    json_error_t jerr;
    json_t *m = json_loadb((const char *)data, len, 0, &jerr);
    const char *type = json_string_value(json_object_get(m, "message_type"));
    if (!type) {
        qc_log(QC_LOG_WARN, "stt", "elevenlabs message without message_type", " bytes=%zu", len);
        json_decref(m);
        return;
    }
    ENTER(s);
    if (!strcmp(type, "session_started")) {
        s->session = 1;
        disarm(s);
        if (s->prev_text[0]) {
            json_t *first = json_pack("{s:s, s:s, s:b, s:i, s:s}", "message_type", "input_audio_chunk",
                                      "audio_base_64", "", "commit", 0, "sample_rate", QC_STT_RATE,
                                      "previous_text", s->prev_text);
            char *out = first ? json_dumps(first, JSON_COMPACT) : NULL;
            if (out) qc_ws_client_send(s->ws, 1, out, strlen(out));
            free(out);
            json_decref(first);
        }
        set_state(s, QC_STT_READY, NULL);
        pump(s);
    } else if (!strcmp(type, "partial_transcript")) {
        const char *t = json_string_value(json_object_get(m, "text"));
        if (t && *t && strcmp(t, s->last_partial) != 0) {
            snprintf(s->last_partial, sizeof s->last_partial, "%s", t);
            qc_stt_result r = {.final = 0, .text = t, .start_s = (double)s->acked / QC_STT_RATE,
                               .end_s = (double)s->sent / QC_STT_RATE};
            s->partial_shown = 1;
            emit(s, &r);
        }
    } else if (!strcmp(type, "committed_transcript_with_timestamps")) {
        s->attempt = 0; /* a working connection: the next loss starts the backoff over */
        on_committed(s, m);
        maybe_done(s);
    } else if (!strcmp(type, "committed_transcript") || !strcmp(type, "warning") ||
               !strncmp(type, "final_transcript", 16) || !strcmp(type, "committed_transcript_entities") ||
               !strcmp(type, "edited_transcript")) {
        /* the plain twin of the one we consume, or opt-in messages we did not ask for */
    } else {
        const char *why = json_string_value(json_object_get(m, "error"));
        if (!why) why = json_string_value(json_object_get(m, "message"));
        char detail[160];
        snprintf(detail, sizeof detail, "%s: %.120s", type, why ? why : "");
        if (fatal_type(type)) {
            fail(s, detail);
        } else if (!strcmp(type, "commit_throttled")) {
            /* the last commit sent did not happen: its audio goes with the next one */
            for (size_t i = s->ncommits; i-- > 0;)
                if (s->commits[i].sent) {
                    memmove(s->commits + i, s->commits + i + 1, (s->ncommits - i - 1) * sizeof s->commits[0]);
                    s->ncommits--;
                    break;
                }
            s->min_gap_ms = s->min_gap_ms ? s->min_gap_ms * 2 : 2000;
            if (s->min_gap_ms > SEGMENT_MAX_S * 1000) s->min_gap_ms = SEGMENT_MAX_S * 1000;
            /* the end of a finishing stream still needs its commit: try again later */
            if (s->finishing && (s->purpose == T_NONE || s->purpose == T_KEEPALIVE)) arm(s, T_RECOMMIT, s->min_gap_ms);
            qc_log(QC_LOG_WARN, "stt", "elevenlabs commit throttled", " min_gap_ms=%llu",
                   (unsigned long long)s->min_gap_ms);
        } else if (!strcmp(type, "input_error") || !strcmp(type, "chunk_size_exceeded")) {
            qc_log(QC_LOG_ERROR, "stt", "elevenlabs refused our input", " detail=\"%s\"", detail);
        } else {
            schedule_reconnect(s, detail); /* the service closes after an error: do not wait for it */
        }
    }
    json_decref(m);
    LEAVE(s);
}

static void on_ws_writable(void *ud, qc_ws_client *c) {
    (void)c;
    el_stream *s = ud;
    if (s->dead) return;
    ENTER(s);
    pump(s);
    LEAVE(s);
}

static void on_ws_close(void *ud, qc_ws_client *c, int code, int http_status, const char *reason) {
    el_stream *s = ud;
    if (s->ws != c) return; /* an old connection we let go of */
    s->ws = NULL;
    s->session = 0;
    if (s->dead) return;
    ENTER(s);
    char why[200];
    if (s->closing_final) {
        set_state(s, QC_STT_CLOSED, NULL);
        s->dead = 1;
    } else if (http_status == 401 || http_status == 403) {
        snprintf(why, sizeof why, "upgrade refused: HTTP %d", http_status);
        fail(s, why);
    } else {
        if (http_status) snprintf(why, sizeof why, "upgrade refused: HTTP %d", http_status);
        else snprintf(why, sizeof why, "closed %d %.120s", code, reason ? reason : "");
        schedule_reconnect(s, why);
    }
    LEAVE(s);
}

void qc_stt_elevenlabs_receive(qc_stt_stream *ss, const char *data, size_t len) {
    el_stream *s = (el_stream *)ss;
    if (s->ws) on_ws_message(s, s->ws, 1, (const uint8_t *)data, len);
}

static const qc_ws_client_handlers ws_handlers = {
    .on_message = on_ws_message, .on_writable = on_ws_writable, .on_close = on_ws_close};

static int connect_stream(el_stream *s, char *err, size_t errlen) {
    el_engine *e = s->e;
    const char *headers[2] = {"xi-api-key", e->api_key};
    qc_ws_client_options opt = {.headers = headers, .nheaders = 1, .max_message = 1u << 20, .max_queued = 8u << 20};
    /* the connection's timeline starts at the acknowledged boundary: replay from there */
    s->conn_base = s->acked;
    s->sent = s->acked;
    for (size_t i = 0; i < s->ncommits; i++) s->commits[i].sent = 0;
    if (s->max_sent > s->acked) e->replayed_s += (double)(s->max_sent - s->acked) / QC_STT_RATE;
    s->ws = qc_ws_client_connect(e->loop, e->url, &opt, &ws_handlers, s, err, errlen);
    if (!s->ws) return -1;
    arm(s, T_SESSION, SESSION_TIMEOUT_MS);
    return 0;
}

static void on_timer(uv_timer_t *h) {
    el_timer *t = (el_timer *)h;
    el_stream *s = t->owner;
    if (!s || s->dead) return;
    ENTER(s);
    if (t == s->finish_timer) {
        qc_log(QC_LOG_WARN, "stt", "elevenlabs stream closed before every transcript came",
               " unacknowledged_s=%.2f", (double)(s->written - s->acked) / QC_STT_RATE);
        if (s->ws) qc_ws_client_abort(s->ws);
        s->ws = NULL;
        set_state(s, QC_STT_CLOSED, NULL);
        s->dead = 1;
    } else {
        timer_purpose p = s->purpose;
        s->purpose = T_NONE;
        char err[200];
        if (p == T_BACKOFF && connect_stream(s, err, sizeof err) < 0) fail(s, err);
        else if (p == T_SESSION) schedule_reconnect(s, "no session_started");
        else if (p == T_KEEPALIVE && s->ws && s->session) {
            /* the service wants a message now and then, not a ping (the protocol notes) */
            static const char ka[] = "{\"message_type\":\"input_audio_chunk\",\"audio_base_64\":\"\",\"commit\":false,\"sample_rate\":16000}";
            qc_ws_client_send(s->ws, 1, ka, sizeof ka - 1);
            arm(s, T_KEEPALIVE, KEEPALIVE_MS);
        } else if (p == T_RECOMMIT && s->written > (s->ncommits ? s->commits[s->ncommits - 1].at : s->acked)) {
            add_commit(s, s->written);
            pump(s);
        }
    }
    LEAVE(s);
}

/* ---- the ops ---- */

static const qc_stt_ops el_ops;

static qc_stt_stream *el_open(qc_stt_engine *base, const qc_stt_callbacks *cb, void *ud, char *err, size_t errlen) {
    el_engine *e = (el_engine *)base;
    el_stream *s = calloc(1, sizeof *s);
    if (s) s->e = e;
    if (s) s->mem = malloc(MEM_SAMPLES * sizeof *s->mem);
    if (s) s->timer = timer_new(s);
    if (s) s->spool_fd = -1;
    if (!s || !s->mem || !s->timer) {
        if (s) {
            free(s->mem);
            if (s->timer) timer_drop(&s->timer);
        }
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->ops = &el_ops;
    s->e = e;
    s->cb = *cb;
    s->ud = ud;
    s->state = QC_STT_CONNECTING;
    s->last_commit_ms = uv_now(e->loop);
    e->streams++;
    if (connect_stream(s, err, errlen) < 0) {
        s->dead = 1;
        stream_free(s);
        return NULL;
    }
    return (qc_stt_stream *)s;
}

static size_t el_write(qc_stt_stream *ss, const int16_t *x, size_t n) {
    el_stream *s = (el_stream *)ss;
    if (s->failed || s->finishing || s->dead) {
        s->e->dropped += n;
        return 0;
    }
    size_t room = RING_SAMPLES - (size_t)(s->written - s->acked);
    size_t take = n < room ? n : room, done = 0;
    while (done < take) {
        size_t k = take - done < WRITE_PIECE ? take - done : WRITE_PIECE;
        if (s->written + k - s->flushed > MEM_SAMPLES && spool_flush(s) < 0) break; /* dropped below */
        size_t pos = (size_t)(s->written % MEM_SAMPLES), k1 = MEM_SAMPLES - pos;
        if (k1 > k) k1 = k;
        memcpy(s->mem + pos, x + done, k1 * sizeof *x);
        memcpy(s->mem, x + done + k1, (k - k1) * sizeof *x);
        for (size_t i = done; i < done + k; i++) {
            s->written++;
            s->frame_sq += (double)x[i] * x[i];
            if (++s->frame_n == FRAME_SAMPLES) frame_done(s);
        }
        done += k;
    }
    take = done;
    s->e->samples_in += take;
    s->e->dropped += n - take;
    ENTER(s);
    pump(s);
    LEAVE(s);
    return take;
}

static void el_finish(qc_stt_stream *ss) {
    el_stream *s = (el_stream *)ss;
    if (s->finishing || s->dead) return;
    s->finishing = 1;
    ENTER(s);
    if (s->failed) {
        set_state(s, QC_STT_CLOSED, NULL);
        s->dead = 1;
    } else {
        /* the last commit, even over silence: its answer is what tells us we are done */
        if (s->written > s->seg_start) add_commit(s, s->written);
        s->finish_timer = timer_new(s);
        if (s->finish_timer) uv_timer_start(&s->finish_timer->timer, on_timer, FINISH_TIMEOUT_MS, 0);
        pump(s);
        maybe_done(s);
    }
    LEAVE(s);
}

static void el_abort(qc_stt_stream *ss) {
    el_stream *s = (el_stream *)ss;
    if (s->dead) return;
    s->dead = 1;
    if (!s->busy) stream_free(s);
}

/* Frees now, or (busy) when the way in that holds it returns. */
static void stream_free(el_stream *s) {
    s->dead = 1;
    if (s->busy) return;
    if (s->ws) qc_ws_client_abort(s->ws);
    s->ws = NULL;
    if (s->state == QC_STT_RECONNECTING) s->e->reconnecting--;
    timer_drop(&s->timer);
    timer_drop(&s->finish_timer);
    s->e->streams--;
    free(s->mem);
    if (s->spool_fd >= 0) close(s->spool_fd);
    free(s);
}

static void el_stats(const qc_stt_engine *base, qc_stt_stats *out) {
    const el_engine *e = (const el_engine *)base;
    static char state[200];
    memset(out, 0, sizeof *out);
    out->name = "elevenlabs";
    if (e->fatal[0]) snprintf(state, sizeof state, "failed: %s", e->fatal);
    else if (e->reconnecting) snprintf(state, sizeof state, "degraded: %zu stream(s) reconnecting", e->reconnecting);
    else snprintf(state, sizeof state, "ready");
    out->state = state;
    out->streams = e->streams;
    out->samples_in = e->samples_in;
    out->results_final = e->finals;
    out->results_partial = e->partials;
    out->reconnects = e->reconnects;
    out->replayed_s = e->replayed_s;
    out->dropped_samples = e->dropped;
}

static void el_free(qc_stt_engine *base) {
    el_engine *e = (el_engine *)base;
    if (!e) return;
    free(e->url);
    free(e->api_key);
    free(e->spool_dir);
    free(e);
}

size_t qc_stt_elevenlabs_room(const qc_stt_stream *ss) {
    const el_stream *s = (const el_stream *)ss;
    if (s->failed || s->finishing || s->dead) return 0;
    return RING_SAMPLES - (size_t)(s->written - s->acked);
}

static const qc_stt_ops el_ops = {
    .name = "elevenlabs", .open = el_open, .write = el_write, .finish = el_finish,
    .abort = el_abort, .stats = el_stats, .free = el_free,
};

#define DEFAULT_URL "wss://api.elevenlabs.io/v1/speech-to-text/realtime"

qc_stt_engine *qc_stt_elevenlabs_new(uv_loop_t *loop, const qc_stt_config *cfg, char *err, size_t errlen) {
    if (!cfg->api_key || !cfg->api_key[0]) {
        snprintf(err, errlen, "the elevenlabs engine needs ELEVENLABS_API_KEY");
        return NULL;
    }
    const char *base = cfg->url && cfg->url[0] ? cfg->url : DEFAULT_URL;
    if (strncmp(base, "ws://", 5) != 0 && strncmp(base, "wss://", 6) != 0) {
        snprintf(err, errlen, "QC_ELEVENLABS_URL must start with ws:// or wss://");
        return NULL;
    }
    el_engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *lang = cfg->language && cfg->language[0] ? cfg->language : "en";
    size_t n = strlen(base) + strlen(lang) + 160;
    e->url = malloc(n);
    e->api_key = strdup(cfg->api_key);
    const char *spool = cfg->spool_dir && cfg->spool_dir[0] ? cfg->spool_dir : getenv("TMPDIR");
    e->spool_dir = strdup(spool && spool[0] ? spool : "/tmp");
    if (!e->url || !e->api_key || !e->spool_dir) {
        free(e->url);
        free(e->api_key);
        free(e->spool_dir);
        free(e);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(e->url, n,
             "%s%smodel_id=scribe_v2_realtime&audio_format=pcm_16000&commit_strategy=manual"
             "&include_timestamps=true&language_code=%s",
             base, strchr(base, '?') ? "&" : "?", lang);
    e->base.ops = &el_ops;
    e->loop = loop;
    return &e->base;
}
