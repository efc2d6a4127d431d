/* Speech-to-text: one interface, three engines (local pocketsphinx, ElevenLabs realtime, a
 * null sink that only counts). An engine is made once per process; a stream per track takes
 * 16 kHz mono s16 samples and reports partial and final results. Everything here is called
 * and calls back on the loop thread; an engine that works elsewhere (the local decoder on
 * libuv's thread pool) hands results back to the loop itself. Knows nothing of Lua. */
#ifndef QC_STT_H
#define QC_STT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define QC_STT_RATE 16000 /* every engine is fed 16 kHz mono s16 */

typedef struct qc_stt_engine qc_stt_engine;
typedef struct qc_stt_stream qc_stt_stream;

typedef struct {
    const char *text;
    double start_s, end_s; /* on the stream's clock: samples written before it / QC_STT_RATE */
} qc_stt_word;

typedef struct {
    int final;               /* 0: a partial (replaces the previous partial), 1: a final */
    const char *text;        /* UTF-8; a final may be "" (nothing was said) */
    double start_s, end_s;   /* on the stream's clock, as the words */
    const qc_stt_word *words;
    size_t nwords;
} qc_stt_result;

typedef enum {
    QC_STT_CONNECTING,   /* opening (a network engine) */
    QC_STT_READY,        /* taking audio */
    QC_STT_RECONNECTING, /* lost its connection; audio is kept and will be replayed */
    QC_STT_FAILED,       /* gave up: auth, quota, bad configuration. detail says why */
    QC_STT_CLOSED        /* after qc_stt_stream_finish: every result has been delivered */
} qc_stt_state;

typedef struct {
    /* A result; its memory is valid during the call only. */
    void (*on_result)(void *ud, const qc_stt_result *r);
    /* The stream's state changed. After QC_STT_CLOSED nothing more is called and the
     * stream is freed by the engine. */
    void (*on_state)(void *ud, qc_stt_state state, const char *detail);
} qc_stt_callbacks;

typedef struct {
    const char *engine;          /* "local", "elevenlabs", "null" */
    const char *model_dir;       /* local: pocketsphinx model directory */
    const char *url;             /* elevenlabs: realtime endpoint */
    const char *api_key;         /* elevenlabs */
    const char *language;        /* "en" */
    const char *spool_dir;       /* elevenlabs: where unacknowledged audio is spooled (NULL: TMPDIR, /tmp) */
} qc_stt_config;

/* Engine counters for /health, /metrics and benchmarks. */
typedef struct {
    const char *name;
    const char *state;          /* "ready", "degraded: <why>", "failed: <why>" */
    size_t streams;             /* open streams */
    uint64_t samples_in;        /* samples written, all streams */
    uint64_t results_final, results_partial;
    uint64_t reconnects;        /* network engines */
    double replayed_s;          /* audio sent again after reconnects, seconds */
    uint64_t dropped_samples;   /* refused because a stream's buffer was full */
} qc_stt_stats;

qc_stt_engine *qc_stt_engine_new(uv_loop_t *loop, const qc_stt_config *cfg, char *err, size_t errlen);

/* Opens a stream; callbacks run on the loop thread with ud, never from inside this call. The
 * stream is READY when it returns unless on_state later says otherwise (a network engine
 * reports CONNECTING, then READY). NULL with err on failure. */
qc_stt_stream *qc_stt_stream_open(qc_stt_engine *e, const qc_stt_callbacks *cb, void *ud, char *err,
                                  size_t errlen);

/* Hands n samples to the stream. No allocation: the samples are copied into the stream's
 * own bounded buffer. Returns how many were taken (fewer when the buffer is full: the rest
 * is counted as dropped). */
size_t qc_stt_stream_write(qc_stt_stream *s, const int16_t *samples, size_t n);

/* End of audio: the open utterance is closed and its final delivered, then on_state
 * reports QC_STT_CLOSED and the stream frees itself. Call once; no write after it. */
void qc_stt_stream_finish(qc_stt_stream *s);

/* Drops the stream without waiting for results: no callback is made after this returns. */
void qc_stt_stream_abort(qc_stt_stream *s);

/* Samples the stream's buffer can take now; SIZE_MAX when the engine does not bound it. A
 * producer that can wait (quantcoach transcribe) writes only what fits; a live one (ingest)
 * writes anyway and lets the excess count as dropped. */
size_t qc_stt_stream_room(const qc_stt_stream *s);

void qc_stt_engine_stats(const qc_stt_engine *e, qc_stt_stats *out);

/* Streams must be finished or aborted first; the loop must run on until the engine's
 * handles are closed (as with every other handle on it). */
void qc_stt_engine_free(qc_stt_engine *e);

/* Each engine's constructor, behind qc_stt_engine_new. An engine is a table of these
 * operations, so stt.c dispatches without knowing any engine. */
typedef struct {
    const char *name;
    qc_stt_stream *(*open)(qc_stt_engine *e, const qc_stt_callbacks *cb, void *ud, char *err, size_t errlen);
    size_t (*write)(qc_stt_stream *s, const int16_t *samples, size_t n);
    void (*finish)(qc_stt_stream *s);
    void (*abort)(qc_stt_stream *s);
    void (*stats)(const qc_stt_engine *e, qc_stt_stats *out);
    void (*free)(qc_stt_engine *e);
    size_t (*room)(const qc_stt_stream *s); /* optional (NULL: unbounded) */
} qc_stt_ops;

struct qc_stt_engine {
    const qc_stt_ops *ops; /* first member: each engine's own struct starts with this one */
};

/* Likewise every engine's stream struct starts with this one, so stt.c finds its ops. */
struct qc_stt_stream {
    const qc_stt_ops *ops;
};

qc_stt_engine *qc_stt_null_new(uv_loop_t *loop, const qc_stt_config *cfg, char *err, size_t errlen);
qc_stt_engine *qc_stt_local_new(uv_loop_t *loop, const qc_stt_config *cfg, char *err, size_t errlen);
qc_stt_engine *qc_stt_elevenlabs_new(uv_loop_t *loop, const qc_stt_config *cfg, char *err, size_t errlen);

#endif
