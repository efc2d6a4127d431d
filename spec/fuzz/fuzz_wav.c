/* libFuzzer harness for the WAV header parser (runtime/audio/wav.c): the input is a file's
 * first bytes. Besides the sanitizers: a header that parses points at samples inside the
 * file, a whole number of frames, with a rate and channel count the resampler takes. */
#include <string.h>

#include "audio/resampler.h"
#include "audio/wav.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    qc_wav_info w;
    /* The file may be longer than the head read from it: try both. */
    for (int longer = 0; longer < 2; longer++) {
        uint64_t file_size = size + (longer ? 1u << 20 : 0);
        if (qc_wav_parse(data, size, file_size, &w, err, sizeof err) != 0) {
            if (!err[0]) fuzz_fail("refused without a reason");
            continue;
        }
        if (w.data_offset > file_size || w.data_bytes > file_size - w.data_offset)
            fuzz_fail("samples at %llu+%llu past a file of %llu bytes", (unsigned long long)w.data_offset,
                      (unsigned long long)w.data_bytes, (unsigned long long)file_size);
        if (w.data_bytes % (2 * w.channels)) fuzz_fail("data is not whole frames");
        if (w.bits != 16 || w.channels < 1 || w.channels > QC_RESAMPLER_MAX_CHANNELS ||
            w.rate < QC_RESAMPLER_MIN_RATE || w.rate > QC_RESAMPLER_MAX_RATE)
            fuzz_fail("accepted a format the pipeline cannot take");
    }
    return 0;
}
