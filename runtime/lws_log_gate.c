/* Debian builds libwebsockets 4.1 with _DEBUG, so every log call down to the header parser's
 * per-byte trace is compiled in and reaches _lws_log, which lws filters only after the
 * variadic call: about a hundred calls and 4% of our instructions per request (callgrind).
 * This definition interposes on the library's (the binary exports its symbols with -Wl,-E,
 * and lws calls _lws_log through its PLT) and drops the levels we never print before any
 * of that work; the rest go on to lws' own _lws_logv. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>

#include <libwebsockets.h>

#include "http_server.h"

void _lws_log(int filter, const char *format, ...) {
    if (!(filter & QC_LWS_LOG_LEVELS)) return;
    va_list ap;
    va_start(ap, format);
    _lws_logv(filter, format, ap);
    va_end(ap);
}
