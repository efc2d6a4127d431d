/* Configuration: .env parsing, precedence of the environment, listen address parsing. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static int failures, count;

static void ok(int cond, const char *what) {
    count++;
    printf("%s %d - %s\n", cond ? "ok" : "not ok", count, what);
    if (!cond) failures++;
}

int main(void) {
    char err[256];
    char path[] = "/tmp/qc_test_env_XXXXXX";
    int fd = mkstemp(path);
    const char *text =
        "# comment\n"
        "export QC_T_A=alpha\n"
        "QC_T_B = \"two words\"\n"
        "QC_T_C='single # not a comment'\n"
        "QC_T_D=value # trailing comment\n"
        "QC_T_KEEP=from-file\n"
        "\n";
    if (write(fd, text, strlen(text)) < 0) return 1;
    close(fd);
    setenv("QC_T_KEEP", "from-env", 1);
    ok(qc_config_load_dotenv(path, err, sizeof err) == 0, "loads a .env file");
    ok(getenv("QC_T_A") && strcmp(getenv("QC_T_A"), "alpha") == 0, "export prefix is accepted");
    ok(getenv("QC_T_B") && strcmp(getenv("QC_T_B"), "two words") == 0, "double quotes are stripped");
    ok(getenv("QC_T_C") && strcmp(getenv("QC_T_C"), "single # not a comment") == 0, "quoted # is kept");
    ok(getenv("QC_T_D") && strcmp(getenv("QC_T_D"), "value") == 0, "trailing comment is dropped");
    ok(strcmp(getenv("QC_T_KEEP"), "from-env") == 0, "the environment wins over .env");
    unlink(path);
    ok(qc_config_load_dotenv("/nonexistent/.env", err, sizeof err) == 0, "a missing .env is fine");

    char path2[] = "/tmp/qc_test_env_XXXXXX";
    memcpy(path, path2, sizeof path2);
    fd = mkstemp(path);
    if (write(fd, "NOEQUALS\n", 9) < 0) return 1;
    close(fd);
    ok(qc_config_load_dotenv(path, err, sizeof err) == -1 && strstr(err, ":1:"), "bad line reported with its number");
    unlink(path);

    qc_config cfg;
    unsetenv("QC_LISTEN");
    ok(qc_config_from_env(&cfg, err, sizeof err) == 0, "defaults load");
    ok(strcmp(cfg.listen_host, "127.0.0.1") == 0 && cfg.listen_port == 8000, "default listen is 127.0.0.1:8000");
    ok(cfg.max_body_bytes == 1024 * 1024, "default body limit is 1 MiB");
    ok(cfg.lua_budget_ms == 1000, "default Lua time budget is 1000 ms");
    ok(cfg.request_timeout_ms == 15000 && cfg.max_connections == 0,
       "default request deadline is 15 s; the connection cap comes from the descriptor limit");
    setenv("QC_REQUEST_TIMEOUT_MS", "50", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == -1 && strstr(err, "QC_REQUEST_TIMEOUT_MS"),
       "a request deadline under 100 ms is refused");
    unsetenv("QC_REQUEST_TIMEOUT_MS");
    ok(qc_config_set_listen(&cfg, "0.0.0.0:9001", err, sizeof err) == 0 && cfg.listen_port == 9001 &&
           strcmp(cfg.listen_host, "0.0.0.0") == 0,
       "host:port parses");
    ok(qc_config_set_listen(&cfg, ":7000", err, sizeof err) == 0 && cfg.listen_port == 7000, ":port parses");
    ok(qc_config_set_listen(&cfg, "host:99999", err, sizeof err) == -1, "port out of range is refused");
    ok(qc_config_set_listen(&cfg, "host:", err, sizeof err) == -1, "empty port is refused");
    setenv("QC_MAX_BODY", "abc", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == -1 && strstr(err, "QC_MAX_BODY"), "bad number names the variable");
    unsetenv("QC_MAX_BODY");
    setenv("QC_LUA_BUDGET", "50000000", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == -1 && strstr(err, "QC_LUA_BUDGET_MS"),
       "the former QC_LUA_BUDGET is refused, naming its successor");
    unsetenv("QC_LUA_BUDGET");
    setenv("QC_LUA_BUDGET_MS", "0", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == -1, "a zero time budget is refused");
    unsetenv("QC_LUA_BUDGET_MS");
    {
        const char *cursor = " a , ,b,, c ", *item;
        size_t len;
        char got[64] = "";
        while (qc_config_list_next(&cursor, &item, &len)) {
            strncat(got, item, len);
            strcat(got, "|");
        }
        ok(strcmp(got, "a|b|c|") == 0, "a comma list yields trimmed, non-empty items");
    }
    printf("%d passed, %d failed\n", count - failures, failures);
    return failures ? 1 : 0;
}
