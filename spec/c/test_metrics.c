/* The metrics registry: series by label set, histogram buckets (cumulative in the text, +Inf
 * equal to the count), label escaping, the exposition text, and the cap on series. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#include "tap.h"

static int has(const char *text, const char *line) { return strstr(text, line) != NULL; }

int main(void) {
    int c = qc_metrics_family("t_events_total", QC_METRIC_COUNTER, "Events\nby kind \\ x", NULL, 0);
    ok(c >= 0, "a counter family");
    ok(qc_metrics_family("t_events_total", QC_METRIC_COUNTER, "other", NULL, 0) == c, "declared again: same id");
    ok(qc_metrics_family("t_events_total", QC_METRIC_GAUGE, "", NULL, 0) < 0, "a type clash is refused");
    ok(qc_metrics_family("9bad", QC_METRIC_GAUGE, "", NULL, 0) < 0, "a bad name is refused");
    double bad_bounds[] = {1, 0.5};
    ok(qc_metrics_family("t_bad", QC_METRIC_HISTOGRAM, "", bad_bounds, 2) < 0, "bounds must ascend");

    char labels[64] = "";
    ok(qc_metrics_label(labels, sizeof labels, "kind", "a\"b\\c\nd") == 0, "a label");
    ok(strcmp(labels, "kind=\"a\\\"b\\\\c\\nd\"") == 0, "escaped as the format says");
    char tiny[8] = "";
    ok(qc_metrics_label(tiny, sizeof tiny, "kind", "long value") == -1 && tiny[0] == 0, "too long: unchanged");

    qc_metric_series *a = qc_metrics_series(c, labels);
    qc_metrics_add(a, 2);
    qc_metrics_add(qc_metrics_series(c, labels), 1);
    ok(qc_metrics_value(a) == 3, "one label set is one series");

    double bounds[] = {0.1, 0.5, 1};
    int h = qc_metrics_family("t_seconds", QC_METRIC_HISTOGRAM, "Seconds", bounds, 3);
    qc_metric_series *hs = qc_metrics_series(h, "");
    qc_metrics_observe(hs, 0.05);
    qc_metrics_observe(hs, 0.1); /* on a bound: in that bucket (le) */
    qc_metrics_observe(hs, 0.7);
    qc_metrics_observe(hs, 5);
    ok(qc_metrics_value(hs) == 4, "a histogram counts its observations");

    int g = qc_metrics_family("t_level", QC_METRIC_GAUGE, "Level", NULL, 0);
    qc_metrics_set(qc_metrics_series(g, ""), -1.5);

    size_t len;
    char *text = qc_metrics_render(&len);
    ok(text && strlen(text) == len, "rendered");
    ok(has(text, "# HELP t_events_total Events\\nby kind \\\\ x\n# TYPE t_events_total counter\n"), "HELP escaped, TYPE");
    ok(has(text, "t_events_total{kind=\"a\\\"b\\\\c\\nd\"} 3\n"), "a counter sample");
    ok(has(text, "t_seconds_bucket{le=\"0.1\"} 2\n"), "bucket 0.1 holds 0.05 and 0.1");
    ok(has(text, "t_seconds_bucket{le=\"0.5\"} 2\n"), "buckets are cumulative");
    ok(has(text, "t_seconds_bucket{le=\"1\"} 3\n"), "bucket 1");
    ok(has(text, "t_seconds_bucket{le=\"+Inf\"} 4\n"), "+Inf is the count");
    ok(has(text, "t_seconds_sum 5.8499999999999996\n") || has(text, "t_seconds_sum 5.85\n"), "the sum");
    ok(has(text, "t_seconds_count 4\n"), "the count");
    ok(has(text, "t_level -1.5\n"), "a gauge");
    free(text);

    /* A client cannot grow the registry: past the cap, new label sets share one series. */
    int many = qc_metrics_family("t_many_total", QC_METRIC_COUNTER, "", NULL, 0);
    qc_metric_series *first_over = NULL;
    for (int i = 0; i < 2100; i++) {
        char l[64] = "", v[16];
        snprintf(v, sizeof v, "%d", i);
        qc_metrics_label(l, sizeof l, "n", v);
        qc_metric_series *s = qc_metrics_series(many, l);
        qc_metrics_add(s, 1);
        if (i == 2050) first_over = s;
    }
    text = qc_metrics_render(&len);
    ok(has(text, "t_many_total{overflow=\"true\"} 100\n"), "past 2000 series: one overflow series");
    ok(first_over && qc_metrics_value(first_over) == 100, "and the late label sets land in it");
    free(text);

    qc_metrics_http_request("/rooms/{room}", "GET", 200, 0.003);
    text = qc_metrics_render(&len);
    ok(has(text, "qc_http_requests_total{route=\"/rooms/{room}\",method=\"GET\",status=\"200\"} 1\n"), "a request");
    ok(has(text, "qc_lua_errors_total{kind=\"budget\"} 0\n"), "the core's families come together, at 0");
    free(text);
    qc_metrics_reset();
    text = qc_metrics_render(&len);
    ok(text && len == 0, "reset empties it");
    free(text);
    qc_metrics_http_request(NULL, "GET", 404, 0.001);
    text = qc_metrics_render(&len);
    ok(has(text, "route=\"unmatched\""), "after a reset, the core's families come back");
    free(text);
    qc_metrics_reset();
    return failures ? 1 : 0;
}
