/* quantcoach transcribe. Each file is a track fed from a timer on the loop, as much per turn
 * as its STT stream has room for: the engine sets the pace (the local engine decodes on
 * its workers while the files are read), and nothing is dropped. Finals are collected with
 * their speaker, sorted by start time across tracks and printed when every stream closed. */
#define _POSIX_C_SOURCE 200809L
#include "audio/transcribe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "audio/track.h"
#include "audio/wav.h"
#include "net/ws_client.h"
#include "stt/stt.h"

const char *qc_transcribe_help =
    "usage: quantcoach transcribe [--track ROLE=FILE.wav]... [FILE.wav]\n"
    "                             [--engine E] [--format text|json]\n"
    "                             [--evaluate [--evaluator E] [--policies DIR]]\n"
    "\n"
    "Runs WAV files (16-bit PCM, any rate, mono or stereo) through the live\n"
    "pipeline (downmix, speexdsp to 16 kHz, a speech-to-text engine), all on one\n"
    "clock from 0, and prints one transcript ordered by time.\n"
    "\n"
    "  --track ROLE=FILE   a speaker's audio, e.g. interviewer=a.wav (repeatable)\n"
    "  FILE                one file without a role: its speaker is \"Speaker\"\n"
    "  --engine E          local (pocketsphinx, the default from QC_STT_ENGINE),\n"
    "                      elevenlabs, or null: a sink that only counts the audio,\n"
    "                      for benchmarks (it prints no words)\n"
    "  --format F          text (default): lines \"[mm:ss] Interviewer: ...\";\n"
    "                      json: segments with speaker, times and words\n"
    "  --evaluate          then run the windows and evaluation policies over the\n"
    "                      transcript, as scripts/evaluate_room.lua --transcript\n"
    "                      does, and print that instead of the transcript: the\n"
    "                      Markdown report (--format text) or the windows with\n"
    "                      their evaluations and the report (--format json)\n"
    "  --evaluator E       with --evaluate: analytics, openai or anthropic\n"
    "                      (default: QC_EVALUATOR)\n"
    "  --policies DIR      with --evaluate: the policy directory to judge with\n"
    "\n"
    "Exit status: 0, 1 when a file cannot be read, the engine fails or (with\n"
    "--evaluate) an evaluation fails, 2 on a usage error.\n";

static int usage(const char *what, const char *arg) {
    fprintf(stderr, "quantcoach transcribe: %s%s (see quantcoach transcribe --help)\n", what, arg ? arg : "");
    return 2;
}

static int valid_role(const char *r, size_t n) {
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = r[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int qc_transcribe_parse(int argc, char **argv, qc_transcribe_opts *o) {
    memset(o, 0, sizeof *o);
    int bare = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            o->help = 1;
            continue;
        }
        if (strcmp(a, "--evaluate") == 0) {
            o->evaluate = 1;
            continue;
        }
        const char *names[] = {"--track", "--engine", "--format", "--evaluator", "--policies"};
        int k = -1;
        for (int j = 0; j < 5 && k < 0; j++) {
            size_t nl = strlen(names[j]);
            if (strcmp(a, names[j]) == 0) {
                if (i + 1 >= argc) return usage(names[j], " needs a value");
                val = argv[++i];
                k = j;
            } else if (strncmp(a, names[j], nl) == 0 && a[nl] == '=') {
                val = a + nl + 1;
                k = j;
            }
        }
        if (k < 0 && a[0] == '-' && a[1]) return usage("unknown option ", a);
        if (k < 0) {
            if (bare++) return usage("more than one bare file (name each with --track ROLE=FILE): ", a);
            val = a;
        }
        if (k == 1) {
            if (strcmp(val, "local") && strcmp(val, "elevenlabs") && strcmp(val, "null"))
                return usage("--engine: expected local, elevenlabs or null, got ", val);
            o->engine = val;
            continue;
        }
        if (k == 2) {
            if (strcmp(val, "text") == 0) o->json = 0;
            else if (strcmp(val, "json") == 0) o->json = 1;
            else return usage("--format: expected text or json, got ", val);
            continue;
        }
        if (k == 3) {
            if (strcmp(val, "analytics") && strcmp(val, "openai") && strcmp(val, "anthropic"))
                return usage("--evaluator: expected analytics, openai or anthropic, got ", val);
            o->evaluator = val;
            continue;
        }
        if (k == 4) {
            if (!val[0]) return usage("--policies: expected a directory, got an empty name", NULL);
            o->policies = val;
            continue;
        }
        if (o->ntracks == QC_TRANSCRIBE_MAX_TRACKS) return usage("too many tracks (at most 16)", NULL);
        if (k == 0) {
            const char *eq = strchr(val, '=');
            if (!eq || !valid_role(val, (size_t)(eq - val)) || !eq[1])
                return usage("--track: expected ROLE=FILE (ROLE of letters, digits, - and _), got ", val);
            o->role[o->ntracks] = val;
            o->file[o->ntracks] = eq + 1;
        } else {
            o->role[o->ntracks] = NULL;
            o->file[o->ntracks] = val;
        }
        o->ntracks++;
    }
    if (!o->help && o->ntracks == 0) return usage("no audio: give --track ROLE=FILE or a FILE", NULL);
    if (!o->evaluate && o->evaluator) return usage("--evaluator needs --evaluate", NULL);
    if (!o->evaluate && o->policies) return usage("--policies needs --evaluate", NULL);
    return 0;
}

/* ---- the run ------------------------------------------------------------------------- */

typedef struct {
    char *text;
    double start, end;
    qc_stt_word *words;
    size_t nwords;
    int track;
    unsigned partials; /* partials of the utterance before its final */
} segment;

typedef struct run run;

typedef struct {
    run *r;
    int index;
    char role[65];    /* as given, e.g. interviewer */
    char speaker[65]; /* as shown, e.g. Interviewer */
    const char *path;
    FILE *f;
    qc_wav_info wav;
    uint64_t left; /* bytes of samples not yet read */
    qc_track *t;
    int finished, closed;
    unsigned partials; /* since the last final */
} src;

struct run {
    uv_loop_t loop;
    uv_timer_t tick;
    qc_stt_engine *e;
    src s[QC_TRANSCRIBE_MAX_TRACKS];
    int n, open;
    segment *seg;
    size_t nseg, capseg;
    uint64_t partials;
    char failure[512];
};

static void on_result(void *ud, const qc_stt_result *res) {
    src *s = ud;
    run *r = s->r;
    if (!res->final) {
        r->partials++;
        s->partials++;
        return;
    }
    unsigned partials = s->partials;
    s->partials = 0;
    if (!res->text || !*res->text) return; /* it only took back a partial */
    if (r->nseg == r->capseg) {
        size_t cap = r->capseg ? 2 * r->capseg : 64;
        segment *g = realloc(r->seg, cap * sizeof *g);
        if (!g) return;
        r->seg = g;
        r->capseg = cap;
    }
    segment *g = &r->seg[r->nseg];
    g->text = strdup(res->text);
    g->words = res->nwords ? calloc(res->nwords, sizeof *g->words) : NULL;
    if (!g->text || (res->nwords && !g->words)) {
        free(g->text);
        free(g->words);
        return;
    }
    g->nwords = res->nwords;
    for (size_t i = 0; i < res->nwords; i++) {
        g->words[i] = res->words[i];
        g->words[i].text = strdup(res->words[i].text ? res->words[i].text : "");
    }
    g->start = res->start_s;
    g->end = res->end_s;
    g->track = s->index;
    g->partials = partials;
    r->nseg++;
}

static void stop_all(run *r);

static void on_state(void *ud, qc_stt_state st, const char *detail) {
    src *s = ud;
    run *r = s->r;
    if (st == QC_STT_CLOSED) {
        s->closed = 1;
        s->t = NULL; /* the track freed itself */
        /* The engine's own handles keep the loop alive: stop it when the last one closed. */
        if (--r->open == 0) {
            uv_timer_stop(&r->tick);
            uv_stop(&r->loop);
        }
    } else if (st == QC_STT_FAILED) {
        snprintf(r->failure, sizeof r->failure, "%s: speech-to-text failed: %s", s->path, detail ? detail : "");
        stop_all(r);
    }
}

static void stop_all(run *r) {
    uv_timer_stop(&r->tick);
    for (int i = 0; i < r->n; i++) {
        if (r->s[i].t) {
            qc_track_abort(r->s[i].t);
            r->s[i].t = NULL;
        }
    }
    r->open = 0;
    uv_stop(&r->loop);
}

/* Per turn and per track: what the stream has room for, at most a second of audio. */
static void feed(uv_timer_t *tm) {
    run *r = tm->data;
    static uint8_t buf[192000 * 2 * 2]; /* a second at the highest rate, stereo */
    for (int i = 0; i < r->n && !r->failure[0]; i++) {
        src *s = &r->s[i];
        if (!s->t || s->finished) continue;
        size_t fb = 2 * (size_t)s->wav.channels;
        size_t room = qc_track_room(s->t);
        /* Input frames that give at most room output samples, less a margin for speex's
         * rounding. */
        uint64_t frames = room == SIZE_MAX ? s->wav.rate : (uint64_t)room * s->wav.rate / QC_STT_RATE;
        frames = frames > 8 ? frames - 8 : 0;
        if (frames > s->wav.rate) frames = s->wav.rate;
        uint64_t want = frames * fb;
        if (want > sizeof buf) want = sizeof buf - sizeof buf % fb;
        if (want > s->left) want = s->left;
        if (want == 0 && s->left > 0) continue; /* wait for room */
        size_t got = want ? fread(buf, 1, (size_t)want, s->f) : 0;
        if (got < want && ferror(s->f)) {
            snprintf(r->failure, sizeof r->failure, "%s: read error: %s", s->path, strerror(errno));
            stop_all(r);
            return;
        }
        s->left -= got;
        if (got) qc_track_feed(s->t, buf, got);
        if (s->left == 0 || got < want) {
            s->finished = 1;
            qc_track_finish(s->t);
        }
    }
}

static int open_src(src *s, const char *path, char *err, size_t errlen) {
    s->path = path;
    s->f = fopen(path, "rb");
    if (!s->f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(s->f), &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        return -1;
    }
    static uint8_t head[1 << 16];
    size_t n = fread(head, 1, sizeof head, s->f);
    char why[256];
    if (qc_wav_parse(head, n, (uint64_t)st.st_size, &s->wav, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        return -1;
    }
    if (fseeko(s->f, (off_t)s->wav.data_offset, SEEK_SET) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    s->left = s->wav.data_bytes;
    if (s->wav.missing_bytes) {
        unsigned frame = 2 * s->wav.channels;
        double missing_s = (double)(s->wav.missing_bytes / frame) / s->wav.rate;
        fprintf(stderr, "quantcoach transcribe: warning: %s is %.2f s shorter than its header says (cut off?); "
                        "transcribing what is there\n", path, missing_s);
    }
    return 0;
}

static int by_time(const void *a, const void *b) {
    const segment *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return x->track - y->track; /* same start: the order the tracks were given */
}

static void json_str(FILE *out, const char *p) {
    fputc('"', out);
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c == '\n') fputs("\\n", out);
        else if (c < 0x20) fprintf(out, "\\u%04x", c);
        else fputc(c, out);
    }
    fputc('"', out);
}

static void print_text(FILE *out, const run *r) {
    for (size_t i = 0; i < r->nseg; i++) {
        const segment *g = &r->seg[i];
        long sec = (long)g->start;
        fprintf(out, "[%02ld:%02ld] %s: %s\n", sec / 60, sec % 60, r->s[g->track].speaker, g->text);
    }
}

static void print_json(FILE *out, const run *r, const char *engine) {
    fprintf(out, "{\"engine\":");
    json_str(out, engine);
    fprintf(out, ",\"tracks\":[");
    for (int i = 0; i < r->n; i++) {
        const src *s = &r->s[i];
        fprintf(out, "%s{\"role\":", i ? "," : "");
        json_str(out, s->role);
        fprintf(out, ",\"speaker\":");
        json_str(out, s->speaker);
        fprintf(out, ",\"file\":");
        json_str(out, s->path);
        fprintf(out, ",\"rate\":%u,\"channels\":%u,\"seconds\":%.3f}", s->wav.rate, s->wav.channels,
               (double)s->wav.data_bytes / (2.0 * s->wav.channels * s->wav.rate));
    }
    fprintf(out, "],\"partials\":%llu,\"segments\":[", (unsigned long long)r->partials);
    for (size_t i = 0; i < r->nseg; i++) {
        const segment *g = &r->seg[i];
        fprintf(out, "%s\n{\"role\":", i ? "," : "");
        json_str(out, r->s[g->track].role);
        fprintf(out, ",\"speaker\":");
        json_str(out, r->s[g->track].speaker);
        fprintf(out, ",\"start\":%.3f,\"end\":%.3f,\"partials\":%u,\"text\":", g->start, g->end, g->partials);
        json_str(out, g->text);
        fprintf(out, ",\"words\":[");
        for (size_t k = 0; k < g->nwords; k++) {
            fprintf(out, "%s{\"text\":", k ? "," : "");
            json_str(out, g->words[k].text);
            fprintf(out, ",\"start\":%.3f,\"end\":%.3f}", g->words[k].start_s, g->words[k].end_s);
        }
        fprintf(out, "]}");
    }
    fprintf(out, "]}\n");
}

static void walk_close(uv_handle_t *h, void *ud) {
    (void)ud;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

int qc_transcribe_run(const qc_transcribe_opts *o, const qc_config *cfg) {
    run *r = calloc(1, sizeof *r);
    if (!r) return fprintf(stderr, "quantcoach transcribe: out of memory\n"), 1;
    int rc = 0;
    char err[1024];
    uv_loop_init(&r->loop);
    const char *engine = o->engine ? o->engine : cfg->stt_engine;
    qc_stt_config sc = {.engine = engine,
                        .model_dir = cfg->stt_model,
                        .url = cfg->elevenlabs_url,
                        .api_key = cfg->elevenlabs_api_key,
                        .language = "en"};
    r->n = o->ntracks;
    for (int i = 0; i < r->n; i++) {
        src *s = &r->s[i];
        s->r = r;
        s->index = i;
        if (o->role[i]) snprintf(s->role, sizeof s->role, "%.*s", (int)(strchr(o->role[i], '=') - o->role[i]), o->role[i]);
        else snprintf(s->role, sizeof s->role, "speaker");
        memcpy(s->speaker, s->role, sizeof s->speaker);
        if (s->speaker[0] >= 'a' && s->speaker[0] <= 'z') s->speaker[0] = (char)(s->speaker[0] - 'a' + 'A');
        if (open_src(s, o->file[i], err, sizeof err) < 0) {
            fprintf(stderr, "quantcoach transcribe: %s\n", err);
            rc = 1;
            goto done;
        }
    }
    r->e = qc_stt_engine_new(&r->loop, &sc, err, sizeof err);
    if (!r->e) {
        fprintf(stderr, "quantcoach transcribe: %s engine: %s\n", engine, err);
        rc = 1;
        goto done;
    }
    static const qc_stt_callbacks cbs = {on_result, on_state};
    for (int i = 0; i < r->n; i++) {
        src *s = &r->s[i];
        s->t = qc_track_new(r->e, s->wav.rate, s->wav.channels, cfg->resample_quality, &cbs, s, err, sizeof err);
        if (!s->t) {
            fprintf(stderr, "quantcoach transcribe: %s: %s\n", s->path, err);
            stop_all(r);
            rc = 1;
            break;
        }
        r->open++;
    }
    uv_timer_init(&r->loop, &r->tick);
    r->tick.data = r;
    if (rc == 0) {
        uv_timer_start(&r->tick, feed, 0, 1);
        uv_run(&r->loop, UV_RUN_DEFAULT); /* ends when every stream closed and the timer stopped */
    }
    uv_close((uv_handle_t *)&r->tick, NULL);
    qc_stt_engine_free(r->e);
    r->e = NULL;
    if (rc == 0 && r->failure[0]) {
        fprintf(stderr, "quantcoach transcribe: %s\n", r->failure);
        rc = 1;
    }
    if (rc == 0) {
        if (r->nseg) qsort(r->seg, r->nseg, sizeof *r->seg, by_time);
        FILE *out = o->out ? o->out : stdout;
        if (o->json) print_json(out, r, engine);
        else print_text(out, r);
    }
done:
    if (r->e) qc_stt_engine_free(r->e);
    /* The ElevenLabs engine's lws context keeps handles on the loop until it is torn down:
     * without this the loop below never runs dry and transcribe never exits. */
    qc_ws_client_shutdown();
    uv_run(&r->loop, UV_RUN_DEFAULT);
    uv_walk(&r->loop, walk_close, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    uv_loop_close(&r->loop);
    for (int i = 0; i < r->n; i++)
        if (r->s[i].f) fclose(r->s[i].f);
    for (size_t i = 0; i < r->nseg; i++) {
        for (size_t k = 0; k < r->seg[i].nwords; k++) free((char *)r->seg[i].words[k].text);
        free(r->seg[i].words);
        free(r->seg[i].text);
    }
    free(r->seg);
    free(r);
    return rc;
}
