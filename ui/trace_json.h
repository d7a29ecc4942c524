/* The routing trace of `moescope run --trace FILE`, kept for callers that
 * predate transcripts: a trace is now a transcript (transcript.h), and these
 * names forward to it. New code uses transcript.h directly. */
#ifndef MOE_TRACE_JSON_H
#define MOE_TRACE_JSON_H

#include "transcript.h"

typedef transcript trace_json;

static inline trace_json *trace_json_new(const moe_model *m, const moe_tokenizer *tok, const moe_sampler_params *sp)
{
    return transcript_new(m, tok, sp);
}
static inline void trace_json_free(trace_json *t) { transcript_free(t); }
static inline moe_trace_sink trace_json_sink(trace_json *t) { return transcript_sink(t); }
static inline void trace_json_set_prompt(trace_json *t, int prompt) { transcript_set_prompt(t, prompt); }
static inline void trace_json_set_controls(trace_json *t, const moe_control_event *log, int n)
{
    transcript_sync_controls(t, log, n, 0);
}
static inline int trace_json_write(trace_json *t, const char *path, char *msg, size_t msglen)
{
    return transcript_save(t, path, msg, msglen);
}
static inline int trace_colour_vote(const moe_token_trace *t) { return transcript_colour_vote(t); }

#endif
