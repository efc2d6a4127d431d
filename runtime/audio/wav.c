/* RIFF walking with every size checked against what is there: a chunk size is 32 bits from
 * the file, and the offsets are kept in 64 bits so no sum of them wraps. */
#include "audio/wav.h"

#include <stdio.h>
#include <string.h>

#include "audio/resampler.h"

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static unsigned le16(const uint8_t *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }

#define FMT_PCM 1
#define FMT_EXTENSIBLE 0xFFFE

int qc_wav_parse(const uint8_t *head, size_t len, uint64_t file_size, qc_wav_info *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (len < 12 || memcmp(head, "RIFF", 4) != 0 || memcmp(head + 8, "WAVE", 4) != 0) {
        snprintf(err, errlen, "not a WAV file (no RIFF/WAVE header)");
        return -1;
    }
    if (file_size < len) file_size = len;
    int have_fmt = 0;
    uint64_t at = 12;
    while (at + 8 <= len) {
        const uint8_t *c = head + at;
        uint64_t size = le32(c + 4), body = at + 8;
        if (memcmp(c, "fmt ", 4) == 0) {
            if (size < 16 || body + 16 > len) {
                snprintf(err, errlen, "WAV fmt chunk too short");
                return -1;
            }
            const uint8_t *f = head + body;
            unsigned format = le16(f);
            out->channels = le16(f + 2);
            out->rate = le32(f + 4);
            out->bits = le16(f + 14);
            if (format == FMT_EXTENSIBLE) {
                /* The sub-format GUID's first two bytes are the real format tag. */
                if (size < 40 || body + 26 > len) {
                    snprintf(err, errlen, "WAV extensible fmt chunk too short");
                    return -1;
                }
                format = le16(f + 24);
            }
            if (format != FMT_PCM || out->bits != 16) {
                snprintf(err, errlen, "WAV is not 16-bit PCM (format %u, %u bits): convert it, e.g. sox IN -b 16 -e signed OUT.wav",
                         format, out->bits);
                return -1;
            }
            if (out->channels < 1 || out->channels > QC_RESAMPLER_MAX_CHANNELS) {
                snprintf(err, errlen, "WAV has %u channels (1 to %u are read)", out->channels, QC_RESAMPLER_MAX_CHANNELS);
                return -1;
            }
            if (out->rate < QC_RESAMPLER_MIN_RATE || out->rate > QC_RESAMPLER_MAX_RATE) {
                snprintf(err, errlen, "WAV sample rate %u out of range %u..%u", out->rate, QC_RESAMPLER_MIN_RATE,
                         QC_RESAMPLER_MAX_RATE);
                return -1;
            }
            have_fmt = 1;
        } else if (memcmp(c, "data", 4) == 0) {
            if (!have_fmt) {
                snprintf(err, errlen, "WAV data chunk before its fmt chunk");
                return -1;
            }
            uint64_t avail = file_size > body ? file_size - body : 0;
            out->data_offset = body;
            out->data_bytes = size < avail ? size : avail;
            /* 0 and 0xFFFFFFFF are what writers that stream (sox to a pipe, arecord) leave
             * behind: "to the end", not a promise of more. */
            out->missing_bytes = size > avail && size != 0xFFFFFFFFu && size != 0 ? size - avail : 0;
            out->data_bytes -= out->data_bytes % (2 * (uint64_t)out->channels);
            return 0;
        }
        at = body + size + (size & 1); /* chunks are padded to an even length */
    }
    snprintf(err, errlen, have_fmt ? "WAV data chunk not found" : "WAV fmt chunk not found");
    return -1;
}
