/* Audio from a track to what every STT engine takes: interleaved s16 frames of any rate and
 * channel count, downmixed to mono (the average of the channels) and resampled by speexdsp to
 * 16 kHz. Everything is allocated by qc_resampler_new; processing allocates nothing. */
#ifndef QC_AUDIO_RESAMPLER_H
#define QC_AUDIO_RESAMPLER_H

#include <stddef.h>
#include <stdint.h>

#define QC_RESAMPLER_OUT_RATE 16000
#define QC_RESAMPLER_MIN_RATE 8000
#define QC_RESAMPLER_MAX_RATE 192000
#define QC_RESAMPLER_MAX_CHANNELS 8

typedef struct qc_resampler qc_resampler;

/* in_rate from QC_RESAMPLER_MIN_RATE to QC_RESAMPLER_MAX_RATE, channels from 1 to
 * QC_RESAMPLER_MAX_CHANNELS, quality 0..10 (speexdsp's). NULL with err otherwise. */
qc_resampler *qc_resampler_new(unsigned in_rate, unsigned channels, int quality, char *err, size_t errlen);

/* Most output samples that nframes input frames can give (for sizing out). */
size_t qc_resampler_out_max(const qc_resampler *r, size_t nframes);

/* Consumes all nframes interleaved frames of in and writes the mono 16 kHz samples they
 * give to out, at most out_cap of them (out_cap >= qc_resampler_out_max(r, nframes) is
 * always enough). Returns the number written. The filter's delay is removed at the start,
 * so sample k of the output is at time k / 16000 of the input. */
size_t qc_resampler_process(qc_resampler *r, const int16_t *in, size_t nframes, int16_t *out, size_t out_cap);

unsigned qc_resampler_rate(const qc_resampler *r);
unsigned qc_resampler_channels(const qc_resampler *r);

void qc_resampler_free(qc_resampler *r);

#endif
