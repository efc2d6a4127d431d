/* Configuration: .env parsing, precedence of the environment, listen address parsing. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#include "tap.h"

struct seen {
    char names[8][64];
    char hints[8][64];
    int n;
};

static void collect(const char *name, const char *suggestion, void *ud) {
    struct seen *s = ud;
    if (s->n == 8) return;
    snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
    snprintf(s->hints[s->n], sizeof s->hints[0], "%s", suggestion ? suggestion : "-");
    s->n++;
}

static int suggests(const char *name, const char *want) {
    const char *got = qc_config_suggest(name);
    if (!want) return got == NULL;
    return got && strcmp(got, want) == 0;
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

    /* Misspelt and unknown names. */
    ok(qc_config_is_known("LIVEKIT_API_SECRET") && qc_config_is_known("QC_LISTEN") &&
           qc_config_is_known("ELEVENLABS_API_KEY") && qc_config_is_known("QC_BIN"),
       "the settings that exist are known");
    ok(!qc_config_is_known("LIVEKIT_SECRET") && !qc_config_is_known("QC_LISTEN_X"), "others are not");
    ok(suggests("LIVEKIT_SECRET", "LIVEKIT_API_SECRET"), "LIVEKIT_SECRET: did you mean LIVEKIT_API_SECRET");
    ok(suggests("LIVEKIT_KEY", "LIVEKIT_API_KEY"), "LIVEKIT_KEY: did you mean LIVEKIT_API_KEY");
    ok(suggests("LIVEKIT_API_SECERT", "LIVEKIT_API_SECRET"), "swapped letters are one edit");
    ok(suggests("QC_LOGLEVEL", "QC_LOG_LEVEL"), "a missing underscore is one edit");
    ok(suggests("QC_API_KEY", "QC_API_KEYS"), "QC_API_KEY: did you mean QC_API_KEYS");
    ok(suggests("QC_PORT", "QC_LISTEN"), "QC_PORT: did you mean QC_LISTEN");
    ok(suggests("QC_FROBNICATE", NULL), "no suggestion when nothing is close");
    {
        char *env[] = {"PATH=/bin", "LIVEKIT_SECRET=abc", "QC_LISTEN=:1", "QC_FROBNICATE=1",
                       "LIVEKIT_URL=ws://x", "ELEVENLABS_KEY=k", "QCX=1", NULL};
        struct seen got = {0};
        int n = qc_config_each_unknown(env, collect, &got);
        ok(n == 3 && got.n == 3, "three unknown names among ours; other prefixes are not ours");
        ok(strcmp(got.names[0], "LIVEKIT_SECRET") == 0 && strcmp(got.hints[0], "LIVEKIT_API_SECRET") == 0,
           "each comes with the name it likely meant");
        ok(strcmp(got.names[1], "QC_FROBNICATE") == 0 && strcmp(got.hints[1], "-") == 0, "or none");
        ok(strcmp(got.hints[2], "ELEVENLABS_API_KEY") == 0, "ELEVENLABS_KEY: did you mean ELEVENLABS_API_KEY");
    }

    /* LiveKit's dev keys against a LiveKit that is not this machine. */
    ok(qc_config_url_is_loopback("ws://127.0.0.1:7880") && qc_config_url_is_loopback("ws://localhost") &&
           qc_config_url_is_loopback("http://[::1]:7880/x") && qc_config_url_is_loopback("wss://127.9.0.1") &&
           qc_config_url_is_loopback("ws://u:p@localhost:1"),
       "loopback URLs");
    ok(!qc_config_url_is_loopback("wss://lk.example.com") && !qc_config_url_is_loopback("ws://10.0.0.5:7880") &&
           !qc_config_url_is_loopback("ws://127.0.0.1.nip.io") && !qc_config_url_is_loopback("ws://[::2]:1") &&
           !qc_config_url_is_loopback("ws://localhost@evil.example"),
       "remote URLs");
    setenv("LIVEKIT_URL", "wss://lk.example.com", 1);
    unsetenv("LIVEKIT_API_KEY");
    unsetenv("LIVEKIT_API_SECRET");
    unsetenv("QC_ALLOW_DEV_KEYS");
    ok(qc_config_from_env(&cfg, err, sizeof err) == -1 && strstr(err, "LIVEKIT_API_KEY/LIVEKIT_API_SECRET") &&
           strstr(err, "QC_ALLOW_DEV_KEYS"),
       "the dev keys with a remote LIVEKIT_URL are refused, naming both variables");
    setenv("LIVEKIT_API_KEY", "APIreal", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == -1, "so is the dev secret with a key of one's own");
    setenv("LIVEKIT_API_SECRET", "a-real-secret", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == 0 && !cfg.dev_keys_remote, "a real pair is fine");
    unsetenv("LIVEKIT_API_KEY");
    unsetenv("LIVEKIT_API_SECRET");
    setenv("QC_ALLOW_DEV_KEYS", "1", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == 0 && cfg.dev_keys_remote, "QC_ALLOW_DEV_KEYS=1 lets it start");
    setenv("QC_ALLOW_DEV_KEYS", "maybe", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == -1 && strstr(err, "QC_ALLOW_DEV_KEYS"), "a bad flag is refused");
    unsetenv("QC_ALLOW_DEV_KEYS");
    setenv("LIVEKIT_URL", "ws://localhost:7880", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == 0 && !cfg.dev_keys_remote, "the dev keys on loopback are fine");
    unsetenv("LIVEKIT_URL");

    /* Settings that name one of a set: the error lists the set and what was given. */
    setenv("QC_STT_ENGINE", "whisper", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == -1 &&
           strcmp(err, "QC_STT_ENGINE: expected local, elevenlabs or null, got \"whisper\"") == 0,
       "an unknown STT engine is refused with the three names");
    setenv("QC_STT_ENGINE", "Local", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == -1, "engine names are exact");
    setenv("QC_STT_ENGINE", "null", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == 0 && strcmp(cfg.stt_engine, "null") == 0, "QC_STT_ENGINE=null");
    unsetenv("QC_STT_ENGINE");
    setenv("QC_EVALUATOR", "gpt", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == -1 &&
           strcmp(err, "QC_EVALUATOR: expected analytics, openai or anthropic, got \"gpt\"") == 0,
       "an unknown evaluator is refused with the three names");
    setenv("QC_EVALUATOR", "openai", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == 0 && strcmp(cfg.evaluator, "openai") == 0, "QC_EVALUATOR=openai");
    unsetenv("QC_EVALUATOR");
    {
        char small[20];
        setenv("QC_EVALUATOR", "gpt", 1);
        ok(qc_config_from_env(&cfg, small, sizeof small) == -1 && strlen(small) == sizeof small - 1,
           "the error is cut to the buffer");
        unsetenv("QC_EVALUATOR");
    }

    setenv("QC_STORE_SYNC", "FULL", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == 0 && cfg.store_sync_full, "QC_STORE_SYNC=FULL is full");
    setenv("QC_STORE_SYNC", "Normal", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == 0 && !cfg.store_sync_full, "QC_STORE_SYNC=Normal is normal");
    setenv("QC_STORE_SYNC", "bogus", 1);
    ok(qc_config_from_env(&cfg, err, sizeof err) == -1 && strstr(err, "QC_STORE_SYNC") && strstr(err, "normal or full"),
       "QC_STORE_SYNC=bogus is refused, naming the allowed values");
    unsetenv("QC_STORE_SYNC");
    ok(qc_config_from_env(&cfg, err, sizeof err) == 0 && !cfg.store_sync_full, "QC_STORE_SYNC unset is normal");

    {
        static const char *const good[] = {"ws://127.0.0.1:7880", "wss://lk.example.com", "HTTP://localhost/x",
                                            "https://[::1]:7880", "ws://user@127.0.0.1"};
        static const char *const bad[] = {"ftp://127.0.0.1", "notaurl", "ws://", "ws://:7880", "http:///x",
                                          "wss//lk", "ws://[::1", "ws://a b", "://127.0.0.1", ""};
        for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
            ok(qc_config_check_livekit_url(good[i], err, sizeof err) == 0, good[i]);
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            ok(qc_config_check_livekit_url(bad[i], err, sizeof err) == -1 && strstr(err, "LIVEKIT_URL") &&
                   strstr(err, "ws://HOST[:PORT]"),
               bad[i]);
        /* A URL that is not one is named as such, not blamed on the dev keys. */
        setenv("LIVEKIT_URL", "notaurl", 1);
        ok(qc_config_from_env(&cfg, err, sizeof err) == -1 && strstr(err, "LIVEKIT_URL") && !strstr(err, "dev keys"),
           "a LIVEKIT_URL that is not a URL is refused before the dev-keys rule");
        unsetenv("LIVEKIT_URL");
    }

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
    /* qc_config_mask_url: what the start-up line and /health show of QC_STORE_URL. */
    {
        static const char *const cases[][2] = {
            {"postgres://qc:hunter2@db:5432/qc", "postgres://qc:***@db:5432/qc"},
            {"postgresql://qc@db/qc", "postgresql://qc@db/qc"},
            {"postgres://db/qc?user=qc&password=hunter2&sslmode=require", "postgres://db/qc?user=qc&password=***&sslmode=require"},
            {"postgres://db/qc?PASSWORD=hunter2", "postgres://db/qc?PASSWORD=***"},
            {"postgres://qc:hun@ter2@db/qc", "postgres://qc:***@db/qc"},
            {"postgres://qc:hun?ter2@db/qc", "postgres://qc:***@db/qc"},
            {"postgres://qc:hun/ter2@db/qc", "postgres://qc:***@db/qc"},
            {"postgres://qc:hunter2@db/qc?password=other", "postgres://qc:***@db/qc?password=***"},
            {"postgres://qc:@db/qc", "postgres://qc:***@db/qc"},
            {"postgres://db/qc?password=", "postgres://db/qc?password=***"},
            {"postgres://db/qc?", "postgres://db/qc?"},
            {"postgres://db/qc?&&password=x&", "postgres://db/qc?&&password=***&"},
            {"sqlite:/var/lib/qc.db", "sqlite:/var/lib/qc.db"},
            {"", ""},
            {"://:@", "://:***@"},
        };
        char out[256];
        int all = 1;
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            if (qc_config_mask_url(cases[i][0], out, sizeof out) != 0 || strcmp(out, cases[i][1]) != 0) {
                printf("# mask %s -> %s (want %s)\n", cases[i][0], out, cases[i][1]);
                all = 0;
            }
        }
        ok(all, "store URLs are shown with every password masked");
        ok(qc_config_mask_url("postgres://qc:hunter2@db/qc", out, 12) == -1 && !strstr(out, "hunter2"),
           "a URL too long for the buffer fails without showing its password");
        setenv("QC_STORE_URL", "mysql://qc:hunter2@db/qc", 1);
        ok(qc_config_from_env(&cfg, err, sizeof err) == -1 && strstr(err, "QC_STORE_URL") && !strstr(err, "hunter2"),
           "another scheme is refused, naming the variable, not the password");
        setenv("QC_STORE_URL", "postgres://qc@db/qc", 1);
        setenv("QC_STORE_POOL", "64", 1);
        ok(qc_config_from_env(&cfg, err, sizeof err) == 0 && cfg.store_postgres && cfg.store_pool == 64,
           "a postgres URI and a pool of 64 are taken");
        setenv("QC_STORE_POOL", "65", 1);
        ok(qc_config_from_env(&cfg, err, sizeof err) == -1 && strstr(err, "QC_STORE_POOL"), "a pool of 65 is refused");
        unsetenv("QC_STORE_POOL");
        setenv("QC_STORE_URL", "sqlite:/tmp/x.db", 1);
        ok(qc_config_from_env(&cfg, err, sizeof err) == 0 && !cfg.store_postgres && cfg.store_pool == 4,
           "sqlite:PATH is SQLite, the pool stays 4");
        unsetenv("QC_STORE_URL");
    }
    return failures ? 1 : 0;
}
