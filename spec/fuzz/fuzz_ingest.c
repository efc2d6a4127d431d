/* libFuzzer harness for the ingest's text-message rule (runtime/audio/ingest.c,
 * qc_ingest_parse_muted). Two properties besides the sanitizers: whatever it accepts is
 * {"muted":true|false} once the whitespace is taken out, with the value it returned; and the
 * canonical message with whitespace from the input put between its tokens is accepted. */
#define _POSIX_C_SOURCE 200809L /* uv.h, through ingest.h, needs pthread_rwlock_t */
#include <string.h>

#include "audio/ingest.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int v = qc_ingest_parse_muted(data, size);
    if (v != -1 && v != 0 && v != 1) fuzz_fail("returned %d", v);
    if (v >= 0) {
        char bare[32];
        size_t n = 0;
        for (size_t i = 0; i < size; i++) {
            if (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n') continue;
            if (n == sizeof bare - 1) fuzz_fail("accepted a message longer than the rule allows");
            bare[n++] = (char)data[i];
        }
        bare[n] = 0;
        if (strcmp(bare, v ? "{\"muted\":true}" : "{\"muted\":false}") != 0) fuzz_fail("accepted %s as %d", bare, v);
    }
    /* The tokens with whitespace between them, drawn from the input. */
    static const char *tokens[] = {"{", "\"muted\"", ":", "true", "}"};
    static const char ws[] = " \t\r\n";
    uint8_t msg[256];
    size_t m = 0, k = 0;
    for (int t = 0; t < 5; t++) {
        size_t spaces = k < size ? data[k++] % 4 : 0;
        for (size_t j = 0; j < spaces; j++) msg[m++] = (uint8_t)ws[(k < size ? data[k++] : j) % 4];
        memcpy(msg + m, tokens[t], strlen(tokens[t]));
        m += strlen(tokens[t]);
    }
    if (qc_ingest_parse_muted(msg, m) != 1) fuzz_fail("refused a well-formed message with whitespace");
    return 0;
}
