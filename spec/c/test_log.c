/* JSON log lines (runtime/log.c): the worst shapes of a key=value tail, each still one valid
 * JSON object with the fields it can make out, and the text-value quoting C callers use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#include "../fuzz/json_check.h"
#include "tap.h"

static char line[QC_LOG_LINE_MAX + 1];
static json_check jc;

/* Formats a JSON line for kv; 1 when it is one valid object ending in a newline. */
static int json_ok(const char *msg, const char *kv) {
    size_t n = qc_log_format(line, QC_LOG_INFO, "t", msg, kv);
    line[n] = 0;
    if (n > QC_LOG_LINE_MAX || n < 2 || line[n - 1] != '\n') return 0;
    const char *why = json_check_object(&jc, line, n - 1);
    if (why) printf("# %s: %.200s\n", why, line);
    return why == NULL;
}

static int has(const char *member) { return strstr(line, member) != NULL; }

int main(void) {
    qc_log_set_json(1);

    ok(json_ok("request", " method=GET path=/health status=200 duration_ms=0.12") && has("\"method\":\"GET\"") &&
           has("\"status\":200") && has("\"duration_ms\":0.12"),
       "the access log's fields are members, numbers as numbers");

    ok(json_ok("m", " error=\"he said \"hi\" there, path=/x\" n=1") &&
           has("\"error\":\"he said \\\"hi\\\" there, path=/x\"") && has("\"n\":1"),
       "a C caller's quoted value with bare quotes inside ends only where a field follows");

    ok(json_ok("m", " error=\"never closed n=1") && has("\"n\":1"), "an unterminated quote gives up at the next field");
    ok(json_ok("m", " free text here k=v") && has("\"text\":\"free text here\"") && has("\"k\":\"v\""),
       "text that is no field is kept, under text");
    ok(json_ok("m", " =v k= ==") && has("\"text\":\"=v\"") && has("\"k\":\" ==\""), "an empty key is text; a value runs on to the next field");
    ok(json_ok("m", " a=\"x\\\\\" b=\"\\x0\" c=\"\\x4g\" d=\"\\q\" e=\"tail\\\\"), "broken escapes");
    ok(json_ok("m", " v=007 w=1e5 x=-0 y=1. z=.5 t=true f=false n=null") && has("\"v\":\"007\"") &&
           has("\"w\":1e5") && has("\"x\":-0") && has("\"y\":\"1.\"") && has("\"z\":\".5\"") && has("\"t\":true") &&
           has("\"f\":false") && has("\"n\":\"null\""),
       "only JSON's own numbers and booleans go unquoted");
    ok(json_ok("m", " ts=1 level=2 component=3 msg=4 k=a k=b k_2=c") && has("\"ts_2\":1") && has("\"level_2\":2") &&
           has("\"component_2\":3") && has("\"msg_2\":4") && has("\"k\":\"a\"") && has("\"k_2\":\"b\"") &&
           has("\"k_2_2\":\"c\""),
       "reserved and repeated keys are renamed, never written twice");
    ok(json_ok("m", " u=\"\xff\xfe \xc3\x28 \xed\xa0\x80 \xf4\x90\x80\x80 ok\xc3\xa9\"") && has("ok\xc3\xa9"),
       "bytes that are not UTF-8 become U+FFFD");
    ok(json_ok("m\x01\x7f\"\\", " k\x01=v"), "control bytes in message and keys are escaped");

    /* Many fields: more than the key table holds, each renamed from the same key. */
    size_t cap = 6 * 5000 + 1;
    char *many = malloc(cap), *p = many;
    for (int i = 0; i < 5000; i++) p += sprintf(p, " a=%d", i % 10);
    ok(json_ok("m", many), "5000 fields with one key stay valid JSON");
    free(many);

    /* A tail of escapes that doubles in JSON, under a long message: cut between members. */
    char big[16384];
    p = big;
    for (int i = 0; i < 3; i++) {
        p += sprintf(p, " c%d=\"", i);
        for (int j = 0; j < 1000; j++) p += sprintf(p, "\\x01");
        *p++ = '"';
    }
    *p = 0;
    char *msg = malloc(24001);
    memset(msg, 'm', 24000);
    msg[24000] = 0;
    ok(json_ok(msg, big) && strlen(line) <= QC_LOG_LINE_MAX, "a line cut in its fields stays valid and within the limit");
    ok(has("...[line cut]"), "and says it was cut");
    memset(msg, 'm', 24000);
    ok(json_ok("m", msg) && has("\"text\":\"mmm"), "a 24000-byte bare word is kept");
    free(msg);

    /* The text value quoting C callers use for the start-up line. */
    char v[64];
    qc_log_value(v, sizeof v, "./data");
    ok(strcmp(v, "./data") == 0, "a plain value goes as it is");
    qc_log_value(v, sizeof v, "/srv/my data/\"x\"\n");
    ok(strcmp(v, "\"/srv/my data/\\\"x\\\"\\n\"") == 0, "a value with a space, quotes or newline is quoted and escaped");
    qc_log_value(v, 12, "a b c d e f g h i j");
    ok(strlen(v) < 12 && v[0] == '"' && v[strlen(v) - 1] == '"', "a value too long is cut, quotes kept");
    return failures ? 1 : 0;
}
