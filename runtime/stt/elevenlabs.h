/* What the ElevenLabs engine shows beyond stt.h. */
#ifndef QC_STT_ELEVENLABS_H
#define QC_STT_ELEVENLABS_H

#include <stddef.h>

#include "stt.h"

/* For its fuzz harness: one message as if the service had sent it on the stream's current
 * connection (ignored when it has none). */
void qc_stt_elevenlabs_receive(qc_stt_stream *s, const char *data, size_t len);

/* Samples the stream can take now (its ring's free room): the engine's `room` operation,
 * for the ops table once stt.h has that member (the audio branch adds it). */
size_t qc_stt_elevenlabs_room(const qc_stt_stream *s);

#endif
