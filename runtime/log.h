/* One-line logs to stderr: `level component message key=value ...`, or JSON lines with
 * QC_LOG_FORMAT=json. While a loop runs, lines are buffered and flushed once per loop
 * iteration, so a busy server writes its access log in few syscalls. */
#ifndef QC_LOG_H
#define QC_LOG_H

#include <stddef.h>

typedef enum { QC_LOG_DEBUG, QC_LOG_INFO, QC_LOG_WARN, QC_LOG_ERROR } qc_log_level;

/* Reads QC_LOG_FORMAT and QC_LOG_LEVEL. */
void qc_log_init(void);

/* kv is a preformatted " key=value key=value" tail (may be NULL). */
void qc_log_line(qc_log_level level, const char *component, const char *message, const char *kv);

/* printf-style convenience: the format produces the key=value tail. */
void qc_log(qc_log_level level, const char *component, const char *message, const char *kvfmt, ...)
    __attribute__((format(printf, 4, 5)));

int qc_log_enabled(qc_log_level level);
qc_log_level qc_log_level_from_name(const char *name, int *ok);

/* Buffering: on while a loop runs; qc_log_flush writes out what is pending. */
void qc_log_set_buffered(int on);
void qc_log_flush(void);

#endif
