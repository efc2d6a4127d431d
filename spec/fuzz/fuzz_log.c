/* libFuzzer harness for JSON log lines (runtime/log.c): the key=value tail of a line is read
 * back into members, and its values come from outside (paths, error messages, event ids).
 * The input is component NUL message NUL tail, with a first byte choosing the level. Besides
 * the sanitizers: the line is one valid JSON object (UTF-8, no key twice) ending in a
 * newline, within QC_LOG_LINE_MAX; the text form of the same call is one line too. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "fuzz_common.h"
#include "json_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char in[3 * QC_LOG_LINE_MAX], line[QC_LOG_LINE_MAX];
    static json_check jc;
    if (size < 1 || size >= sizeof in) return 0;
    qc_log_level level = (qc_log_level)(data[0] & 3);
    memcpy(in, data + 1, size - 1);
    in[size - 1] = 0;
    /* Split at the first two NULs; a missing part is empty. */
    const char *comp = in, *msg = "", *kv = "";
    size_t at = strlen(in);
    if (at + 1 < size - 1) {
        msg = in + at + 1;
        size_t m = strlen(msg);
        if ((size_t)(msg - in) + m + 1 < size - 1) kv = msg + m + 1;
    }
    qc_log_set_json(1);
    size_t n = qc_log_format(line, level, comp, msg, kv);
    if (n > QC_LOG_LINE_MAX) fuzz_fail("line of %zu bytes", n);
    if (n < 2 || line[n - 1] != '\n' || line[n - 2] != '}') fuzz_fail("a JSON line that does not end in }\\n");
    if (memchr(line, '\n', n - 1)) fuzz_fail("a newline inside a JSON line");
    const char *why = json_check_object(&jc, line, n - 1);
    if (why) fuzz_fail("not one JSON object: %s: %.*s", why, (int)(n < 400 ? n : 400), line);

    qc_log_set_json(0);
    n = qc_log_format(line, level, comp, msg, kv);
    if (n > QC_LOG_LINE_MAX || n < 1 || line[n - 1] != '\n') fuzz_fail("text line of %zu bytes, or no newline", n);
    return 0;
}
