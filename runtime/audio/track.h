/* One participant's audio track on its way to words: s16le interleaved bytes as they arrive
 * (Egress: 48 kHz stereo, ~10 ms binary messages that need not hold whole frames), downmixed
 * and resampled to 16 kHz mono, written to the track's own STT stream. A track allocates
 * everything when it is made; feeding it allocates nothing. Loop thread only. */
#ifndef QC_AUDIO_TRACK_H
#define QC_AUDIO_TRACK_H

#include <stddef.h>
#include <stdint.h>

#include "stt/stt.h"

typedef struct qc_track qc_track;

typedef struct {
    uint64_t bytes_in;       /* bytes given to qc_track_feed */
    uint64_t frames_in;      /* whole input frames (one sample per channel) */
    uint64_t samples_out;    /* 16 kHz samples the STT stream took */
    uint64_t dropped;        /* 16 kHz samples the STT stream refused (its buffer was full) */
    uint64_t mute_changes;   /* times the muted flag changed */
    size_t carried;          /* bytes of an incomplete frame waiting for the rest */
    int muted;
} qc_track_stats;

/* rate and channels of the input (see audio/resampler.h for the ranges), quality 0..10.
 * cb and ud receive the STT stream's results and states (a result's times are on the
 * stream's clock: seconds of audio fed before it; adding the track's offset on the
 * interview clock is the caller's). NULL with err when the rate, channels or quality are
 * out of range or the engine cannot open a stream. */
qc_track *qc_track_new(qc_stt_engine *e, unsigned rate, unsigned channels, int quality, const qc_stt_callbacks *cb,
                       void *ud, char *err, size_t errlen);

/* Takes len bytes of s16le interleaved audio, in a piece of any size: a frame split across
 * calls is completed by the next one. */
void qc_track_feed(qc_track *t, const void *bytes, size_t len);

/* Bytes one input frame takes (2 x channels). */
size_t qc_track_frame_bytes(const qc_track *t);

/* 16 kHz samples the STT stream can take now (SIZE_MAX when the engine does not say): a
 * producer that may wait (quantcoach transcribe) feeds only what fits. */
size_t qc_track_room(const qc_track *t);

/* Egress keeps sending (silent) audio while a track is muted; the flag is recorded, the audio
 * flows on unchanged. */
void qc_track_set_muted(qc_track *t, int muted);

void qc_track_stats_get(const qc_track *t, qc_track_stats *out);

/* End of the audio: an incomplete trailing frame is dropped, the STT stream is finished, its
 * last results and QC_STT_CLOSED reach cb, then the track frees itself. Call once, no other
 * call on t after it. */
void qc_track_finish(qc_track *t);

/* Drops the track and its stream at once: no callback after this returns. */
void qc_track_abort(qc_track *t);

#endif
