/* runtime/audio/ingest.c's text-message rule, at its worst shapes: exactly {"muted":true} or
 * {"muted":false}, whitespace anywhere between the tokens, nothing else (a truncated one, a
 * NUL inside, trailing bytes, another key, a nested or repeated one, a string value, a
 * megabyte of whitespace). TAP output. */
#define _POSIX_C_SOURCE 200809L
#include "audio/ingest.h"

#include <stdlib.h>
#include <string.h>

#include "tap.h"

static int parse(const char *s) { return qc_ingest_parse_muted((const uint8_t *)s, strlen(s)); }

int main(void) {
    ok(parse("{\"muted\":true}") == 1, "muted true");
    ok(parse("{\"muted\":false}") == 0, "muted false");
    ok(parse(" \t\r\n{ \"muted\" :\n true } \n") == 1, "whitespace between every token");
    ok(parse("") == -1, "empty");
    ok(parse("{") == -1, "an opening brace alone");
    ok(parse("{\"muted\":tru") == -1, "truncated in the value");
    ok(parse("{\"muted\":true") == -1, "no closing brace");
    ok(parse("{\"muted\":true}x") == -1, "a byte after the object");
    ok(parse("{\"muted\":true}{\"muted\":true}") == -1, "two objects");
    ok(parse("{\"muted\":\"true\"}") == -1, "the value as a string");
    ok(parse("{\"muted\":1}") == -1, "the value as a number");
    ok(parse("{\"mute\":true}") == -1, "another key");
    ok(parse("{\"muted\":true,\"x\":1}") == -1, "a second member");
    ok(parse("{\"mu ted\":true}") == -1, "a space inside the key");
    ok(parse("{\"muted\":t rue}") == -1, "a space inside the value");
    ok(parse("[{\"muted\":true}]") == -1, "inside an array");
    ok(parse("{\"MUTED\":TRUE}") == -1, "another case");
    const uint8_t nul[] = "{\"muted\":true\0}";
    ok(qc_ingest_parse_muted(nul, sizeof nul - 1) == -1, "a NUL before the brace");
    size_t big = 1 << 20;
    char *ws = malloc(big + 32);
    memset(ws, ' ', big);
    strcpy(ws + big, "{\"muted\":false}");
    ok(parse(ws) == 0, "a megabyte of leading whitespace");
    strcpy(ws + big, "{\"muted\":false");
    ok(parse(ws) == -1, "a megabyte of whitespace and a truncated object");
    free(ws);
    return failures ? 1 : 0;
}
