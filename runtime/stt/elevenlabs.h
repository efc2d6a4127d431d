/* What the ElevenLabs engine shows beyond stt.h, for its fuzz harness only: one message as if
 * the service had sent it on the stream's current connection (ignored when it has none). */
#ifndef QC_STT_ELEVENLABS_H
#define QC_STT_ELEVENLABS_H

#include <stddef.h>

#include "stt.h"

void qc_stt_elevenlabs_receive(qc_stt_stream *s, const char *data, size_t len);

#endif
