/* speexdsp behind qc_resampler: downmix in fixed blocks into a scratch buffer made once, then
 * the int16 API of a mono speex resampler. 16 kHz mono input is copied as it is. */
#include "audio/resampler.h"

#include <speex/speex_resampler.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Frames downmixed per speex call: 10 ms at 48 kHz, the size of an Egress message. */
#define BLOCK 480

struct qc_resampler {
    SpeexResamplerState *st; /* NULL when the input is already 16 kHz */
    unsigned rate, channels;
    int16_t mono[BLOCK];
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
        int e = 0;
        r->st = speex_resampler_init(1, in_rate, QC_RESAMPLER_OUT_RATE, quality, &e);
        if (!r->st) {
            snprintf(err, errlen, "speexdsp: %s", speex_resampler_strerror(e));
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
 * speech (a mono source sent as stereo) halves the level rather than distorting it. */
static void downmix(const int16_t *in, size_t nframes, unsigned channels, int16_t *out) {
    if (channels == 2) {
        for (size_t i = 0; i < nframes; i++) {
            int32_t s = (int32_t)in[2 * i] + in[2 * i + 1];
            out[i] = (int16_t)(s / 2);
        }
        return;
    }
    for (size_t i = 0; i < nframes; i++) {
        int32_t s = 0;
        for (unsigned c = 0; c < channels; c++) s += in[i * channels + c];
        out[i] = (int16_t)(s / (int32_t)channels);
    }
}

size_t qc_resampler_process(qc_resampler *r, const int16_t *in, size_t nframes, int16_t *out, size_t out_cap) {
    size_t written = 0;
    while (nframes > 0 && written < out_cap) {
        size_t n = nframes < BLOCK ? nframes : BLOCK;
        const int16_t *mono = in;
        if (r->channels > 1) {
            downmix(in, n, r->channels, r->mono);
            mono = r->mono;
        }
        if (!r->st) {
            size_t k = n < out_cap - written ? n : out_cap - written;
            memcpy(out + written, mono, k * sizeof *out);
            written += k;
        } else {
            /* speex takes everything given enough room, which out_max promises; with less it
             * stops early and the rest of this block is lost, as the contract says. */
            spx_uint32_t in_len = (spx_uint32_t)n, out_len = (spx_uint32_t)(out_cap - written);
            speex_resampler_process_int(r->st, 0, mono, &in_len, out + written, &out_len);
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
    free(r);
}
