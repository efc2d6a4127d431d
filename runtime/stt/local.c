/* The local engine: pocketsphinx (Debian's 5prealpha) with its en-us model, no network.
 * Decoding runs on worker threads of the engine's own, never on the loop: the loop copies a
 * track's samples into the stream's bounded ring and returns; a worker takes a stream with
 * audio waiting, decodes it a chunk at a time and hands results back through a uv_async.
 * One decoder per stream (pocketsphinx decoders are not thread-safe), made on a worker the
 * first time the stream is decoded, so the model's loading never stalls the loop either. A
 * stream is decoded by one worker at a time; a stream with more audio goes to the back of
 * the queue after each chunk, so a long backlog on one track does not starve the others.
 * Utterances are cut by pocketsphinx's own voice activity detector (ps_get_in_speech), as
 * pocketsphinx_continuous cuts them: partials while one is open, a final with word times
 * when it closes. Times are on the stream's clock: pocketsphinx counts frames from
 * ps_start_stream, silences included. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pocketsphinx.h>
#include <sphinxbase/err.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "stt/stt.h"

/* Audio a stream may hold waiting for a worker: a decoder's first load and bursts fit, a
 * machine that cannot keep up drops (and counts) the rest rather than growing. */
#define RING_SAMPLES (15 * QC_STT_RATE)
/* The decoder is always given exactly this much (but at the end): utterances are cut at
 * chunk edges, so a chunk size that followed the timing of arrivals would make the words
 * depend on it. 2048 is what pocketsphinx_continuous reads; 128 ms of latency. A stream
 * is queued for a worker when a chunk is waiting (or at its finish): waking a worker per
 * 10 ms message would cost more than the decoding. */
#define CHUNK_SAMPLES 2048
/* Partials of an open utterance, at most one per this much audio. */
#define PARTIAL_EVERY (QC_STT_RATE / 2)
#define MAX_WORKERS 16

typedef struct local_stream local_stream;

typedef enum { MSG_RESULT, MSG_STATE, MSG_CLOSED, MSG_DEAD } msg_kind;

/* A worker's news for the loop, in one allocation with its strings and words. */
typedef struct msg {
    struct msg *next;
    local_stream *s;
    msg_kind kind;
    qc_stt_state state;
    qc_stt_result r;
    char *detail;
} msg;

typedef struct {
    qc_stt_engine base;
    uv_loop_t *loop;
    uv_async_t async;
    char hmm[1100], lm[1100], dict[1100];
    uv_mutex_t mu;
    uv_cond_t cv;
    uv_thread_t threads[MAX_WORKERS];
    int nthreads, stop;
    local_stream *runq_head, *runq_tail; /* streams with work, oldest first */
    msg *out_head, *out_tail;            /* for the loop, in order */
    /* counters: under mu */
    size_t streams;
    uint64_t samples_in, results_final, results_partial, dropped;
    char failure[1200]; /* the last decoder that could not be made */
    char state[1300];   /* what stats points to (stats is called on the loop only) */
} local_engine;

struct local_stream {
    qc_stt_stream base;
    local_engine *e;
    /* Loop thread only. */
    qc_stt_callbacks cb;
    void *ud;
    /* Under e->mu. */
    local_stream *next_run;
    int queued;    /* in the run queue or held by a worker */
    int finishing; /* no more audio: decode what is left, then close */
    int aborted;   /* the loop let go: free without a word */
    int closed;    /* CLOSED is on its way to the loop, which frees the stream */
    size_t head, count;
    int16_t *ring;
    /* The worker holding the stream only. */
    ps_decoder_t *ps;
    int failed, utt_open, in_utt_speech;
    uint64_t decoded;      /* samples given to the decoder */
    uint64_t last_partial; /* decoded when the last partial was taken */
    char *partial;         /* its text, to send only changes */
    int frate;
};

/* ---- messages to the loop ------------------------------------------------------------ */

static void post(local_engine *e, msg *m) {
    m->next = NULL;
    uv_mutex_lock(&e->mu);
    if (e->out_tail) e->out_tail->next = m;
    else e->out_head = m;
    e->out_tail = m;
    uv_mutex_unlock(&e->mu);
    uv_async_send(&e->async);
}

static void post_simple(local_stream *s, msg_kind kind, qc_stt_state state, const char *detail) {
    size_t dl = detail ? strlen(detail) + 1 : 0;
    msg *m = calloc(1, sizeof *m + dl);
    if (!m) abort(); /* a lost CLOSED would leak the stream and hang its owner */
    m->s = s;
    m->kind = kind;
    m->state = state;
    if (detail) {
        m->detail = (char *)(m + 1);
        memcpy(m->detail, detail, dl);
    }
    post(s->e, m);
}

/* pocketsphinx marks silences and fillers <s>, </s>, <sil>, [NOISE], ++GARBAGE++ and
 * alternate pronunciations word(2): none of that is a word to show. */
static size_t word_len(const char *w) {
    if (!w || !*w || w[0] == '<' || w[0] == '[' || w[0] == '+') return 0;
    const char *p = strchr(w, '(');
    return p ? (size_t)(p - w) : strlen(w);
}

/* Builds a result from the decoder's current best path (an utterance just ended, or the
 * partial of an open one). NULL when it holds no word and is not a final. */
static msg *hyp_msg(local_stream *s, int final) {
    double fr = s->frate > 0 ? s->frate : 100;
    size_t nwords = 0, chars = 0;
    for (ps_seg_t *it = ps_seg_iter(s->ps); it; it = ps_seg_next(it)) {
        size_t n = word_len(ps_seg_word(it));
        if (n) nwords++, chars += n + 1;
    }
    if (nwords == 0 && !final) return NULL;
    msg *m = calloc(1, sizeof *m + nwords * sizeof(qc_stt_word) + 2 * chars + 2);
    if (!m) return NULL; /* a lost partial is harmless; a lost final is logged by the caller */
    qc_stt_word *words = (qc_stt_word *)(m + 1);
    char *text = (char *)(words + nwords), *wtext = text + chars + 1, *tp = text;
    size_t i = 0;
    for (ps_seg_t *it = ps_seg_iter(s->ps); it; it = ps_seg_next(it)) {
        const char *w = ps_seg_word(it);
        size_t n = word_len(w);
        if (!n || i >= nwords) continue;
        int sf, ef;
        ps_seg_frames(it, &sf, &ef);
        memcpy(wtext, w, n);
        wtext[n] = 0;
        words[i].text = wtext;
        words[i].start_s = sf / fr;
        words[i].end_s = (ef + 1) / fr;
        wtext += n + 1;
        if (tp != text) *tp++ = ' ';
        memcpy(tp, w, n);
        tp += n;
        i++;
    }
    *tp = 0;
    m->kind = MSG_RESULT;
    m->s = s;
    m->r.final = final;
    m->r.text = text;
    m->r.words = nwords ? words : NULL;
    m->r.nwords = nwords;
    double now = (double)s->decoded / QC_STT_RATE;
    m->r.start_s = nwords ? words[0].start_s : now;
    m->r.end_s = nwords ? words[nwords - 1].end_s : now;
    return m;
}

static void end_utterance(local_stream *s) {
    ps_end_utt(s->ps);
    /* A final with no words is only worth sending to take back a partial. */
    if (s->partial) {
        msg *m = hyp_msg(s, 1);
        if (m) post(s->e, m);
    } else {
        msg *m = hyp_msg(s, 1);
        if (m && m->r.nwords) post(s->e, m);
        else free(m);
    }
    free(s->partial);
    s->partial = NULL;
    s->utt_open = 0;
}

static void maybe_partial(local_stream *s) {
    if (s->decoded - s->last_partial < PARTIAL_EVERY) return;
    s->last_partial = s->decoded;
    int32 score;
    const char *hyp = ps_get_hyp(s->ps, &score);
    if (!hyp || !*hyp || (s->partial && strcmp(hyp, s->partial) == 0)) return;
    char *copy = strdup(hyp);
    if (!copy) return;
    free(s->partial);
    s->partial = copy;
    msg *m = hyp_msg(s, 0);
    if (m) post(s->e, m);
}

/* ---- the decoder, on a worker -------------------------------------------------------- */

static int make_decoder(local_stream *s, char *err, size_t errlen) {
    local_engine *e = s->e;
    /* A config of its own: ps_init writes the model's feature parameters into it. */
    cmd_ln_t *c = cmd_ln_init(NULL, ps_args(), TRUE, "-hmm", e->hmm, "-lm", e->lm, "-dict", e->dict, NULL);
    if (!c) {
        snprintf(err, errlen, "pocketsphinx: bad configuration");
        return -1;
    }
    s->ps = ps_init(c);
    if (s->ps) s->frate = cmd_ln_int32_r(c, "-frate");
    cmd_ln_free_r(c); /* the decoder keeps its own reference */
    if (!s->ps) {
        snprintf(err, errlen, "pocketsphinx could not load the model in %s", e->hmm);
        return -1;
    }
    if (ps_start_stream(s->ps) < 0 || ps_start_utt(s->ps) < 0) {
        snprintf(err, errlen, "pocketsphinx could not start");
        ps_free(s->ps);
        s->ps = NULL;
        return -1;
    }
    return 0;
}

static void decode(local_stream *s, const int16_t *x, size_t n) {
    ps_process_raw(s->ps, x, n, FALSE, FALSE);
    s->decoded += n;
    int in_speech = ps_get_in_speech(s->ps);
    if (in_speech && !s->utt_open) {
        s->utt_open = 1;
        s->last_partial = s->decoded;
    }
    if (!in_speech && s->utt_open) {
        end_utterance(s);
        ps_start_utt(s->ps);
    } else if (s->utt_open) {
        maybe_partial(s);
    }
}

static void drop_decoder(local_stream *s) {
    if (s->ps) ps_free(s->ps);
    s->ps = NULL;
    free(s->partial);
    s->partial = NULL;
}

static void worker(void *arg) {
    local_engine *e = arg;
    int16_t buf[CHUNK_SAMPLES];
    uv_mutex_lock(&e->mu);
    for (;;) {
        while (!e->stop && !e->runq_head) uv_cond_wait(&e->cv, &e->mu);
        if (e->stop) break;
        local_stream *s = e->runq_head;
        e->runq_head = s->next_run;
        if (!e->runq_head) e->runq_tail = NULL;
        s->next_run = NULL;

        size_t n = 0;
        int aborted = s->aborted;
        if (!aborted) {
            n = s->count < CHUNK_SAMPLES ? (s->finishing ? s->count : 0) : CHUNK_SAMPLES;
            size_t first = RING_SAMPLES - s->head < n ? RING_SAMPLES - s->head : n;
            memcpy(buf, s->ring + s->head, first * sizeof *buf);
            memcpy(buf + first, s->ring, (n - first) * sizeof *buf);
            s->head = (s->head + n) % RING_SAMPLES;
            s->count -= n;
        }
        int last = s->finishing && s->count == 0;
        uv_mutex_unlock(&e->mu);

        if (aborted) {
            drop_decoder(s);
            post_simple(s, MSG_DEAD, QC_STT_CLOSED, NULL);
            uv_mutex_lock(&e->mu);
            continue;
        }
        if (!s->ps && !s->failed) {
            char err[1200];
            if (make_decoder(s, err, sizeof err) < 0) {
                s->failed = 1;
                uv_mutex_lock(&e->mu);
                snprintf(e->failure, sizeof e->failure, "%s", err);
                uv_mutex_unlock(&e->mu);
                post_simple(s, MSG_STATE, QC_STT_FAILED, err);
            }
        }
        if (s->ps && n) decode(s, buf, n);
        if (last) {
            if (s->ps && s->utt_open) end_utterance(s);
            else if (s->ps) ps_end_utt(s->ps);
            drop_decoder(s);
        }

        uv_mutex_lock(&e->mu);
        if (s->aborted) {
            /* Let go while we held it: the next turn frees it. */
            s->next_run = NULL;
            if (e->runq_tail) e->runq_tail->next_run = s;
            else e->runq_head = s;
            e->runq_tail = s;
        } else if (last) {
            s->queued = 0;
            s->closed = 1;
            uv_mutex_unlock(&e->mu);
            post_simple(s, MSG_CLOSED, QC_STT_CLOSED, NULL);
            uv_mutex_lock(&e->mu);
        } else if (s->count >= CHUNK_SAMPLES || s->finishing) {
            if (e->runq_tail) e->runq_tail->next_run = s;
            else e->runq_head = s;
            e->runq_tail = s;
        } else {
            s->queued = 0;
        }
    }
    uv_mutex_unlock(&e->mu);
}

/* ---- the loop side ------------------------------------------------------------------- */

static void free_stream(local_stream *s) {
    free(s->ring);
    free(s);
}

static void deliver(uv_async_t *a) {
    local_engine *e = a->data;
    uv_mutex_lock(&e->mu);
    msg *m = e->out_head;
    e->out_head = e->out_tail = NULL;
    uv_mutex_unlock(&e->mu);
    while (m) {
        msg *next = m->next;
        local_stream *s = m->s;
        int gone;
        uv_mutex_lock(&e->mu);
        gone = s->aborted;
        if (m->kind == MSG_RESULT && !gone) {
            if (m->r.final) e->results_final++;
            else e->results_partial++;
        }
        if (m->kind == MSG_CLOSED || m->kind == MSG_DEAD) e->streams--;
        uv_mutex_unlock(&e->mu);
        switch (m->kind) {
        case MSG_RESULT:
            if (!gone && s->cb.on_result) s->cb.on_result(s->ud, &m->r);
            break;
        case MSG_STATE:
            if (!gone && s->cb.on_state) s->cb.on_state(s->ud, m->state, m->detail);
            break;
        case MSG_CLOSED:
            if (!gone && s->cb.on_state) s->cb.on_state(s->ud, QC_STT_CLOSED, NULL);
            free_stream(s);
            break;
        case MSG_DEAD:
            free_stream(s);
            break;
        }
        free(m);
        m = next;
    }
}

/* Queues s for a worker; under e->mu. */
static void enqueue(local_engine *e, local_stream *s) {
    if (s->queued) return;
    s->queued = 1;
    s->next_run = NULL;
    if (e->runq_tail) e->runq_tail->next_run = s;
    else e->runq_head = s;
    e->runq_tail = s;
    uv_cond_signal(&e->cv);
}

static qc_stt_stream *l_open(qc_stt_engine *eng, const qc_stt_callbacks *cb, void *ud, char *err, size_t errlen);

static size_t l_write(qc_stt_stream *st, const int16_t *x, size_t n) {
    local_stream *s = (local_stream *)st;
    local_engine *e = s->e;
    uv_mutex_lock(&e->mu);
    size_t room = RING_SAMPLES - s->count, k = n < room ? n : room;
    size_t tail = (s->head + s->count) % RING_SAMPLES;
    size_t first = RING_SAMPLES - tail < k ? RING_SAMPLES - tail : k;
    memcpy(s->ring + tail, x, first * sizeof *x);
    memcpy(s->ring, x + first, (k - first) * sizeof *x);
    s->count += k;
    e->samples_in += k;
    e->dropped += n - k;
    if (s->count >= CHUNK_SAMPLES) enqueue(e, s);
    uv_mutex_unlock(&e->mu);
    return k;
}

static size_t l_room(const qc_stt_stream *st) {
    local_stream *s = (local_stream *)st;
    uv_mutex_lock(&s->e->mu);
    size_t room = RING_SAMPLES - s->count;
    uv_mutex_unlock(&s->e->mu);
    return room;
}

static void l_finish(qc_stt_stream *st) {
    local_stream *s = (local_stream *)st;
    uv_mutex_lock(&s->e->mu);
    s->finishing = 1;
    enqueue(s->e, s);
    uv_mutex_unlock(&s->e->mu);
}

static void l_abort(qc_stt_stream *st) {
    local_stream *s = (local_stream *)st;
    uv_mutex_lock(&s->e->mu);
    s->aborted = 1;
    /* Closed already: its CLOSED message frees it, without a callback now. */
    if (s->closed) {
        uv_mutex_unlock(&s->e->mu);
        return;
    }
    /* A worker frees the decoder (ps_free takes a while); the memory goes when its DEAD
     * message reaches the loop, after any result of the stream still queued for it. */
    enqueue(s->e, s);
    uv_mutex_unlock(&s->e->mu);
}

static void l_stats(const qc_stt_engine *eng, qc_stt_stats *out) {
    local_engine *e = (local_engine *)eng;
    char *state = e->state;
    uv_mutex_lock(&e->mu);
    out->name = "local";
    if (e->failure[0]) snprintf(state, sizeof e->state, "degraded: %s", e->failure);
    else snprintf(state, sizeof e->state, "ready");
    out->state = state;
    out->streams = e->streams;
    out->samples_in = e->samples_in;
    out->results_final = e->results_final;
    out->results_partial = e->results_partial;
    out->dropped_samples = e->dropped;
    uv_mutex_unlock(&e->mu);
}

static void engine_closed(uv_handle_t *h) {
    local_engine *e = h->data;
    uv_mutex_destroy(&e->mu);
    uv_cond_destroy(&e->cv);
    free(e);
}

static void stop_workers(local_engine *e) {
    uv_mutex_lock(&e->mu);
    e->stop = 1;
    uv_cond_broadcast(&e->cv);
    uv_mutex_unlock(&e->mu);
    for (int i = 0; i < e->nthreads; i++) uv_thread_join(&e->threads[i]);
    e->nthreads = 0;
}

static void l_free(qc_stt_engine *eng) {
    local_engine *e = (local_engine *)eng;
    stop_workers(e);
    /* What the workers said last and the loop has not read: nothing is listening now. */
    for (msg *m = e->out_head, *next; m; m = next) {
        next = m->next;
        if (m->kind == MSG_CLOSED || m->kind == MSG_DEAD) free_stream(m->s);
        free(m);
    }
    e->out_head = e->out_tail = NULL;
    /* Streams still waiting for a worker (an owner that did not wait for CLOSED). */
    for (local_stream *s = e->runq_head, *next; s; s = next) {
        next = s->next_run;
        drop_decoder(s);
        free_stream(s);
    }
    e->runq_head = e->runq_tail = NULL;
    uv_close((uv_handle_t *)&e->async, engine_closed);
}

static const qc_stt_ops local_ops = {
    .name = "local",
    .open = l_open,
    .write = l_write,
    .finish = l_finish,
    .abort = l_abort,
    .stats = l_stats,
    .free = l_free,
    .room = l_room,
};

static qc_stt_stream *l_open(qc_stt_engine *eng, const qc_stt_callbacks *cb, void *ud, char *err, size_t errlen) {
    local_engine *e = (local_engine *)eng;
    local_stream *s = calloc(1, sizeof *s);
    if (s) s->ring = malloc(RING_SAMPLES * sizeof *s->ring);
    if (!s || !s->ring) {
        if (s) free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base.ops = &local_ops;
    s->e = e;
    s->cb = *cb;
    s->ud = ud;
    uv_mutex_lock(&e->mu);
    e->streams++;
    uv_mutex_unlock(&e->mu);
    return &s->base;
}

static int is_file(const char *p, int dir) {
    struct stat st;
    return stat(p, &st) == 0 && (dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode));
}

qc_stt_engine *qc_stt_local_new(uv_loop_t *loop, const qc_stt_config *cfg, char *err, size_t errlen) {
    const char *dir = cfg->model_dir && *cfg->model_dir ? cfg->model_dir : "/usr/share/pocketsphinx/model/en-us";
    local_engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->base.ops = &local_ops;
    e->loop = loop;
    /* Debian's layout: DIR/en-us (acoustic model), DIR/en-us.lm.bin, DIR/cmudict-en-us.dict. */
    snprintf(e->hmm, sizeof e->hmm, "%s/en-us", dir);
    snprintf(e->lm, sizeof e->lm, "%s/en-us.lm.bin", dir);
    snprintf(e->dict, sizeof e->dict, "%s/cmudict-en-us.dict", dir);
    const char *missing = !is_file(e->hmm, 1) ? e->hmm : !is_file(e->lm, 0) ? e->lm : !is_file(e->dict, 0) ? e->dict : NULL;
    if (missing) {
        snprintf(err, errlen, "local STT model incomplete: %s not found (QC_STT_MODEL=%s; apt-get install pocketsphinx-en-us)",
                 missing, dir);
        free(e);
        return NULL;
    }
    /* pocketsphinx logs pages at every decoder it makes; its logger is process-wide, so it is
     * silenced once here, before any worker runs. */
    err_set_logfp(NULL);
    if (uv_mutex_init(&e->mu) || uv_cond_init(&e->cv)) {
        snprintf(err, errlen, "could not make a mutex");
        free(e);
        return NULL;
    }
    uv_async_init(loop, &e->async, deliver);
    e->async.data = e;
    /* As many workers as cores: decoding is CPU-bound, and the loop needs little. */
    unsigned n = uv_available_parallelism();
    if (n < 1) n = 1;
    if (n > MAX_WORKERS) n = MAX_WORKERS;
    for (unsigned i = 0; i < n; i++) {
        if (uv_thread_create(&e->threads[i], worker, e) != 0) break;
        e->nthreads++;
    }
    if (e->nthreads == 0) {
        snprintf(err, errlen, "could not start a decoding thread");
        uv_close((uv_handle_t *)&e->async, engine_closed);
        return NULL;
    }
    return &e->base;
}
