/* speexdsp behind qc_resampler: the downmix and the conversion to float in one pass into a
 * scratch block made once, speexdsp's float API on one mono channel, and the conversion back
 * to int16 done here. Speex's int16 API would convert both ways itself, one strided scalar
 * sample at a time (in its float build, Debian's, about a fifth of its cost per Egress
 * message); doing it here lets the downmix and both conversions run 4 and 8 samples to an
 * instruction. 16 kHz input is downmixed and copied as it is. */
#include "audio/resampler.h"

#include <speex/speex_resampler.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Frames downmixed per speex call: 10 ms at 48 kHz, the size of an Egress message. */
#define BLOCK 480

struct qc_resampler {
    SpeexResamplerState *st; /* NULL when the input is already 16 kHz */
    unsigned rate, channels;
    size_t y_cap; /* floats in y: the most one block can give */
    float *y;     /* speex's output for one block */
    union {
        float f[BLOCK];   /* the downmixed block, speex's input */
        int16_t i[BLOCK]; /* the downmixed block when there is no speex */
    } x;
};

qc_resampler *qc_resampler_new(unsigned in_rate, unsigned channels, int quality, char *err, size_t errlen) {
    if (in_rate < QC_RESAMPLER_MIN_RATE || in_rate > QC_RESAMPLER_MAX_RATE) {
        snprintf(err, errlen, "sample rate %u out of range %u..%u", in_rate, QC_RESAMPLER_MIN_RATE,
                 QC_RESAMPLER_MAX_RATE);
        return NULL;
    }
    if (channels < 1 || channels > QC_RESAMPLER_MAX_CHANNELS) {
        snprintf(err, errlen, "channel count %u out of range 1..%u", channels, QC_RESAMPLER_MAX_CHANNELS);
        return NULL;
    }
    if (quality < 0 || quality > 10) {
        snprintf(err, errlen, "resampler quality %d out of range 0..10", quality);
        return NULL;
    }
    qc_resampler *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->rate = in_rate;
    r->channels = channels;
    if (in_rate != QC_RESAMPLER_OUT_RATE) {
        r->y_cap = qc_resampler_out_max(r, BLOCK);
        r->y = malloc(r->y_cap * sizeof *r->y);
        int e = 0;
        r->st = r->y ? speex_resampler_init(1, in_rate, QC_RESAMPLER_OUT_RATE, quality, &e) : NULL;
        if (!r->st) {
            snprintf(err, errlen, "speexdsp: %s", r->y ? speex_resampler_strerror(e) : "out of memory");
            free(r->y);
            free(r);
            return NULL;
        }
        /* Without this the output starts with the filter's delay in zeros, and every time the
         * STT engine reports would be late by it. */
        speex_resampler_skip_zeros(r->st);
    }
    return r;
}

size_t qc_resampler_out_max(const qc_resampler *r, size_t nframes) {
    /* speex may emit one sample more than the exact ratio in a call, per block. */
    size_t blocks = nframes / BLOCK + 1;
    return (size_t)(((uint64_t)nframes * QC_RESAMPLER_OUT_RATE + r->rate - 1) / r->rate) + blocks + 1;
}

/* The average of the channels: it cannot clip, and a channel of silence next to one of
 * speech (a mono source sent as stereo) halves the level rather than distorting it. Two
 * channels, the Egress case, take 4 frames per step: pmaddwd adds each adjacent pair of
 * int16 into an int32. */
static void downmix_float(const int16_t *in, size_t nframes, unsigned channels, float *out) {
    size_t i = 0;
    if (channels == 2) {
#if defined(__SSE2__)
        const __m128i ones = _mm_set1_epi16(1);
        const __m128 half = _mm_set1_ps(0.5f);
        for (; i + 4 <= nframes; i += 4) {
            __m128i lr = _mm_loadu_si128((const __m128i *)(in + 2 * i));
            _mm_storeu_ps(out + i, _mm_mul_ps(_mm_cvtepi32_ps(_mm_madd_epi16(lr, ones)), half));
        }
#endif
        for (; i < nframes; i++) out[i] = (float)((int32_t)in[2 * i] + in[2 * i + 1]) * 0.5f;
        return;
    }
    const float scale = 1.0f / (float)channels;
    for (; i < nframes; i++) {
        int32_t s = 0;
        for (unsigned c = 0; c < channels; c++) s += in[i * channels + c];
        out[i] = (float)s * scale;
    }
}

/* The same average in int16 for 16 kHz input, which speex does not see. */
static void downmix_int(const int16_t *in, size_t nframes, unsigned channels, int16_t *out) {
    for (size_t i = 0; i < nframes; i++) {
        int32_t s = 0;
        for (unsigned c = 0; c < channels; c++) s += in[i * channels + c];
        out[i] = (int16_t)(s / (int32_t)channels);
    }
}

/* Rounded to the nearest int16 and saturated, as speex's int16 API does. */
static void to_int16(const float *y, size_t n, int16_t *out) {
    size_t i = 0;
#if defined(__SSE2__)
    /* cvtps2dq rounds to nearest (the default MXCSR mode); packssdw saturates. */
    for (; i + 8 <= n; i += 8) {
        __m128i a = _mm_cvtps_epi32(_mm_loadu_ps(y + i)), b = _mm_cvtps_epi32(_mm_loadu_ps(y + i + 4));
        _mm_storeu_si128((__m128i *)(out + i), _mm_packs_epi32(a, b));
    }
#endif
    for (; i < n; i++) {
        float v = y[i];
        if (v < -32768.0f) v = -32768.0f;
        if (v > 32767.0f) v = 32767.0f;
        out[i] = (int16_t)(v < 0 ? v - 0.5f : v + 0.5f);
    }
}

size_t qc_resampler_process(qc_resampler *r, const int16_t *in, size_t nframes, int16_t *out, size_t out_cap) {
    size_t written = 0;
    while (nframes > 0 && written < out_cap) {
        size_t n = nframes < BLOCK ? nframes : BLOCK;
        if (!r->st) {
            const int16_t *mono = in;
            if (r->channels > 1) {
                downmix_int(in, n, r->channels, r->x.i);
                mono = r->x.i;
            }
            size_t k = n < out_cap - written ? n : out_cap - written;
            memcpy(out + written, mono, k * sizeof *out);
            written += k;
        } else {
            downmix_float(in, n, r->channels, r->x.f);
            /* speex takes everything given enough room, which y_cap promises; with less (a
             * short out) it stops early and the rest of this block is lost, as the contract
             * says. */
            size_t room = out_cap - written < r->y_cap ? out_cap - written : r->y_cap;
            spx_uint32_t in_len = (spx_uint32_t)n, out_len = (spx_uint32_t)room;
            speex_resampler_process_float(r->st, 0, r->x.f, &in_len, r->y, &out_len);
            to_int16(r->y, out_len, out + written);
            written += out_len;
        }
        in += n * r->channels;
        nframes -= n;
    }
    return written;
}

unsigned qc_resampler_rate(const qc_resampler *r) { return r->rate; }
unsigned qc_resampler_channels(const qc_resampler *r) { return r->channels; }

void qc_resampler_free(qc_resampler *r) {
    if (!r) return;
    if (r->st) speex_resampler_destroy(r->st);
    free(r->y);
    free(r);
}
