/* A small registry of Prometheus metrics (GET /metrics): counters, gauges and histograms with
 * fixed buckets, kept where their events happen (the HTTP server, the host, the STT path) and
 * rendered in the text exposition format 0.0.4. A series is found or made once (the one
 * allocation); adding to it or observing into it allocates nothing. Loop thread only. */
#ifndef QC_METRICS_H
#define QC_METRICS_H

#include <stddef.h>

typedef enum { QC_METRIC_COUNTER, QC_METRIC_GAUGE, QC_METRIC_HISTOGRAM } qc_metric_type;

typedef struct qc_metric_series qc_metric_series;

/* Most buckets a histogram may have (besides +Inf). */
#define QC_METRICS_MAX_BUCKETS 24

/* Declares a family; again with the same name returns the same id (its type must match).
 * `bounds` are a histogram's upper bounds, ascending. -1 on a bad name, type clash or no
 * memory. Names are [a-zA-Z_:][a-zA-Z0-9_:]*. */
int qc_metrics_family(const char *name, qc_metric_type type, const char *help, const double *bounds,
                      size_t nbounds);

/* The series of family `id` with these labels (`a="x",b="y"`, as `qc_metrics_label` writes
 * them; "" for none). Made on first use; NULL on a bad id or no memory. Past 2000 series in
 * one family, every new label set lands in one series labelled overflow="true", so a client
 * cannot grow the registry without bound. */
qc_metric_series *qc_metrics_series(int id, const char *labels);

void qc_metrics_add(qc_metric_series *s, double v);     /* counter (v >= 0) or gauge */
void qc_metrics_set(qc_metric_series *s, double v);     /* gauge */
void qc_metrics_observe(qc_metric_series *s, double v); /* histogram */
double qc_metrics_value(const qc_metric_series *s);     /* counter/gauge value, histogram count */

/* Appends `name="value"` to buf (with a comma first when buf is not empty), escaping \ " and
 * newline as the format asks. 0, or -1 when it does not fit (buf unchanged). */
int qc_metrics_label(char *buf, size_t cap, const char *name, const char *value);

/* The whole registry as exposition text, families in the order declared. A malloc'd,
 * NUL-terminated buffer the caller frees; NULL on no memory. */
char *qc_metrics_render(size_t *len);

/* The ones the core records itself, declared together by the first of them (the policy
 * load at start), so that a scrape shows each at 0 before its first event. */
void qc_metrics_http_request(const char *route, const char *method, int status, double seconds);
void qc_metrics_lua_error(int budget);    /* a Lua call ended in an error (budget: the time budget stopped it) */
void qc_metrics_reload(int loaded);       /* a policy load: loaded, or rejected */
void qc_metrics_final_latency(double s);  /* speech end -> final transcript */

/* Forgets every family (tests, shutdown). */
void qc_metrics_reset(void);

#endif
