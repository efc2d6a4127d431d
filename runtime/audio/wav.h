/* The header of a WAV file (RIFF/WAVE): where the samples start, how many bytes they take,
 * their rate and channel count. Only what quantcoach transcribe reads: 16-bit PCM, plain or
 * WAVE_FORMAT_EXTENSIBLE. The bytes are a file's first bytes and are not trusted. */
#ifndef QC_AUDIO_WAV_H
#define QC_AUDIO_WAV_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    unsigned rate, channels, bits;
    uint64_t data_offset; /* first byte of the samples */
    uint64_t data_bytes;  /* as the header says, cut to the file; a whole number of frames */
    uint64_t missing_bytes; /* what the header names past the file's end (a cut-off copy), 0 when
                               it fits or the size is a streaming writer's placeholder */
} qc_wav_info;

/* head holds the file's first len bytes, file_size is the whole file's. 0 with *out, or -1
 * with err naming what is wrong (not RIFF/WAVE, no fmt or data chunk in the first len
 * bytes, not 16-bit PCM, a rate or channel count out of range). A data size larger than
 * the file (a writer that never came back to fill it in) means "to the end". */
int qc_wav_parse(const uint8_t *head, size_t len, uint64_t file_size, qc_wav_info *out, char *err, size_t errlen);

#endif
