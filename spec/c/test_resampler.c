/* runtime/audio/resampler.c against known tones: a 1 kHz tone at 48 kHz stereo keeps its
 * frequency and level at 16 kHz mono; a 12 kHz tone, above the new Nyquist of 8 kHz, is not
 * folded down into the band (>= 40 dB down); feeding in pieces gives what one call gives;
 * downmixing averages without clipping. TAP output. */
#define _POSIX_C_SOURCE 200809L
#include "audio/resampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#define PI 3.14159265358979323846

#define IN_RATE 48000
#define SECONDS 1

static int16_t *tone(double hz, double amp, unsigned rate, unsigned channels, size_t nframes) {
    int16_t *b = malloc(nframes * channels * sizeof *b);
    for (size_t i = 0; i < nframes; i++)
        for (unsigned c = 0; c < channels; c++)
            b[i * channels + c] = (int16_t)lrint(amp * sin(2 * PI * hz * (double)i / rate));
    return b;
}

static double rms(const int16_t *s, size_t n) {
    double acc = 0;
    for (size_t i = 0; i < n; i++) acc += (double)s[i] * s[i];
    return sqrt(acc / (double)n);
}

/* Power of one frequency (Goertzel), normalised so a full sine of amplitude A gives A. */
static double goertzel(const int16_t *s, size_t n, double hz, unsigned rate) {
    double w = 2 * PI * hz / rate, c = 2 * cos(w), s1 = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        double s0 = s[i] + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    double p = s1 * s1 + s2 * s2 - c * s1 * s2;
    return 2 * sqrt(p) / (double)n;
}

static size_t zero_crossings(const int16_t *s, size_t n) {
    size_t z = 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i - 1] < 0) != (s[i] < 0)) z++;
    return z;
}

static size_t run(qc_resampler *r, const int16_t *in, size_t nframes, int16_t *out, size_t cap) {
    return qc_resampler_process(r, in, nframes, out, cap);
}

int main(void) {
    char err[256];
    size_t nframes = IN_RATE * SECONDS;
    int16_t *out = malloc(2 * 16000 * SECONDS * sizeof *out + 4096);
    size_t cap = 2 * 16000 * SECONDS + 2048;

    /* 1 kHz, amplitude 10000, both channels. */
    qc_resampler *r = qc_resampler_new(IN_RATE, 2, 3, err, sizeof err);
    ok(r != NULL, "a 48 kHz stereo resampler at quality 3 is made");
    ok(qc_resampler_out_max(r, nframes) <= cap, "out_max of one second is about 16000 samples");
    int16_t *in = tone(1000, 10000, IN_RATE, 2, nframes);
    size_t n = run(r, in, nframes, out, cap);
    ok(n >= 15900 && n <= 16000, "one second at 48 kHz gives about 16000 samples");
    /* Skip the first 10 ms: the filter's edge. */
    const int16_t *body = out + 160;
    size_t bn = n - 320;
    double level = rms(body, bn), want = 10000 / sqrt(2);
    double db = 20 * log10(level / want);
    printf("# 1 kHz: rms %.1f (want %.1f, %.2f dB), zero crossings %zu in %zu samples\n", level, want, db, zero_crossings(body, bn), bn);
    ok(fabs(db) < 1.0, "the 1 kHz tone keeps its level within 1 dB");
    double zc_hz = (double)zero_crossings(body, bn) / 2 / ((double)bn / 16000);
    ok(fabs(zc_hz - 1000) < 5, "the 1 kHz tone keeps its frequency (zero crossings)");
    double g1 = goertzel(body, bn, 1000, 16000), g9 = goertzel(body, bn, 900, 16000);
    ok(g1 > 9000 && g9 < g1 / 100, "its energy sits at 1 kHz (Goertzel), not at 900 Hz");
    qc_resampler_free(r);
    free(in);

    /* 12 kHz would fold to 4 kHz if the low-pass were missing. */
    r = qc_resampler_new(IN_RATE, 2, 3, err, sizeof err);
    in = tone(12000, 10000, IN_RATE, 2, nframes);
    n = run(r, in, nframes, out, cap);
    body = out + 160;
    bn = n - 320;
    double in_level = 10000 / sqrt(2), out_level = rms(body, bn);
    double down = 20 * log10(in_level / (out_level > 0.01 ? out_level : 0.01));
    double folded = goertzel(body, bn, 4000, 16000);
    printf("# 12 kHz: rms out %.2f, %.1f dB down; at 4 kHz %.2f\n", out_level, down, folded);
    ok(down >= 40, "a 12 kHz tone comes out at least 40 dB down (nothing above 8 kHz aliased)");
    ok(folded < 100, "nothing of it appears at 4 kHz, where it would fold");
    qc_resampler_free(r);
    free(in);

    /* The same input in pieces of odd sizes gives the same samples as in one call. */
    in = tone(440, 8000, IN_RATE, 2, nframes);
    r = qc_resampler_new(IN_RATE, 2, 3, err, sizeof err);
    n = run(r, in, nframes, out, cap);
    qc_resampler_free(r);
    int16_t *out2 = malloc(cap * sizeof *out2);
    r = qc_resampler_new(IN_RATE, 2, 3, err, sizeof err);
    size_t n2 = 0, at = 0, step = 1;
    while (at < nframes) {
        size_t k = step < nframes - at ? step : nframes - at;
        n2 += run(r, in + at * 2, k, out2 + n2, cap - n2);
        at += k;
        step = step * 7 % 1013 + 1;
    }
    qc_resampler_free(r);
    ok(n == n2 && memcmp(out, out2, n * sizeof *out) == 0, "feeding in pieces of 1 to 1013 frames equals one call");
    free(in);
    free(out2);

    /* Downmix: opposite channels cancel; full-scale channels stay full scale, no wrap. */
    int16_t st[2 * 480];
    for (int i = 0; i < 480; i++) st[2 * i] = 32767, st[2 * i + 1] = 32767;
    r = qc_resampler_new(16000, 2, 3, err, sizeof err);
    n = run(r, st, 480, out, cap);
    int full = n == 480;
    for (size_t i = 0; i < n; i++) full &= out[i] == 32767;
    ok(full, "two full-scale channels average to full scale (no overflow)");
    for (int i = 0; i < 480; i++) st[2 * i] = -32768, st[2 * i + 1] = 32767;
    n = run(r, st, 480, out, cap);
    int quiet = 1;
    for (size_t i = 0; i < n; i++) quiet &= out[i] == 0 || out[i] == -1;
    ok(quiet, "opposite channels average to silence");
    qc_resampler_free(r);

    /* 16 kHz mono is passed through untouched. */
    in = tone(1000, 5000, 16000, 1, 1600);
    r = qc_resampler_new(16000, 1, 3, err, sizeof err);
    n = run(r, in, 1600, out, cap);
    ok(n == 1600 && memcmp(in, out, 1600 * sizeof *in) == 0, "16 kHz mono passes through unchanged");
    qc_resampler_free(r);
    free(in);

    /* 44.1 kHz mono: any rate gives 16 kHz. */
    in = tone(1000, 10000, 44100, 1, 44100);
    r = qc_resampler_new(44100, 1, 5, err, sizeof err);
    n = run(r, in, 44100, out, cap);
    ok(n >= 15900 && n <= 16000 && fabs(20 * log10(rms(out + 160, n - 320) / want)) < 1,
       "44.1 kHz mono at quality 5 gives one second at 16 kHz with the tone's level");
    qc_resampler_free(r);
    free(in);

    ok(!qc_resampler_new(7999, 1, 3, err, sizeof err) && strstr(err, "rate"), "a rate below 8 kHz is refused");
    ok(!qc_resampler_new(48000, 0, 3, err, sizeof err) && strstr(err, "channel"), "zero channels are refused");
    ok(!qc_resampler_new(48000, 9, 3, err, sizeof err), "nine channels are refused");
    ok(!qc_resampler_new(48000, 2, 11, err, sizeof err) && strstr(err, "quality"), "quality 11 is refused");

    free(out);
    printf("1..%d\n", count);
    return failures ? 1 : 0;
}
