/* The routing trace as JSON (`moescope run --trace FILE`): a trace sink that
 * collects every token's routing and writes one document at the end. */
#ifndef MOE_TRACE_JSON_H
#define MOE_TRACE_JSON_H

#include "moescope/moescope.h"

typedef struct trace_json trace_json;

/* NULL when out of memory. The model and the tokenizer (NULL when the model
 * has none: token texts are then null) must outlive the writer. */
trace_json *trace_json_new(const moe_model *m, const moe_tokenizer *tok, const moe_sampler_params *sp);
void trace_json_free(trace_json *t);
/* The sink to hand to moe_session_set_trace; `prompt` marks the tokens
 * delivered from now on as prompt (1) or generated (0). */
moe_trace_sink trace_json_sink(trace_json *t);
void trace_json_set_prompt(trace_json *t, int prompt);
/* Record the control changes of the run (from moe_session_control_log). */
void trace_json_set_controls(trace_json *t, const moe_control_event *log, int n);
/* Write the document to path atomically (temporary file, fsync, rename).
 * Returns 0, or -1 with a message in msg. */
int trace_json_write(trace_json *t, const char *path, char *msg, size_t msglen);

/* The expert that colours a token: the most frequent top-1 expert over the
 * MoE layers (ties: the lower index), as in the MiCRo paper's plots. */
int trace_colour_vote(const moe_token_trace *t);

#endif
