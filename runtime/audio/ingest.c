/* Ingest connections glued to tracks (ingest.h). An ingest lives until both its connection
 * has closed and its track has delivered its last result (QC_STT_CLOSED), so a final that
 * the engine produces after the socket went away still reaches the sink with its identity. */
#define _POSIX_C_SOURCE 200809L
#include "ingest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/latency.h"
#include "audio/track.h"
#include "log.h"
#include "metrics.h"
#include "net/http_error.h"
#include "net/websocket.h"

struct qc_ingest_hub {
    uv_loop_t *loop;
    qc_stt_engine *engine; /* NULL when it could not be made: ingest answers 503 */
    char engine_name[16];
    char engine_error[256];
    int quality;
    qc_ingest_sink sink;
    void *sink_ud;
    qc_ingest *all; /* every ingest not yet freed */
    qc_ingest_stats st; /* bytes_in etc.: of tracks already finished; live ones are summed on demand */
};

struct qc_ingest {
    qc_ingest_hub *hub; /* NULL once the hub is gone (server stop) */
    qc_ws_conn *conn;   /* valid while !conn_over */
    qc_track *track;    /* NULL once finished or aborted */
    qc_ingest_info info;
    size_t frame_bytes;
    uint64_t bytes_in;
    uint64_t aligned_at;  /* bytes_in when a message last ended on a whole frame */
    uint64_t unaligned_limit;
    uint64_t fed_ns;      /* when audio was last handed to the track (speech-end -> final) */
    int conn_over;        /* on_close has run */
    int track_over;       /* QC_STT_CLOSED arrived, or the track was aborted */
    int in_call;          /* inside one of our callbacks: free later */
    qc_ingest *prev, *next;
    char names[];
};

static qc_ingest_hub *default_hub;

void qc_ingest_hub_set_default(qc_ingest_hub *h) { default_hub = h; }
qc_ingest_hub *qc_ingest_hub_default(void) { return default_hub; }

qc_ingest_hub *qc_ingest_hub_new(uv_loop_t *loop, const qc_stt_config *stt, int resample_quality, char *err,
                                 size_t errlen) {
    qc_ingest_hub *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->loop = loop;
    h->quality = resample_quality;
    snprintf(h->engine_name, sizeof h->engine_name, "%s", stt->engine ? stt->engine : "?");
    h->engine = qc_stt_engine_new(loop, stt, h->engine_error, sizeof h->engine_error);
    /* Added latency per message for /health and bench/ (audio/latency.h): a clock read per
     * message, so always on. */
    if (qc_latency_attach(loop)) qc_log(QC_LOG_WARN, "ingest", "latency histogram unavailable", NULL);
    if (!h->engine)
        qc_log(QC_LOG_ERROR, "stt", "engine unavailable: ingest refuses audio", " engine=%s error=\"%s\"",
               h->engine_name, h->engine_error);
    return h;
}

void qc_ingest_hub_set_sink(qc_ingest_hub *h, const qc_ingest_sink *sink, void *ud) {
    if (sink) h->sink = *sink;
    else memset(&h->sink, 0, sizeof h->sink);
    h->sink_ud = ud;
}

qc_stt_engine *qc_ingest_hub_engine(qc_ingest_hub *h) { return h ? h->engine : NULL; }

const char *qc_ingest_hub_engine_error(const qc_ingest_hub *h, const char **name) {
    if (name) *name = h ? h->engine_name : "";
    return h && !h->engine ? h->engine_error : NULL;
}

/* Counters of a track that is done, kept by the hub. */
static void account(qc_ingest_hub *h, const qc_track *t) {
    qc_track_stats ts;
    qc_track_stats_get(t, &ts);
    h->st.frames_in += ts.frames_in;
    h->st.dropped += ts.dropped;
}

void qc_ingest_hub_stats(const qc_ingest_hub *h, qc_ingest_stats *out) {
    memset(out, 0, sizeof *out);
    if (!h) return;
    *out = h->st;
    out->tracks = out->connections = 0;
    for (const qc_ingest *in = h->all; in; in = in->next) {
        out->tracks++;
        if (!in->conn_over) out->connections++;
        if (in->track) {
            qc_track_stats ts;
            qc_track_stats_get(in->track, &ts);
            out->frames_in += ts.frames_in;
            out->dropped += ts.dropped;
        }
    }
}

static void unlink_ingest(qc_ingest *in) {
    qc_ingest_hub *h = in->hub;
    if (!h) return;
    if (in->prev) in->prev->next = in->next;
    else h->all = in->next;
    if (in->next) in->next->prev = in->prev;
    in->prev = in->next = NULL;
}

static void maybe_free(qc_ingest *in) {
    if (!in->conn_over || !in->track_over || in->in_call) return;
    unlink_ingest(in);
    free(in);
}

/* ---- the track's results ------------------------------------------------------------ */

/* GET /metrics' speech-end -> final latency: from the moment the audio at the final's last
 * word end arrived to the final's callback. Egress sends at the pace of speech, so the audio
 * the stream took after that point (its clock: samples taken / 16 kHz) arrived over as many
 * seconds before the last feed. */
static void final_latency(qc_ingest *in, const qc_stt_result *r) {
    if (!in->track || !in->fed_ns || !r->text || !r->text[0]) return;
    qc_track_stats ts;
    qc_track_stats_get(in->track, &ts);
    double taken_s = (double)ts.samples_out / QC_STT_RATE;
    double after_s = taken_s > r->end_s ? taken_s - r->end_s : 0;
    qc_metrics_final_latency((double)(uv_hrtime() - in->fed_ns) / 1e9 + after_s);
}

static void track_result(void *ud, const qc_stt_result *r) {
    qc_ingest *in = ud;
    qc_ingest_hub *h = in->hub;
    if (r->final) final_latency(in, r);
    if (h && h->sink.on_result) h->sink.on_result(h->sink_ud, &in->info, r);
}

static void track_state(void *ud, qc_stt_state state, const char *detail) {
    qc_ingest *in = ud;
    qc_ingest_hub *h = in->hub;
    if (state == QC_STT_FAILED)
        qc_log(QC_LOG_ERROR, "ingest", "stt stream failed", " room=%s identity=%s track=%s detail=\"%s\"",
               in->info.room, in->info.identity, in->info.track, detail ? detail : "");
    in->in_call++;
    if (h && h->sink.on_state) h->sink.on_state(h->sink_ud, &in->info, state, detail);
    in->in_call--;
    if (state == QC_STT_CLOSED) {
        in->track_over = 1;
        maybe_free(in);
    }
}

/* ---- the connection ----------------------------------------------------------------- */

static int skip_ws(const uint8_t *d, size_t n, size_t i) {
    while (i < n && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n')) i++;
    return (int)i;
}

static int match_at(const uint8_t *d, size_t n, size_t *i, const char *lit) {
    size_t l = strlen(lit);
    if (n - *i < l || memcmp(d + *i, lit, l) != 0) return 0;
    *i += l;
    return 1;
}

int qc_ingest_parse_muted(const uint8_t *d, size_t n) {
    size_t i = (size_t)skip_ws(d, n, 0);
    if (!match_at(d, n, &i, "{")) return -1;
    i = (size_t)skip_ws(d, n, i);
    if (!match_at(d, n, &i, "\"muted\"")) return -1;
    i = (size_t)skip_ws(d, n, i);
    if (!match_at(d, n, &i, ":")) return -1;
    i = (size_t)skip_ws(d, n, i);
    int v;
    if (match_at(d, n, &i, "true")) v = 1;
    else if (match_at(d, n, &i, "false")) v = 0;
    else return -1;
    i = (size_t)skip_ws(d, n, i);
    if (!match_at(d, n, &i, "}")) return -1;
    i = (size_t)skip_ws(d, n, i);
    return i == n ? v : -1;
}

/* The connection is refused for what it sent: counted, logged, closed with the reason. */
static void close_bad(qc_ingest *in, qc_ws_conn *c, int code, const char *reason) {
    if (in->hub) in->hub->st.closed_bad_input++;
    qc_log(QC_LOG_WARN, "ingest", "closing: bad input", " room=%s identity=%s track=%s code=%d reason=\"%s\"",
           in->info.room, in->info.identity, in->info.track, code, reason);
    qc_ws_close(c, code, reason);
}

static void on_message(void *ud, qc_ws_conn *c, int text, const uint8_t *data, size_t len) {
    qc_ingest *in = ud;
    if (!in->track || in->conn_over) return; /* closing: the rest is ignored */
    if (!text) {
        in->bytes_in += len;
        if (in->hub) in->hub->st.bytes_in += len;
        qc_latency_in();
        qc_track_feed(in->track, data, len);
        qc_latency_out();
        in->fed_ns = uv_hrtime();
        /* A stream split into messages of any size is fine, but one that never again ends a
         * message on a whole frame is misaligned: its samples would be noise. */
        if (in->bytes_in % in->frame_bytes == 0) {
            in->aligned_at = in->bytes_in;
        } else if (in->bytes_in - in->aligned_at > in->unaligned_limit) {
            char reason[120];
            snprintf(reason, sizeof reason, "unaligned audio: %llu bytes without a whole %zu-byte frame at a message end",
                     (unsigned long long)(in->bytes_in - in->aligned_at), in->frame_bytes);
            close_bad(in, c, 1007, reason);
        }
        return;
    }
    int muted = qc_ingest_parse_muted(data, len);
    if (muted >= 0) {
        qc_track_set_muted(in->track, muted);
        return;
    }
    /* The reason quotes the start of the message, printable ASCII only (a cut could split a
     * UTF-8 character, and a close reason must be valid UTF-8). */
    char reason[124];
    int o = snprintf(reason, sizeof reason, "unexpected text message: ");
    for (size_t i = 0; i < len && i < 48 && o < (int)sizeof reason - 4; i++)
        reason[o++] = data[i] >= 0x20 && data[i] < 0x7f ? (char)data[i] : '?';
    if (len > 48) reason[o++] = '.', reason[o++] = '.', reason[o++] = '.';
    reason[o] = 0;
    close_bad(in, c, 1003, reason);
}

static void on_close(void *ud, qc_ws_conn *c, int code, const char *reason) {
    (void)c;
    qc_ingest *in = ud;
    in->conn_over = 1;
    in->conn = NULL;
    qc_log(QC_LOG_INFO, "ingest", "closed", " room=%s identity=%s track=%s code=%d reason=\"%s\" bytes=%llu",
           in->info.room, in->info.identity, in->info.track, code, reason ? reason : "",
           (unsigned long long)in->bytes_in);
    if (in->track) {
        /* The open utterance is closed and its final delivered; the ingest stays until the
         * stream says CLOSED. */
        qc_track *t = in->track;
        in->track = NULL;
        if (in->hub) account(in->hub, t);
        in->in_call++;
        qc_track_finish(t);
        in->in_call--;
    }
    maybe_free(in);
}

static const qc_ws_handlers ingest_handlers = {
    .on_message = on_message,
    .on_close = on_close,
    .on_drain = NULL,
};

static void respond_error(qc_http_exchange *ex, int status, const char *code, const char *message) {
    char body[QC_HTTP_ERROR_MAX];
    size_t n = qc_http_error_json(body, sizeof body, code, message, NULL);
    qc_http_header hs[] = {{"content-type", "application/json"}};
    qc_http_exchange_respond(ex, status, hs, 1, body, n);
}

static size_t copy_name(char *dst, const char *src) {
    size_t n = strlen(src ? src : "") + 1;
    memcpy(dst, src ? src : "", n);
    return n;
}

int qc_ingest_start(qc_ingest_hub *h, qc_http_exchange *ex, const qc_ingest_info *info, char *err, size_t errlen) {
    const char *names[4] = {info->room, info->identity, info->role, info->track};
    size_t bytes = 0;
    for (int i = 0; i < 4; i++) bytes += strlen(names[i] ? names[i] : "") + 1;
    qc_ingest *in = calloc(1, sizeof *in + bytes);
    if (!in) {
        snprintf(err, errlen, "out of memory");
        respond_error(ex, 503, "OVERLOADED", "out of memory");
        return -1;
    }
    char *p = in->names;
    in->info = *info;
    in->info.room = p, p += copy_name(p, info->room);
    in->info.identity = p, p += copy_name(p, info->identity);
    in->info.role = p, p += copy_name(p, info->role);
    in->info.track = p, p += copy_name(p, info->track);
    if (!h->engine) {
        snprintf(err, errlen, "the %s STT engine is unavailable: %s", h->engine_name, h->engine_error);
        respond_error(ex, 503, "STT_UNAVAILABLE", err);
        free(in);
        return -1;
    }
    qc_stt_callbacks cb = {.on_result = track_result, .on_state = track_state};
    in->track = qc_track_new(h->engine, info->rate, info->channels, h->quality, &cb, in, err, errlen);
    if (!in->track) {
        qc_log(QC_LOG_ERROR, "ingest", "track refused", " room=%s track=%s error=\"%s\"", in->info.room,
               in->info.track, err);
        respond_error(ex, 503, "STT_UNAVAILABLE", err);
        free(in);
        return -1;
    }
    in->frame_bytes = qc_track_frame_bytes(in->track);
    in->unaligned_limit = (uint64_t)info->rate * in->frame_bytes; /* one second of audio */
    in->hub = h;
    in->next = h->all;
    if (h->all) h->all->prev = in;
    h->all = in;
    qc_ws_limits lim = {
        .max_message = QC_INGEST_MAX_MESSAGE, .max_queued_bytes = 4096, .idle_timeout_ms = QC_INGEST_IDLE_MS};
    in->in_call++;
    qc_ws_conn *c = qc_ws_accept(ex, &ingest_handlers, in, &lim);
    in->in_call--;
    if (!c && !in->conn_over) {
        /* The client has gone: nothing was accepted, nothing will call us. */
        qc_track_abort(in->track);
        in->track = NULL;
        unlink_ingest(in);
        free(in);
        return 0;
    }
    h->st.accepted++;
    if (!in->conn_over) in->conn = c;
    /* One connection per track: an egress that dials again (a retry after a failure the old
     * socket has not noticed yet) replaces the old one, whose words would otherwise come twice. */
    qc_ingest *next;
    for (qc_ingest *o = h->all; o; o = next) {
        next = o->next;
        if (o != in && !o->conn_over && o->conn && strcmp(o->info.track, in->info.track) == 0 &&
            strcmp(o->info.room, in->info.room) == 0) {
            qc_log(QC_LOG_WARN, "ingest", "replaced by a newer connection", " room=%s track=%s", o->info.room,
                   o->info.track);
            qc_ws_close(o->conn, 1008, "replaced by a newer connection for this track");
        }
    }
    qc_log(QC_LOG_INFO, "ingest", "connected", " room=%s identity=%s role=%s track=%s rate=%u channels=%u offset=%.3f",
           in->info.room, in->info.identity, in->info.role, in->info.track, info->rate, info->channels,
           info->clock_offset);
    maybe_free(in); /* closed during the accept, already */
    return 0;
}

void qc_ingest_hub_stop(qc_ingest_hub *h) {
    if (!h) return;
    qc_ingest *next;
    for (qc_ingest *in = h->all; in; in = next) {
        next = in->next; /* a close may end (and free) in at once */
        if (!in->conn_over && in->conn) qc_ws_close(in->conn, 1001, "server stopping");
    }
}

size_t qc_ingest_hub_live(const qc_ingest_hub *h) {
    size_t n = 0;
    if (h)
        for (const qc_ingest *in = h->all; in; in = in->next) n++;
    return n;
}

void qc_ingest_hub_free(qc_ingest_hub *h) {
    if (!h) return;
    if (default_hub == h) default_hub = NULL;
    memset(&h->sink, 0, sizeof h->sink);
    for (qc_ingest *in = h->all; in; in = in->next) {
        if (in->track) {
            qc_track_abort(in->track); /* no callback after this */
            in->track = NULL;
            in->track_over = 1;
        }
    }
    /* Tracks still finishing (their connection has closed) may be told CLOSED while the
     * engine goes: their ingests free themselves then, unlinking from the list. */
    if (h->engine) qc_stt_engine_free(h->engine);
    qc_ingest *next;
    for (qc_ingest *in = h->all; in; in = next) {
        next = in->next;
        in->hub = NULL;
        in->track_over = 1; /* the engine is gone: nothing will call it back */
        in->prev = in->next = NULL;
        /* Connections still open are closed by the server's stop; their on_close frees them. */
        if (in->conn_over && !in->in_call) free(in);
    }
    qc_latency_detach();
    free(h);
}
