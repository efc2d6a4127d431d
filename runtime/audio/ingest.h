/* Ingest: one WebSocket connection carrying one track's PCM (LiveKit Track Egress, or any
 * source that sends s16le interleaved audio) glued to a qc_track, and the process's one STT
 * engine that every track shares. Per message nothing is allocated and no Lua runs: binary
 * messages go to qc_track_feed, a {"muted":...} text message sets the track's flag, anything
 * else closes that one connection with a reason. Results of every track reach one sink (the
 * qc.stt binding), with the track's identity. Knows nothing of Lua. Loop thread only. */
#ifndef QC_AUDIO_INGEST_H
#define QC_AUDIO_INGEST_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/http_server.h"
#include "stt/stt.h"

typedef struct qc_ingest_hub qc_ingest_hub;
typedef struct qc_ingest qc_ingest;

/* Limits of an ingest connection. A 10 ms Egress message is 1920 bytes; 64 KiB is 170 ms of
 * 48 kHz stereo, more than any sane source sends at once (larger: 1009). */
#define QC_INGEST_MAX_MESSAGE (64 * 1024)
/* Egress pings every 30 s and sends audio (silence when muted) all the time: a connection
 * quiet for this long is gone. */
#define QC_INGEST_IDLE_MS 90000

/* Who a track is, fixed when its connection is accepted. Strings are copied. */
typedef struct {
    const char *room, *identity, *role, *track;
    unsigned rate, channels;
    double clock_offset; /* seconds from the room's start (the interview clock's zero) to the connection */
} qc_ingest_info;

/* Where results go. info is the track's (valid during the call); times in r are on the
 * track's stream clock: add info->clock_offset for the interview clock. */
typedef struct {
    void (*on_result)(void *ud, const qc_ingest_info *info, const qc_stt_result *r);
    /* The track's STT stream changed state (FAILED with detail, CLOSED at the end). */
    void (*on_state)(void *ud, const qc_ingest_info *info, qc_stt_state state, const char *detail);
} qc_ingest_sink;

typedef struct {
    uint64_t tracks;       /* live tracks: connected, or finishing their last results */
    uint64_t connections;  /* open ingest connections */
    uint64_t accepted;     /* connections accepted since start */
    uint64_t bytes_in, frames_in, dropped; /* dropped: 16 kHz samples the STT streams refused */
    uint64_t closed_bad_input; /* connections closed for what they sent */
} qc_ingest_stats;

/* Makes the engine (QC_STT_ENGINE and its settings) and an empty hub. An engine that cannot
 * be made (no model, no key) is logged and kept as a failure: the server still serves, ingest
 * answers 503 and /health names the reason. NULL (out of memory) with err. */
qc_ingest_hub *qc_ingest_hub_new(uv_loop_t *loop, const qc_stt_config *stt, int resample_quality, char *err,
                                 size_t errlen);

/* The hub of this process (set by main.c for `serve`; NULL in scripts). */
void qc_ingest_hub_set_default(qc_ingest_hub *h);
qc_ingest_hub *qc_ingest_hub_default(void);

void qc_ingest_hub_set_sink(qc_ingest_hub *h, const qc_ingest_sink *sink, void *ud);

qc_stt_engine *qc_ingest_hub_engine(qc_ingest_hub *h);
/* Why the engine could not be made, or NULL when it runs; *name: the configured engine. */
const char *qc_ingest_hub_engine_error(const qc_ingest_hub *h, const char **name);
void qc_ingest_hub_stats(const qc_ingest_hub *h, qc_ingest_stats *out);

/* Accepts the upgrade on ex (the request has asked for a WebSocket) and starts the track.
 * On failure (the engine cannot open a stream, bad format) the exchange is answered with a
 * JSON error and -1 returned with err; when the client has already gone, 0 (nothing runs). */
int qc_ingest_start(qc_ingest_hub *h, qc_http_exchange *ex, const qc_ingest_info *info, char *err, size_t errlen);

/* Graceful stop, step one: every ingest connection is closed with 1001 "server stopping",
 * so its track finishes and its open utterance's final reaches the sink while the host is
 * still there. qc_ingest_hub_live says how many tracks have not finished yet. */
void qc_ingest_hub_stop(qc_ingest_hub *h);
size_t qc_ingest_hub_live(const qc_ingest_hub *h);

/* Server stop: results stop flowing to the sink (it may be gone next), every track is
 * aborted, open connections are left for the server to close, the engine is freed. The
 * loop must run on to release the engine's handles. NULL is a no-op. */
void qc_ingest_hub_free(qc_ingest_hub *h);

/* The text-message rule, apart for tests and fuzzing: 1 or 0 for {"muted":true|false}
 * (whitespace anywhere between tokens), -1 for anything else. */
int qc_ingest_parse_muted(const uint8_t *data, size_t len);

#endif
