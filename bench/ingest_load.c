/* Bench tool: N simulated LiveKit Track Egress connections to an ingest WebSocket, at real-time
 * pace, on one libuv thread. Each connection does the handshake the egress makes (GET with
 * Content-Type: audio/x-raw, no subprotocol, no deflate), then sends one masked binary message of
 * 1920 bytes (10 ms of 48 kHz stereo s16le) every 10 ms, a Ping "ping" every 30 s, answers Pings
 * with "pong", and ends with an empty Close frame and a TCP close, as livekit.md section 3 says.
 *   bench_ingest_load --url ws://127.0.0.1:PORT/ingest -n N [--duration S] [--warmup S]
 *       [--key K --secret S] [--wav FILE] [--server-pid PID] [--stats-url http://...]
 * It is a bench tool, not product: it speaks WebSocket itself so that a message costs it one
 * uv_try_write of prebuilt bytes (audio frames are masked once, at start-up), which is what lets a
 * single thread hold hundreds of tracks. It prints one "result key=value..." line: how far each
 * connection fell behind the pace (lag), whether the generator itself kept up, and, given the
 * server's pid, the server's CPU per message and RSS per track over the measured window. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define MSG_BYTES 1920                        /* 480 frames of 2 x s16: 10 ms at 48 kHz stereo */
#define HDR_BYTES 8                           /* FIN|binary, 126 + 16-bit length, mask key */
#define FRAME_BYTES (MSG_BYTES + HDR_BYTES)
#define PERIOD_NS 10000000ull                 /* one message every 10 ms */
#define RATE 48000
#define RING_MSGS_TONE 100                    /* 1 s of tone: 440 Hz and 1 kHz both repeat in it */
#define HANDSHAKE_MAX 2048
#define TWO_PI 6.283185307179586
#define LATE_BUCKETS 2001                     /* 0.1 ms buckets to 200 ms, then one overflow */

enum { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_STREAMING, C_DONE };

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    int idx, state, blocked, closing;
    int pong_due;
    uint64_t t0;                  /* when its first message was due (handshake done) */
    uint64_t sent;                /* messages handed to the kernel (or queued after a partial write) */
    uint64_t next_ping;
    uint64_t max_lag_ns;          /* the worst lag seen inside the measured window */
    uint64_t lag_ns;              /* lag at the latest tick */
    char hs[HANDSHAKE_MAX];       /* the request, then the answer as it arrives */
    size_t hs_len;
    /* Reading the server's frames (unmasked): header bytes, then the payload. */
    unsigned char fh[14];
    size_t fh_have, fh_need;
    uint64_t fpay_left;
    int fop;
    unsigned char ctl[125];
    size_t ctl_have;
} conn;

static struct {
    const char *url, *key, *secret, *wav, *stats_url, *room_prefix;
    int n, concurrency, server_pid;
    double duration, warmup, ping_s, hold_ms;
    long ttl;
} opt = {.n = 10, .concurrency = 64, .duration = 20, .warmup = 3, .ping_s = 30, .hold_ms = 500,
         .ttl = 3600, .room_prefix = "bench"};

static uv_loop_t *loop;
static uv_timer_t tick;
static conn *conns;
static struct sockaddr_in addr;
static char host_hdr[128], path[1024];
static unsigned char *ring;            /* ring_msgs prebuilt masked frames, back to back */
static size_t ring_msgs;
static unsigned char ping_frame[10], pong_frame[10], close_frame[6];

static int next_connect, in_handshake, streaming, failed, closed_by_server;
static char first_failure[256];
static uint64_t last_stream_start, prev_tick;
static int phase;                      /* 0 ramp, 1 warm-up, 2 measured, 3 closing */
static uint64_t window_t0, window_t1, window_msgs_t0, total_sent;
static uint64_t late_hist[LATE_BUCKETS];
static uint64_t late_max_ns, ticks;
static struct rusage ru0, ru1;
static long srv_ticks0 = -1, srv_ticks1 = -1, srv_rss_idle = -1, srv_rss_end = -1;
static char stats0[65536], stats1[65536];
static volatile sig_atomic_t interrupted;

static void die(const char *what) {
    fprintf(stderr, "bench_ingest_load: %s\n", what);
    exit(2);
}

static void fail(conn *c, const char *why) {
    if (!first_failure[0])
        snprintf(first_failure, sizeof first_failure, "conn=%d %s", c->idx, why);
}

/* ---- tokens: HS256 JWTs as `quantcoach token --ingest` mints them (contracts9.md) ---------- */

static size_t b64url(const unsigned char *in, size_t n, char *out) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18], out[o++] = a[(v >> 12) & 63], out[o++] = a[(v >> 6) & 63], out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = a[v >> 18], out[o++] = a[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = a[v >> 18], out[o++] = a[(v >> 12) & 63], out[o++] = a[(v >> 6) & 63];
    }
    out[o] = 0;
    return o;
}

static void mint(int i, char *out, size_t cap) {
    char claims[512], signing[1024], sig64[64];
    unsigned char mac[32];
    unsigned int maclen = sizeof mac;
    long now = (long)time(NULL);
    int n = snprintf(claims, sizeof claims,
                     "{\"iss\":\"%s\",\"aud\":\"quantcoach-ingest\",\"sub\":\"spk-%d\",\"room\":\"%s-%d\","
                     "\"track\":\"TR_bench%d\",\"nbf\":%ld,\"exp\":%ld}",
                     opt.key, i, opt.room_prefix, i / 2, i, now - 5, now + opt.ttl);
    if (n < 0 || (size_t)n >= sizeof claims) die("token claims too long");
    size_t l = b64url((const unsigned char *)"{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 27, signing);
    signing[l++] = '.';
    l += b64url((const unsigned char *)claims, (size_t)n, signing + l);
    if (!HMAC(EVP_sha256(), opt.secret, (int)strlen(opt.secret), (const unsigned char *)signing, l, mac, &maclen))
        die("HMAC failed");
    b64url(mac, maclen, sig64);
    if ((size_t)snprintf(out, cap, "%s.%s", signing, sig64) >= cap) die("token too long");
}

/* ---- audio: prebuilt masked frames --------------------------------------------------------- */

static void mask_frame(unsigned char *f, const unsigned char *payload, size_t len, uint32_t key) {
    size_t h;
    f[0] = 0x82;
    if (len < 126) {
        f[1] = (unsigned char)(0x80 | len), h = 2;
    } else {
        f[1] = 0x80 | 126, f[2] = (unsigned char)(len >> 8), f[3] = (unsigned char)len, h = 4;
    }
    unsigned char *m = f + h;
    m[0] = (unsigned char)(key >> 24), m[1] = (unsigned char)(key >> 16), m[2] = (unsigned char)(key >> 8),
    m[3] = (unsigned char)key;
    for (size_t i = 0; i < len; i++) f[h + 4 + i] = payload[i] ^ m[i & 3];
}

static void ctl_frame(unsigned char *f, unsigned char op, const char *payload, uint32_t key) {
    size_t len = strlen(payload);
    mask_frame(f, (const unsigned char *)payload, len, key);
    f[0] = op;
}

/* 48 kHz stereo s16le: a WAV of that format looped, or two tones (440 Hz left, 1 kHz right) at
 * -12 dBFS. Either way, not zeros: a resampler fed zeros can take shortcuts. */
static void build_ring(void) {
    unsigned char *pcm;
    size_t bytes;
    if (opt.wav) {
        FILE *f = fopen(opt.wav, "rb");
        if (!f) die("cannot open --wav file");
        unsigned char h[12];
        if (fread(h, 1, 12, f) != 12 || memcmp(h, "RIFF", 4) || memcmp(h + 8, "WAVE", 4)) die("--wav: not a WAV file");
        int fmt_ok = 0;
        for (;;) {
            unsigned char ch[8];
            if (fread(ch, 1, 8, f) != 8) die("--wav: no data chunk");
            uint32_t sz = ch[4] | ch[5] << 8 | ch[6] << 16 | (uint32_t)ch[7] << 24;
            if (!memcmp(ch, "fmt ", 4)) {
                unsigned char fm[16];
                if (sz < 16 || fread(fm, 1, 16, f) != 16) die("--wav: short fmt chunk");
                unsigned ch_n = fm[2] | fm[3] << 8, bits = fm[14] | fm[15] << 8;
                uint32_t rate = fm[4] | fm[5] << 8 | fm[6] << 16 | (uint32_t)fm[7] << 24;
                if ((fm[0] | fm[1] << 8) != 1 || ch_n != 2 || bits != 16 || rate != RATE)
                    die("--wav: needs PCM 48000 Hz, 2 channels, 16 bits (sox in.wav -r 48000 -c 2 -b 16 out.wav)");
                fmt_ok = 1;
                if (fseek(f, (long)(sz - 16 + (sz & 1)), SEEK_CUR)) die("--wav: seek");
            } else if (!memcmp(ch, "data", 4)) {
                if (!fmt_ok) die("--wav: data before fmt");
                bytes = sz;
                break;
            } else if (fseek(f, (long)(sz + (sz & 1)), SEEK_CUR)) {
                die("--wav: seek");
            }
        }
        ring_msgs = (bytes + MSG_BYTES - 1) / MSG_BYTES;
        if (ring_msgs == 0) die("--wav: no audio");
        pcm = calloc(ring_msgs, MSG_BYTES); /* the last message padded with silence */
        if (!pcm) die("out of memory");
        if (fread(pcm, 1, bytes, f) != bytes) die("--wav: short data");
        fclose(f);
    } else {
        ring_msgs = RING_MSGS_TONE;
        pcm = malloc(ring_msgs * MSG_BYTES);
        if (!pcm) die("out of memory");
        for (size_t i = 0; i < ring_msgs * MSG_BYTES / 4; i++) {
            double t = (double)i / RATE;
            int16_t l = (int16_t)lrint(8192 * sin(TWO_PI * 440 * t)), r = (int16_t)lrint(8192 * sin(TWO_PI * 1000 * t));
            pcm[4 * i] = (unsigned char)l, pcm[4 * i + 1] = (unsigned char)((uint16_t)l >> 8);
            pcm[4 * i + 2] = (unsigned char)r, pcm[4 * i + 3] = (unsigned char)((uint16_t)r >> 8);
        }
    }
    ring = malloc(ring_msgs * FRAME_BYTES);
    if (!ring) die("out of memory");
    uint32_t key = 0x9e3779b9u;
    for (size_t m = 0; m < ring_msgs; m++) {
        key = key * 1664525u + 1013904223u;
        mask_frame(ring + m * FRAME_BYTES, pcm + m * MSG_BYTES, MSG_BYTES, key);
    }
    free(pcm);
    ctl_frame(ping_frame, 0x89, "ping", 0x1234567u);
    ctl_frame(pong_frame, 0x8A, "pong", 0x7654321u);
    ctl_frame(close_frame, 0x88, "", 0x2468aceu);
}

/* ---- the server process, from /proc ---------------------------------------------------------- */

static long proc_cpu_ticks(int pid) {
    char p[64], buf[2048];
    snprintf(p, sizeof p, "/proc/%d/stat", pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *s = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!s) return -1;
    unsigned long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
    return (long)(ut + st);
}

static long proc_rss_kb(int pid) {
    char p[64], line[256];
    long kb = -1;
    snprintf(p, sizeof p, "/proc/%d/status", pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

/* A blocking GET of --stats-url into out (the body only): twice a run, at the window's edges,
 * so the server's own counters (bytes in, latency histogram) can be read over the window. */
static void fetch_stats(char *out, size_t cap) {
    out[0] = 0;
    if (!opt.stats_url) return;
    char host[128];
    int port;
    const char *p = strstr(opt.stats_url, "://");
    if (!p || sscanf(p + 3, "%127[^:/]:%d", host, &port) != 2) die("--stats-url: http://IP:PORT/path");
    const char *pth = strchr(p + 3, '/');
    struct sockaddr_in sa;
    if (uv_ip4_addr(host, port, &sa)) die("--stats-url: host must be an IPv4 address");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        if (fd >= 0) close(fd);
        snprintf(out, cap, "connect failed");
        return;
    }
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n", pth ? pth : "/",
                     host, port);
    if (write(fd, req, (size_t)n) != n) die("--stats-url: write");
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fd, out + got, cap - 1 - got)) > 0) got += (size_t)r;
    out[got] = 0;
    close(fd);
    char *body = strstr(out, "\r\n\r\n");
    if (body) memmove(out, body + 4, strlen(body + 4) + 1);
}

/* ---- connections ------------------------------------------------------------------------------ */

static void start_connects(void);

static void on_closed(uv_handle_t *h) {
    (void)h;
}

static void conn_end(conn *c, int by_server, const char *why) {
    if (c->state == C_DONE) return;
    if (c->state == C_HANDSHAKE || c->state == C_CONNECTING) {
        in_handshake--;
        failed++;
        fail(c, why);
    } else if (c->state == C_STREAMING) {
        streaming--;
        if (by_server && phase < 3) {
            closed_by_server++;
            fail(c, why);
        }
    }
    c->state = C_DONE;
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_closed);
    start_connects();
}

static void on_write(uv_write_t *w, int status) {
    conn *c = w->data;
    c->blocked = 0;
    if (status < 0 && c->state != C_DONE) {
        char why[128];
        snprintf(why, sizeof why, "write: %s", uv_strerror(status));
        conn_end(c, 1, why);
    }
}

/* Writes whole frame bytes at once: what the kernel does not take now is queued from the same
 * (static) memory, and the connection sends nothing else until that write completes, so frames
 * never interleave. */
static void put(conn *c, const unsigned char *bytes, size_t len) {
    uv_buf_t b = uv_buf_init((char *)bytes, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN) n = 0;
    if (n < 0) {
        char why[128];
        snprintf(why, sizeof why, "write: %s", uv_strerror(n));
        conn_end(c, 1, why);
        return;
    }
    if ((size_t)n == len) return;
    b = uv_buf_init((char *)bytes + n, (unsigned)(len - (size_t)n));
    c->blocked = 1;
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc) {
        c->blocked = 0;
        conn_end(c, 1, "uv_write failed");
    }
}

static void ctl_in(conn *c) {
    if (c->fop == 0x9) {
        c->pong_due = 1;
    } else if (c->fop == 0x8) {
        char why[200];
        unsigned code = c->ctl_have >= 2 ? (unsigned)(c->ctl[0] << 8 | c->ctl[1]) : 1005;
        int rl = c->ctl_have > 2 ? (int)(c->ctl_have - 2) : 0;
        snprintf(why, sizeof why, "close from server: %u %.*s", code, rl, (const char *)c->ctl + 2);
        conn_end(c, 1, why);
    }
}

/* The server's frames: answer Pings, report a Close, discard the rest. */
static void frames_in(conn *c, const unsigned char *p, size_t n) {
    while (n && c->state == C_STREAMING) {
        if (c->fh_need == 0 || c->fh_have < c->fh_need) {
            if (c->fh_need == 0) c->fh_need = 2;
            c->fh[c->fh_have++] = *p++, n--;
            if (c->fh_have == 2) {
                unsigned l7 = c->fh[1] & 0x7f;
                c->fh_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((c->fh[1] & 0x80) ? 4 : 0);
            }
            if (c->fh_have < c->fh_need) continue;
            unsigned l7 = c->fh[1] & 0x7f;
            uint64_t len = l7;
            if (l7 == 126) len = (uint64_t)c->fh[2] << 8 | c->fh[3];
            if (l7 == 127) {
                len = 0;
                for (int i = 0; i < 8; i++) len = len << 8 | c->fh[2 + i];
            }
            c->fop = c->fh[0] & 0x0f;
            c->fpay_left = len;
            c->ctl_have = 0;
            if (c->fop >= 8 && len > 125) {
                conn_end(c, 1, "bad control frame from server");
                return;
            }
            if (len == 0) {
                c->fh_have = c->fh_need = 0;
                if (c->fop >= 8) ctl_in(c);
            }
            continue;
        }
        size_t take = n < c->fpay_left ? n : (size_t)c->fpay_left;
        if (c->fop >= 8) memcpy(c->ctl + c->ctl_have, p, take), c->ctl_have += take;
        p += take, n -= take, c->fpay_left -= take;
        if (c->fpay_left == 0) {
            c->fh_have = c->fh_need = 0;
            if (c->fop >= 8) ctl_in(c);
        }
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    static char rbuf[65536]; /* one thread, and read callbacks consume it at once */
    (void)h, (void)suggested;
    *buf = uv_buf_init(rbuf, sizeof rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    conn *c = s->data;
    if (nread < 0) {
        conn_end(c, 1, nread == UV_EOF ? "server closed the TCP connection" : uv_strerror((int)nread));
        return;
    }
    const unsigned char *p = (const unsigned char *)buf->base;
    size_t n = (size_t)nread;
    if (c->state == C_HANDSHAKE) {
        size_t room = sizeof c->hs - 1 - c->hs_len, take = n < room ? n : room;
        memcpy(c->hs + c->hs_len, p, take);
        c->hs_len += take;
        c->hs[c->hs_len] = 0;
        char *end = strstr(c->hs, "\r\n\r\n");
        if (!end) {
            if (c->hs_len == sizeof c->hs - 1) conn_end(c, 1, "handshake answer too long");
            return;
        }
        if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0) {
            char why[200];
            char *body = end + 4;
            snprintf(why, sizeof why, "handshake refused: %.*s %s", (int)strcspn(c->hs, "\r"), c->hs, body);
            conn_end(c, 1, why);
            return;
        }
        size_t used = (size_t)(end + 4 - c->hs) - (c->hs_len - take); /* bytes of this read in the head */
        in_handshake--;
        streaming++;
        c->state = C_STREAMING;
        c->t0 = uv_hrtime();
        c->next_ping = c->t0 + (uint64_t)(opt.ping_s * 1e9);
        last_stream_start = c->t0;
        p += used, n -= used;
        start_connects();
    }
    if (n) frames_in(c, p, n);
}

static void on_connect(uv_connect_t *r, int status) {
    conn *c = r->data;
    if (status < 0) {
        char why[128];
        snprintf(why, sizeof why, "connect: %s", uv_strerror(status));
        conn_end(c, 1, why);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    /* A small send buffer, so a server that falls behind shows up as lag here within a fraction
     * of a second instead of disappearing into megabytes of kernel buffers. */
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
        int sz = 16384;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
    c->state = C_HANDSHAKE;
    unsigned char nonce[16];
    char key[32], token[1024] = "";
    for (int i = 0; i < 16; i++) nonce[i] = (unsigned char)rand();
    /* base64 (not url) for Sec-WebSocket-Key */
    b64url(nonce, 16, key);
    for (char *k = key; *k; k++) *k = *k == '-' ? '+' : *k == '_' ? '/' : *k;
    strcat(key, "==");
    if (opt.key) mint(c->idx, token, sizeof token);
    int n = snprintf(c->hs, sizeof c->hs,
                     "GET %s%s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: Go-http-client/1.1\r\nConnection: Upgrade\r\n"
                     "Content-Type: audio/x-raw\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                     "Upgrade: websocket\r\n\r\n",
                     path, token[0] ? (strchr(path, '?') ? "&t=" : "?t=") : "", token, host_hdr, key);
    if (n < 0 || (size_t)n >= sizeof c->hs) die("handshake request too long");
    uv_buf_t b = uv_buf_init(c->hs, (unsigned)n);
    c->tcp.data = c;
    c->wreq.data = c;
    c->blocked = 1;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) {
        conn_end(c, 1, "handshake write failed");
        return;
    }
    c->hs_len = 0; /* the buffer now collects the answer; the request is copied by the kernel first */
}

/* Opens connections while fewer than --concurrency handshakes are in flight. The request is
 * written from c->hs before the answer can arrive into it (uv_write tries a write at once). */
static void start_connects(void) {
    while (phase == 0 && next_connect < opt.n && in_handshake < opt.concurrency) {
        conn *c = &conns[next_connect];
        c->idx = next_connect++;
        c->state = C_CONNECTING;
        in_handshake++;
        if (uv_tcp_init(loop, &c->tcp)) die("uv_tcp_init");
        c->tcp.data = c;
        c->creq.data = c;
        int rc = uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&addr, on_connect);
        if (rc) conn_end(c, 1, uv_strerror(rc));
    }
}

/* ---- the pace ---------------------------------------------------------------------------------- */

static void late_record(uint64_t ns) {
    size_t b = (size_t)(ns / 100000);
    late_hist[b < LATE_BUCKETS ? b : LATE_BUCKETS - 1]++;
    if (ns > late_max_ns) late_max_ns = ns;
    ticks++;
}

static double late_pct(double q) {
    uint64_t want = (uint64_t)ceil(q * (double)ticks), acc = 0;
    for (size_t b = 0; b < LATE_BUCKETS; b++)
        if ((acc += late_hist[b]) >= want && want) return (double)(b + 1) * 0.1;
    return 0;
}

static void finish(void);

static void on_tick(uv_timer_t *t) {
    (void)t;
    uint64_t now = uv_hrtime();
    if (phase >= 2 && prev_tick) late_record(now - prev_tick > 1000000 ? now - prev_tick - 1000000 : 0);
    prev_tick = now;
    if (interrupted && phase < 3) phase = 3, window_t1 = now;

    if (phase == 0 && next_connect == opt.n && in_handshake == 0) {
        if (streaming == 0) die(first_failure[0] ? first_failure : "no connection opened");
        phase = 1;
    }
    if (phase == 1 && now - last_stream_start >= (uint64_t)(opt.warmup * 1e9)) {
        phase = 2;
        window_t0 = now;
        window_msgs_t0 = total_sent;
        fetch_stats(stats0, sizeof stats0);
        getrusage(RUSAGE_SELF, &ru0);
        if (opt.server_pid) srv_ticks0 = proc_cpu_ticks(opt.server_pid);
        now = uv_hrtime();
        prev_tick = now;
    }
    if (phase == 2 && now - window_t0 >= (uint64_t)(opt.duration * 1e9)) {
        if (opt.server_pid) srv_ticks1 = proc_cpu_ticks(opt.server_pid), srv_rss_end = proc_rss_kb(opt.server_pid);
        getrusage(RUSAGE_SELF, &ru1);
        window_t1 = now;
        fetch_stats(stats1, sizeof stats1);
        phase = 3;
    }

    for (int i = 0; i < next_connect; i++) {
        conn *c = &conns[i];
        if (c->state != C_STREAMING) continue;
        if (phase == 3) {
            if (c->blocked) continue; /* the Close goes out after the frame in flight */
            put(c, close_frame, sizeof close_frame);
            conn_end(c, 0, "");
            continue;
        }
        uint64_t due = (now - c->t0) / PERIOD_NS + 1;
        while (!c->blocked && c->state == C_STREAMING) {
            if (c->pong_due) {
                c->pong_due = 0;
                put(c, pong_frame, sizeof pong_frame);
            } else if (now >= c->next_ping) {
                c->next_ping += (uint64_t)(opt.ping_s * 1e9);
                put(c, ping_frame, sizeof ping_frame);
            } else if (c->sent < due) {
                put(c, ring + (c->sent % ring_msgs) * FRAME_BYTES, FRAME_BYTES);
                c->sent++, total_sent++;
            } else {
                break;
            }
        }
        /* lag: how long the oldest message not yet handed over has been due */
        c->lag_ns = c->sent < due ? now - (c->t0 + c->sent * PERIOD_NS) : 0;
        if (phase == 2 && c->lag_ns > c->max_lag_ns) c->max_lag_ns = c->lag_ns;
    }
    if (phase == 3 && streaming == 0) finish();
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void print_json_oneline(const char *key, const char *s) {
    printf(" %s=", key);
    if (!*s) {
        printf("-");
        return;
    }
    for (; *s; s++)
        if (*s != '\n' && *s != '\r' && *s != ' ') putchar(*s);
}

static void finish(void) {
    uv_timer_stop(&tick);
    double win = (double)(window_t1 - window_t0) / 1e9;
    uint64_t msgs = total_sent - window_msgs_t0;
    int measured = 0, held = 0;
    uint64_t *lags = calloc((size_t)opt.n, sizeof *lags);
    if (!lags) die("out of memory");
    for (int i = 0; i < next_connect; i++) {
        conn *c = &conns[i];
        if (c->t0 == 0 || c->t0 > window_t0) continue; /* never streamed, or not through the window */
        lags[measured++] = c->max_lag_ns;
        if (c->max_lag_ns <= (uint64_t)(opt.hold_ms * 1e6) && c->lag_ns <= (uint64_t)(opt.hold_ms * 1e6)) held++;
    }
    qsort(lags, (size_t)measured, sizeof *lags, cmp_u64);
    double p50 = measured ? lags[measured / 2] / 1e6 : 0, p99 = measured ? lags[(size_t)(measured * 0.99)] / 1e6 : 0,
           mx = measured ? lags[measured - 1] / 1e6 : 0;
    double gen_cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                     (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    double late99 = late_pct(0.99);
    /* The generator kept up when its own loop ran on time (a late tick delays every connection
     * alike, which the server did not cause) and it had CPU to spare. */
    int kept_up = late99 <= 5.0 && gen_cpu / (win > 0 ? win : 1) < 0.9;
    printf("result n=%d opened=%d failed=%d closed_by_server=%d window_s=%.2f msgs=%llu msgs_per_s=%.0f"
           " held=%d lag_p50_ms=%.1f lag_p99_ms=%.1f lag_max_ms=%.1f gen_cpu_pct=%.1f gen_late_p99_ms=%.1f"
           " gen_late_max_ms=%.1f gen_kept_up=%s",
           opt.n, opt.n - failed, failed, closed_by_server, win, (unsigned long long)msgs, msgs / (win > 0 ? win : 1), held,
           p50, p99, mx, 100 * gen_cpu / (win > 0 ? win : 1), late99, late_max_ns / 1e6, kept_up ? "yes" : "no");
    if (opt.server_pid && srv_ticks0 >= 0 && srv_ticks1 >= 0) {
        double cpu_s = (double)(srv_ticks1 - srv_ticks0) / (double)sysconf(_SC_CLK_TCK);
        printf(" server_cpu_s=%.2f server_cpu_pct=%.1f server_us_per_msg=%.2f server_rss_idle_kb=%ld server_rss_kb=%ld"
               " server_kb_per_track=%.1f",
               cpu_s, 100 * cpu_s / (win > 0 ? win : 1), msgs ? cpu_s * 1e6 / (double)msgs : 0, srv_rss_idle, srv_rss_end,
               measured ? (double)(srv_rss_end - srv_rss_idle) / measured : 0);
    }
    if (opt.stats_url) {
        print_json_oneline("stats0", stats0);
        print_json_oneline("stats1", stats1);
    }
    if (first_failure[0]) {
        printf(" first_failure=\"");
        for (const char *s = first_failure; *s; s++) putchar(*s == '"' || *s == '\n' || *s == '\r' ? '\'' : *s);
        printf("\"");
    }
    printf("\n");
    fflush(stdout);
    free(lags);
    uv_close((uv_handle_t *)&tick, NULL);
}

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

static void usage(void) {
    fprintf(stderr,
            "usage: bench_ingest_load --url ws://IP:PORT/PATH -n N [--duration S] [--warmup S] [--key K --secret S]\n"
            "         [--room-prefix P] [--wav FILE] [--server-pid PID] [--stats-url http://IP:PORT/PATH]\n"
            "         [--concurrency C] [--ping S] [--hold-ms MS]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        i++;
        if (!strcmp(a, "--url")) opt.url = v;
        else if (!strcmp(a, "-n")) opt.n = atoi(v);
        else if (!strcmp(a, "--duration")) opt.duration = atof(v);
        else if (!strcmp(a, "--warmup")) opt.warmup = atof(v);
        else if (!strcmp(a, "--key")) opt.key = v;
        else if (!strcmp(a, "--secret")) opt.secret = v;
        else if (!strcmp(a, "--room-prefix")) opt.room_prefix = v;
        else if (!strcmp(a, "--ttl")) opt.ttl = atol(v);
        else if (!strcmp(a, "--wav")) opt.wav = v;
        else if (!strcmp(a, "--server-pid")) opt.server_pid = atoi(v);
        else if (!strcmp(a, "--stats-url")) opt.stats_url = v;
        else if (!strcmp(a, "--concurrency")) opt.concurrency = atoi(v);
        else if (!strcmp(a, "--ping")) opt.ping_s = atof(v);
        else if (!strcmp(a, "--hold-ms")) opt.hold_ms = atof(v);
        else usage();
    }
    if (!opt.url || opt.n <= 0 || opt.concurrency <= 0 || (opt.key && !opt.secret)) usage();
    char ip[64];
    int port;
    if (sscanf(opt.url, "ws://%63[^:/]:%d", ip, &port) != 2) die("--url must be ws://IPv4:PORT/PATH");
    if (uv_ip4_addr(ip, port, &addr)) die("--url: host must be an IPv4 address");
    snprintf(host_hdr, sizeof host_hdr, "%s:%d", ip, port);
    const char *p = strchr(opt.url + 5, '/');
    snprintf(path, sizeof path, "%s", p ? p : "/");

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.n + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)time(NULL));
    build_ring();
    conns = calloc((size_t)opt.n, sizeof *conns);
    if (!conns) die("out of memory");
    loop = uv_default_loop();
    if (opt.server_pid) srv_rss_idle = proc_rss_kb(opt.server_pid);
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 1, 1);
    start_connects();
    uv_run(loop, UV_RUN_DEFAULT);
    return failed || closed_by_server ? 1 : 0;
}
