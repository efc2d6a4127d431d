/* Bench peer: a realtime STT server that discards, for measuring our ElevenLabs engine's cost
 * without the network or a real transcriber (bench/ingest.sh). It speaks just enough of
 * stt-llm.md section 1: the WebSocket handshake on any path, `session_started` first, then it
 * drops every audio chunk unread (large frames are skipped without unmasking) and answers each
 * commit (a small text frame holding "commit":true) with an empty committed transcript, plain
 * and with timestamps, so the engine can release the audio it keeps for replay. Pings get
 * Pongs, a Close gets a Close. One libuv thread, so it costs the machine little.
 *   bench_stt_sink [--port P]      (P = 0: pick one; prints "listening <port>") */
#define _GNU_SOURCE /* memmem, strcasestr */
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define HEAD_MAX 8192
#define SMALL_MAX 1024 /* text frames up to this size are read for "commit":true */

typedef struct {
    uv_tcp_t tcp;
    int upgraded;
    char head[HEAD_MAX];
    size_t head_len;
    unsigned char fh[14];
    size_t fh_have, fh_need;
    uint64_t left;
    int op, masked;
    unsigned char mask[4];
    uint64_t off;
    unsigned char small[SMALL_MAX];
    size_t small_len;
    int keep; /* this frame's payload is gathered into small */
} client;

static uv_loop_t *loop;
static uint64_t chunks, commits, bytes_in;

static const char session_started[] =
    "{\"message_type\":\"session_started\",\"session_id\":\"bench-sink\",\"config\":{\"sample_rate\":16000,"
    "\"audio_format\":\"pcm_16000\",\"language_code\":\"en\",\"model_id\":\"scribe_v2_realtime\","
    "\"commit_strategy\":\"manual\",\"include_timestamps\":true}}";
static const char committed[] = "{\"message_type\":\"committed_transcript\",\"text\":\"\"}";
static const char committed_ts[] =
    "{\"message_type\":\"committed_transcript_with_timestamps\",\"text\":\"\",\"language_code\":\"en\",\"words\":[]}";

static void on_closed(uv_handle_t *h) { free(h->data); }

static void drop(client *c) {
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_written(uv_write_t *w, int status) {
    (void)status;
    free(w);
}

/* One unmasked server frame; the bytes are copied with the request, since they are few. */
static void send_frame(client *c, int op, const void *data, size_t len) {
    uv_write_t *w = malloc(sizeof *w + 10 + len);
    if (!w) return drop(c);
    unsigned char *f = (unsigned char *)(w + 1);
    size_t h = 2;
    f[0] = (unsigned char)(0x80 | op);
    if (len < 126) {
        f[1] = (unsigned char)len;
    } else {
        f[1] = 126, f[2] = (unsigned char)(len >> 8), f[3] = (unsigned char)len, h = 4;
    }
    memcpy(f + h, data, len);
    uv_buf_t b = uv_buf_init((char *)f, (unsigned)(h + len));
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written)) free(w);
}

static void frame_done(client *c) {
    if (c->op == 0x9) {
        send_frame(c, 0xA, c->small, c->small_len);
    } else if (c->op == 0x8) {
        send_frame(c, 0x8, c->small, c->small_len >= 2 ? 2 : 0);
        uv_read_stop((uv_stream_t *)&c->tcp);
        drop(c);
    } else if (c->op == 0x1 && c->keep) {
        if (memmem(c->small, c->small_len, "\"commit\":true", 13)) {
            commits++;
            send_frame(c, 0x1, committed_ts, sizeof committed_ts - 1);
            send_frame(c, 0x1, committed, sizeof committed - 1);
        } else {
            chunks++;
        }
    } else {
        chunks++;
    }
}

static void frames(client *c, const unsigned char *p, size_t n) {
    while (n) {
        if (c->fh_need == 0 || c->fh_have < c->fh_need) {
            if (c->fh_need == 0) c->fh_need = 2;
            c->fh[c->fh_have++] = *p++, n--;
            if (c->fh_have == 2) {
                unsigned l7 = c->fh[1] & 0x7f;
                c->fh_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((c->fh[1] & 0x80) ? 4 : 0);
            }
            if (c->fh_have < c->fh_need) continue;
            unsigned l7 = c->fh[1] & 0x7f;
            size_t h = 2;
            uint64_t len = l7;
            if (l7 == 126) len = (uint64_t)c->fh[2] << 8 | c->fh[3], h = 4;
            if (l7 == 127) {
                len = 0;
                for (int i = 0; i < 8; i++) len = len << 8 | c->fh[2 + i];
                h = 10;
            }
            c->masked = (c->fh[1] & 0x80) != 0;
            if (c->masked) memcpy(c->mask, c->fh + h, 4);
            int op = c->fh[0] & 0x0f;
            if (op) c->op = op; /* a continuation keeps its message's opcode */
            c->left = len, c->off = 0, c->small_len = 0;
            c->keep = (c->op == 0x1 || c->op >= 0x8) && len <= SMALL_MAX;
            if (len == 0) c->fh_have = c->fh_need = 0, frame_done(c);
            continue;
        }
        size_t take = n < c->left ? n : (size_t)c->left;
        if (c->keep) {
            for (size_t i = 0; i < take; i++)
                c->small[c->small_len++] = p[i] ^ (c->masked ? c->mask[(c->off + i) & 3] : 0);
        }
        c->off += take, p += take, n -= take, c->left -= take;
        if (c->left == 0) c->fh_have = c->fh_need = 0, frame_done(c);
    }
}

static void upgrade(client *c, size_t head_end) {
    const char *k = strcasestr(c->head, "\r\nSec-WebSocket-Key:");
    if (!k) return drop(c);
    k += 20;
    while (*k == ' ') k++;
    char key[128];
    size_t kl = strcspn(k, " \r");
    if (kl == 0 || kl > 64) return drop(c);
    memcpy(key, k, kl);
    memcpy(key + kl, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 37);
    unsigned char sha[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)key, kl + 36, sha);
    char acc[64];
    EVP_EncodeBlock((unsigned char *)acc, sha, SHA_DIGEST_LENGTH);
    char resp[256];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n", acc);
    uv_write_t *w = malloc(sizeof *w + (size_t)n);
    if (!w) return drop(c);
    memcpy(w + 1, resp, (size_t)n);
    uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)n);
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written)) free(w);
    c->upgraded = 1;
    send_frame(c, 0x1, session_started, sizeof session_started - 1);
    if (c->head_len > head_end) frames(c, (unsigned char *)c->head + head_end, c->head_len - head_end);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    static char rbuf[65536];
    (void)h, (void)suggested;
    *buf = uv_buf_init(rbuf, sizeof rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    client *c = s->data;
    if (n < 0) return drop(c);
    bytes_in += (uint64_t)n;
    if (c->upgraded) return frames(c, (unsigned char *)buf->base, (size_t)n);
    size_t take = (size_t)n < HEAD_MAX - 1 - c->head_len ? (size_t)n : HEAD_MAX - 1 - c->head_len;
    memcpy(c->head + c->head_len, buf->base, take);
    c->head_len += take;
    c->head[c->head_len] = 0;
    char *end = strstr(c->head, "\r\n\r\n");
    if (!end) {
        if (c->head_len == HEAD_MAX - 1) drop(c);
        return;
    }
    upgrade(c, (size_t)(end + 4 - c->head));
    if ((size_t)n > take) frames(c, (unsigned char *)buf->base + take, (size_t)n - take);
}

static void on_conn(uv_stream_t *server, int status) {
    if (status < 0) return;
    client *c = calloc(1, sizeof *c);
    if (!c) return;
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp)) return drop(c);
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_signal(uv_signal_t *s, int sig) {
    (void)sig;
    fprintf(stderr, "bench_stt_sink: chunks=%llu commits=%llu bytes_in=%llu\n", (unsigned long long)chunks,
            (unsigned long long)commits, (unsigned long long)bytes_in);
    uv_stop(s->loop);
}

int main(int argc, char **argv) {
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_stt_sink [--port P]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    uv_tcp_t server;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    uv_tcp_init(loop, &server);
    if (uv_tcp_bind(&server, (struct sockaddr *)&addr, 0) || uv_listen((uv_stream_t *)&server, 1024, on_conn)) {
        fprintf(stderr, "bench_stt_sink: cannot listen on port %d\n", port);
        return 1;
    }
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len);
    printf("listening %d\n", ntohs(bound.sin_port));
    fflush(stdout);
    uv_signal_t sigs[2];
    uv_signal_init(loop, &sigs[0]);
    uv_signal_start(&sigs[0], on_signal, SIGTERM);
    uv_signal_init(loop, &sigs[1]);
    uv_signal_start(&sigs[1], on_signal, SIGINT);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
