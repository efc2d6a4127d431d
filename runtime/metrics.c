/* The metrics registry (metrics.h): families in an array, each with its series in an array
 * found by label string. Few families, tens of series each: a linear scan costs less than a
 * hash table would to keep. */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include "metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FAMILIES 128
#define MAX_SERIES 2000

struct qc_metric_series {
    char *labels;
    size_t family;
    double value; /* counter, gauge; histogram: sum */
    uint64_t count;
    uint64_t buckets[QC_METRICS_MAX_BUCKETS + 1]; /* per bucket, not cumulative; last: +Inf */
};

typedef struct {
    char *name, *help;
    qc_metric_type type;
    double bounds[QC_METRICS_MAX_BUCKETS];
    size_t nbounds;
    qc_metric_series **series;
    size_t nseries, cap;
} family;

static family families[MAX_FAMILIES];
static size_t nfamilies;
static unsigned epoch; /* bumped by reset: ids cached by callers are stale after it */

static int name_ok(const char *n) {
    if (!n || !*n) return 0;
    for (const char *p = n; *p; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':';
        if (!alpha && !(p > n && *p >= '0' && *p <= '9')) return 0;
    }
    return 1;
}

int qc_metrics_family(const char *name, qc_metric_type type, const char *help, const double *bounds,
                      size_t nbounds) {
    if (!name_ok(name)) return -1;
    for (size_t i = 0; i < nfamilies; i++)
        if (strcmp(families[i].name, name) == 0) return families[i].type == type ? (int)i : -1;
    if (nfamilies == MAX_FAMILIES || nbounds > QC_METRICS_MAX_BUCKETS) return -1;
    if (type == QC_METRIC_HISTOGRAM) {
        for (size_t i = 0; i < nbounds; i++)
            if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) return -1;
    }
    family *f = &families[nfamilies];
    memset(f, 0, sizeof *f);
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    if (!f->name || !f->help) {
        free(f->name);
        free(f->help);
        return -1;
    }
    f->type = type;
    if (type == QC_METRIC_HISTOGRAM) {
        memcpy(f->bounds, bounds, nbounds * sizeof *bounds);
        f->nbounds = nbounds;
    }
    return (int)nfamilies++;
}

static qc_metric_series *series_new(family *f, const char *labels) {
    if (f->nseries == f->cap) {
        size_t c = f->cap ? f->cap * 2 : 8;
        qc_metric_series **n = realloc(f->series, c * sizeof *n);
        if (!n) return NULL;
        f->series = n;
        f->cap = c;
    }
    qc_metric_series *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->family = (size_t)(f - families);
    s->labels = strdup(labels);
    if (!s->labels) {
        free(s);
        return NULL;
    }
    f->series[f->nseries++] = s;
    return s;
}

qc_metric_series *qc_metrics_series(int id, const char *labels) {
    if (id < 0 || (size_t)id >= nfamilies) return NULL;
    family *f = &families[id];
    if (!labels) labels = "";
    for (size_t i = 0; i < f->nseries; i++)
        if (strcmp(f->series[i]->labels, labels) == 0) return f->series[i];
    if (f->nseries >= MAX_SERIES) {
        static const char overflow[] = "overflow=\"true\"";
        for (size_t i = 0; i < f->nseries; i++)
            if (strcmp(f->series[i]->labels, overflow) == 0) return f->series[i];
        return series_new(f, overflow);
    }
    return series_new(f, labels);
}

void qc_metrics_add(qc_metric_series *s, double v) {
    if (s) s->value += v;
}

void qc_metrics_set(qc_metric_series *s, double v) {
    if (s) s->value = v;
}

void qc_metrics_observe(qc_metric_series *s, double v) {
    if (!s || families[s->family].type != QC_METRIC_HISTOGRAM) return;
    const family *f = &families[s->family];
    size_t b = 0;
    while (b < f->nbounds && !(v <= f->bounds[b])) b++; /* NaN lands in +Inf */
    s->buckets[b]++;
    s->count++;
    s->value += v;
}

double qc_metrics_value(const qc_metric_series *s) {
    if (!s) return 0;
    return families[s->family].type == QC_METRIC_HISTOGRAM ? (double)s->count : s->value;
}

int qc_metrics_label(char *buf, size_t cap, const char *name, const char *value) {
    size_t len = strlen(buf), o = len;
    if (!name_ok(name)) return -1;
#define PUT(c)                     \
    do {                           \
        if (o + 1 >= cap) goto full; \
        buf[o++] = (c);            \
    } while (0)
    if (len) PUT(',');
    for (const char *p = name; *p; p++) PUT(*p);
    PUT('=');
    PUT('"');
    for (const char *p = value ? value : ""; *p; p++) {
        if (*p == '\\' || *p == '"') {
            PUT('\\');
            PUT(*p);
        } else if (*p == '\n') {
            PUT('\\');
            PUT('n');
        } else {
            PUT(*p);
        }
    }
    PUT('"');
#undef PUT
    buf[o] = 0;
    return 0;
full:
    buf[len] = 0;
    return -1;
}

typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t c = b->cap * 2 + (size_t)n;
        char *np = realloc(b->p, c);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = c;
    }
}

/* A sample value: integers without a fraction, the rest to 17 digits (round-trips). */
static void sb_number(sbuf *b, double v) {
    if (isnan(v)) sb_printf(b, "NaN");
    else if (isinf(v)) sb_printf(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0) sb_printf(b, "%.0f", v);
    else {
        /* The shortest of 15 to 17 digits that reads back as v: 0.005, not 0.0050000000000000001. */
        char t[40];
        for (int digits = 15; digits <= 17; digits++) {
            snprintf(t, sizeof t, "%.*g", digits, v);
            if (strtod(t, NULL) == v) break;
        }
        sb_printf(b, "%s", t);
    }
}

static void sb_help(sbuf *b, const char *help) {
    for (const char *p = help; *p; p++) {
        if (*p == '\\') sb_printf(b, "\\\\");
        else if (*p == '\n') sb_printf(b, "\\n");
        else sb_printf(b, "%c", *p);
    }
}

char *qc_metrics_render(size_t *len) {
    static const char *types[] = {"counter", "gauge", "histogram"};
    sbuf b = {malloc(4096), 0, 4096, 0};
    if (!b.p) return NULL;
    b.p[0] = 0;
    for (size_t i = 0; i < nfamilies; i++) {
        family *f = &families[i];
        sb_printf(&b, "# HELP %s ", f->name);
        sb_help(&b, f->help);
        sb_printf(&b, "\n# TYPE %s %s\n", f->name, types[f->type]);
        for (size_t j = 0; j < f->nseries; j++) {
            qc_metric_series *s = f->series[j];
            const char *sep = s->labels[0] ? "," : "";
            if (f->type != QC_METRIC_HISTOGRAM) {
                if (s->labels[0]) sb_printf(&b, "%s{%s} ", f->name, s->labels);
                else sb_printf(&b, "%s ", f->name);
                sb_number(&b, s->value);
                sb_printf(&b, "\n");
                continue;
            }
            uint64_t cum = 0;
            for (size_t k = 0; k < f->nbounds; k++) {
                cum += s->buckets[k];
                sb_printf(&b, "%s_bucket{%s%sle=\"", f->name, s->labels, sep);
                sb_number(&b, f->bounds[k]);
                sb_printf(&b, "\"} %llu\n", (unsigned long long)cum);
            }
            sb_printf(&b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", f->name, s->labels, sep,
                      (unsigned long long)s->count);
            if (s->labels[0]) sb_printf(&b, "%s_sum{%s} ", f->name, s->labels);
            else sb_printf(&b, "%s_sum ", f->name);
            sb_number(&b, s->value);
            if (s->labels[0]) sb_printf(&b, "\n%s_count{%s} %llu\n", f->name, s->labels, (unsigned long long)s->count);
            else sb_printf(&b, "\n%s_count %llu\n", f->name, (unsigned long long)s->count);
        }
    }
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    if (len) *len = b.len;
    return b.p;
}

/* ---- the core's own metrics ------------------------------------------------------------ */

static const double LATENCY_BOUNDS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                        0.25,  0.5,    1,     2.5,  5,     10};
static const double FINAL_BOUNDS[] = {0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30};

enum { M_HTTP_TOTAL, M_HTTP_SECONDS, M_LUA_ERRORS, M_RELOADS, M_FINAL_LATENCY, M_CORE };
static int core[M_CORE];
static unsigned core_epoch = (unsigned)-1;

/* Declared together, so each shows in the first scrape (at 0) before its first event. */
static int core_id(int which) {
    if (core_epoch != epoch) {
        core_epoch = epoch;
        core[M_HTTP_TOTAL] = qc_metrics_family("qc_http_requests_total", QC_METRIC_COUNTER,
                                               "HTTP requests answered, by route pattern, method and status", NULL, 0);
        core[M_HTTP_SECONDS] = qc_metrics_family(
            "qc_http_request_duration_seconds", QC_METRIC_HISTOGRAM,
            "Time from a request's first byte to its answer, by route pattern and method", LATENCY_BOUNDS,
            sizeof LATENCY_BOUNDS / sizeof *LATENCY_BOUNDS);
        core[M_LUA_ERRORS] = qc_metrics_family(
            "qc_lua_errors_total", QC_METRIC_COUNTER,
            "Lua calls (handlers, tasks) that ended in an error, by kind (error; budget: stopped by the time budget)",
            NULL, 0);
        qc_metrics_series(core[M_LUA_ERRORS], "kind=\"error\"");
        qc_metrics_series(core[M_LUA_ERRORS], "kind=\"budget\"");
        core[M_RELOADS] = qc_metrics_family("qc_policy_reloads_total", QC_METRIC_COUNTER,
                                            "Policy loads (start and reloads), by outcome (loaded, rejected)", NULL, 0);
        qc_metrics_series(core[M_RELOADS], "outcome=\"loaded\"");
        qc_metrics_series(core[M_RELOADS], "outcome=\"rejected\"");
        core[M_FINAL_LATENCY] = qc_metrics_family(
            "qc_stt_final_latency_seconds", QC_METRIC_HISTOGRAM,
            "Time from the end of an utterance's last word arriving on an ingest track to its final transcript",
            FINAL_BOUNDS, sizeof FINAL_BOUNDS / sizeof *FINAL_BOUNDS);
        qc_metrics_series(core[M_FINAL_LATENCY], "");
    }
    return core[which];
}

void qc_metrics_http_request(const char *route, const char *method, int status, double seconds) {
    char labels[256] = "", code[8];
    snprintf(code, sizeof code, "%d", status);
    /* A route too long for the buffer leaves the labels without it: still counted. */
    qc_metrics_label(labels, sizeof labels, "route", route && *route ? route : "unmatched");
    qc_metrics_label(labels, sizeof labels, "method", method);
    char hl[256];
    memcpy(hl, labels, sizeof hl);
    qc_metrics_label(labels, sizeof labels, "status", code);
    qc_metrics_add(qc_metrics_series(core_id(M_HTTP_TOTAL), labels), 1);
    qc_metrics_observe(qc_metrics_series(core_id(M_HTTP_SECONDS), hl), seconds);
}

void qc_metrics_lua_error(int budget) {
    qc_metrics_add(qc_metrics_series(core_id(M_LUA_ERRORS), budget ? "kind=\"budget\"" : "kind=\"error\""), 1);
}

void qc_metrics_reload(int loaded) {
    qc_metrics_add(qc_metrics_series(core_id(M_RELOADS), loaded ? "outcome=\"loaded\"" : "outcome=\"rejected\""), 1);
}

void qc_metrics_final_latency(double seconds) {
    qc_metrics_observe(qc_metrics_series(core_id(M_FINAL_LATENCY), ""), seconds);
}

void qc_metrics_reset(void) {
    for (size_t i = 0; i < nfamilies; i++) {
        for (size_t j = 0; j < families[i].nseries; j++) {
            free(families[i].series[j]->labels);
            free(families[i].series[j]);
        }
        free(families[i].series);
        free(families[i].name);
        free(families[i].help);
    }
    nfamilies = 0;
    epoch++;
}
