/* One-line logs to stderr: `level component message key=value ...`, or JSON lines with
 * QC_LOG_FORMAT=json. While a loop runs, lines are buffered and flushed once per loop
 * iteration, so a busy server writes its access log in few syscalls. */
#ifndef QC_LOG_H
#define QC_LOG_H

#include <stddef.h>

typedef enum { QC_LOG_DEBUG, QC_LOG_INFO, QC_LOG_WARN, QC_LOG_ERROR } qc_log_level;

/* Limits, so a log call never allocates and never writes a line without bound:
 *  - a field value (qc.log) longer than QC_LOG_VALUE_MAX bytes is written cut, ending in
 *    `...[cut, N bytes]` with N its full length;
 *  - the fields of one line take at most QC_LOG_FIELDS_MAX bytes; fields past that are
 *    left out and counted in a last field `fields_cut=K`;
 *  - a line longer than QC_LOG_LINE_MAX ends in `...[line cut]` (JSON lines stay valid). */
#define QC_LOG_VALUE_MAX 4096
#define QC_LOG_FIELDS_MAX 16384
#define QC_LOG_LINE_MAX 32768

/* Reads QC_LOG_FORMAT (text, json) and QC_LOG_LEVEL (debug, info, warn, error; any case).
 * Unset or empty means the default. -1 with a message naming the variable and the allowed
 * values on anything else, and the settings are left as they were. */
int qc_log_init(char *err, size_t errlen);

/* kv is a preformatted " key=value key=value" tail (may be NULL). */
void qc_log_line(qc_log_level level, const char *component, const char *message, const char *kv);

/* Formats the line qc_log_line would write (newline included) into line, which holds
 * QC_LOG_LINE_MAX bytes; returns its length. For the fuzz harness and tests. */
size_t qc_log_format(char *line, qc_log_level level, const char *component, const char *message, const char *kv);

/* printf-style convenience: the format produces the key=value tail. */
void qc_log(qc_log_level level, const char *component, const char *message, const char *kvfmt, ...)
    __attribute__((format(printf, 4, 5)));

int qc_log_enabled(qc_log_level level);

/* With QC_LOG_FORMAT=json, a line is one object: {"ts","level","component","msg"} and then
 * each key=value field of the tail as a member of its own. An unquoted value that reads as
 * a JSON number or true/false is written as one; anything else is a string. A key already
 * used (one of the four above, or a repeat) gets `_2`, `_3`, ... appended. */
int qc_log_is_json(void);
void qc_log_set_json(int on); /* tests and the fuzz harness; QC_LOG_FORMAT otherwise */

/* Writes v into out as a field value of a text line: as it is, or quoted and escaped when
 * it holds a space, `"`, `=` or a control byte (the rules qc.log follows). Cut to fit cap;
 * returns the length written. */
size_t qc_log_value(char *out, size_t cap, const char *v);

/* Would the unquoted value s[0..n) be taken as a JSON number or boolean? (bindings/log.c
 * quotes a Lua string that would, so that it stays a string.) */
int qc_log_json_literal(const char *s, size_t n);
qc_log_level qc_log_level_from_name(const char *name, int *ok);

/* Buffering: on while a loop runs; qc_log_flush writes out what is pending. */
void qc_log_set_buffered(int on);
void qc_log_flush(void);

#endif
