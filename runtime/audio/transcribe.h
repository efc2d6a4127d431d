/* quantcoach transcribe: WAV files through the same track pipeline as live audio
 * (qc_track: downmix, speexdsp, an STT engine), all on one clock that starts at 0, printed
 * as one transcript ordered by time with each line's speaker. */
#ifndef QC_AUDIO_TRANSCRIBE_H
#define QC_AUDIO_TRANSCRIBE_H

#include <stdio.h>

#include "config.h"

#define QC_TRANSCRIBE_MAX_TRACKS 16

typedef struct {
    const char *role[QC_TRANSCRIBE_MAX_TRACKS]; /* "interviewer"; a bare file's is "speaker" */
    const char *file[QC_TRANSCRIBE_MAX_TRACKS];
    int ntracks;
    const char *engine; /* NULL: QC_STT_ENGINE */
    int json;
    int help;
    int evaluate;          /* --evaluate: main.c runs scripts/evaluate_room.lua over the JSON */
    const char *evaluator; /* --evaluator, passed through; NULL: QC_EVALUATOR */
    const char *policies;  /* --policies, passed through */
    FILE *out;             /* where the transcript goes; NULL: stdout */
} qc_transcribe_opts;

extern const char *qc_transcribe_help;

/* Parses the arguments after `transcribe`. 0, or 2 after a usage error on stderr. */
int qc_transcribe_parse(int argc, char **argv, qc_transcribe_opts *o);

/* Runs it: the transcript to stdout; 0, 1 when a file or the engine fails (a line on
 * stderr), 2 for an engine name that does not exist. */
int qc_transcribe_run(const qc_transcribe_opts *o, const qc_config *cfg);

#endif
