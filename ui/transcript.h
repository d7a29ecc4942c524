/* Session transcripts: everything a session showed — the model's identity,
 * the sampler, the turns, every token with its routing in every MoE layer,
 * every control change — collected in memory as it happens, saved
 * atomically as versioned JSON (docs/transcript.schema.json) and loaded
 * back with every field checked, so a review, a replay or an export can
 * trust what it reads.
 *
 * A transcript is not thread-safe: a front end that generates on a worker
 * thread appends and saves under its own lock. */
#ifndef MOE_TRANSCRIPT_H
#define MOE_TRANSCRIPT_H

#include <stddef.h>
#include <stdint.h>

#include "moescope/moescope.h"

/* The format version this build writes and the newest it reads. Version 0
 * is the `run --trace` document of before transcripts (no "format" key);
 * it still opens. */
#define TRANSCRIPT_VERSION 1
#define TRANSCRIPT_FORMAT "moescope-transcript"

typedef struct transcript transcript;

/* The model a transcript was made with. Strings live as long as the
 * transcript. */
typedef struct {
    const char *arch;          /* "mixtral", "olmoe", ... */
    const char *hf_class;      /* "MixtralForCausalLM"; "" when unknown */
    const char *path;          /* the directory the weights came from */
    const char *config_sha256; /* 64 hex digits: SHA-256 of config.json; NULL when unknown */
    int n_layers, n_moe_layers, n_experts, k;
    int vocab;                 /* 0 when unknown (version 0) */
    const int *moe_layers;     /* (n_moe_layers) layer index of each MoE layer; NULL until the first token */
    const char *const *expert_names; /* (n_experts) or NULL: experts are numbers */
} transcript_model;

typedef struct {
    const char *role;          /* "system", "user", "assistant" */
    const char *text;          /* NUL-terminated */
    int token;                 /* index of the first token of the turn (non-decreasing) */
    double time;               /* seconds since the transcript was created */
} transcript_turn;

typedef struct {
    int pos;                   /* position in the sequence (= its index) */
    int32_t id;
    const char *text;          /* the piece's bytes, NUL-terminated; NULL when unknown */
    size_t len;                /* bytes in text */
    int prompt;                /* 1: fed as a prompt; 0: generated */
    int colour;                /* the expert that colours it (layer vote); -1: none */
    double time;               /* seconds since creation; -1: unknown */
} transcript_token;

typedef struct {
    int pos;                   /* the first position it applies to */
    const char *change;        /* the control vocabulary: "k 2", "off L1:5", "reset" */
    double time;               /* seconds since creation; -1: before the session began */
} transcript_control;

/* A new, empty transcript for a session on model m. The tokenizer (NULL
 * when the model has none: texts are then unknown) must outlive the
 * recording (the last transcript_add_token); the model need not. Reads <model path>/config.json to digest
 * it (an unreadable config leaves the digest unknown). NULL when out of
 * memory. */
transcript *transcript_new(const moe_model *m, const moe_tokenizer *tok, const moe_sampler_params *sp);
void transcript_free(transcript *t);

/* ---- recording (a front end calls these as things happen) ------------- */

/* A trace sink that appends every token delivered to it (see
 * transcript_add_token); hand it to moe_session_set_trace, or call it from
 * your own sink. */
moe_trace_sink transcript_sink(transcript *t);
/* Tokens delivered from now on are prompt (1) or generated (0). */
void transcript_set_prompt(transcript *t, int prompt);
/* Record a token: append it when t->pos is the next position, or overwrite
 * the routing of an earlier position (a re-prefill sees every token again;
 * its prompt flag and time are kept). Returns 0, or -1 when out of memory
 * or the position skips ahead (the transcript is then unchanged; the error
 * is also reported by the next save). */
int transcript_add_token(transcript *t, const moe_token_trace *tt);
/* Start a turn at the next token. Returns its index, or -1 when out of
 * memory. text may be NULL (empty) and grow with transcript_turn_append. */
int transcript_add_turn(transcript *t, const char *role, const char *text);
int transcript_turn_append(transcript *t, int turn, const char *text, size_t len);
/* Record a control change at position pos; time < 0: before the session
 * began, otherwise now. Returns 0 or -1 when out of memory. */
int transcript_add_control(transcript *t, int pos, const char *change, int timed);
/* Append the entries of a session's control log (moe_session_control_log)
 * that the transcript does not have yet, stamped with the current time
 * (timed) or none. Call it after every change. */
int transcript_sync_controls(transcript *t, const moe_control_event *log, int n, int timed);
/* Treat the first n entries of a session's log as recorded already (a
 * front end that starts a new transcript on a session with a history
 * records the controls in force itself). */
void transcript_controls_seen(transcript *t, int n);

/* ---- saving and loading ----------------------------------------------- */

/* Write the transcript to path atomically: a temporary file beside it,
 * fsync, rename over path, fsync the directory. Returns 0, or -1 with a
 * message naming path in msg; the transcript is untouched either way and
 * an existing file at path is left as it was on failure. */
int transcript_save(const transcript *t, const char *path, char *msg, size_t msglen);
/* As transcript_save without the fsyncs: the file is still replaced
 * atomically, so a crash of this process (kill -9 too) leaves the old file
 * or the new one whole, but a crash of the machine may lose the latest.
 * For the explorer's autosave between tokens, where a sync per save cost
 * more than the formatting. */
int transcript_save_quick(const transcript *t, const char *path, char *msg, size_t msglen);

/* Read and check a transcript (any version up to TRANSCRIPT_VERSION).
 * Returns it (free with transcript_free), or NULL with a message naming
 * the file and what is wrong in msg ("x.json: tokens[3].layers[1].probs:
 * 7 values, but the model has 8 experts"). Never trusts the file: sizes,
 * types, ranges and cross-references are all checked. */
transcript *transcript_load(const char *path, char *msg, size_t msglen);

/* ---- reading ---------------------------------------------------------- */

int transcript_version(const transcript *t); /* of the file it was loaded from; TRANSCRIPT_VERSION if new */
const char *transcript_created(const transcript *t); /* ISO 8601 UTC */
const transcript_model *transcript_model_get(const transcript *t);
const moe_sampler_params *transcript_sampler(const transcript *t);
int transcript_n_tokens(const transcript *t);
int transcript_n_turns(const transcript *t);
int transcript_n_controls(const transcript *t);
/* Pointers stay valid until the transcript next changes. */
const transcript_token *transcript_token_at(const transcript *t, int i);
const transcript_turn *transcript_turn_at(const transcript *t, int i);
const transcript_control *transcript_control_at(const transcript *t, int i);
/* Token i's routing in MoE layer r (0 <= r < n_moe_layers), as the engine
 * delivered it (probabilities to 5 decimals after a load). */
void transcript_route(const transcript *t, int i, int r, moe_route *out);
/* Token i as the engine's trace record, for feeding the same sinks a live
 * session feeds (the explorer's review mode). routes holds n_moe_layers. */
void transcript_token_trace(const transcript *t, int i, moe_route *routes, moe_token_trace *out);

/* 0 if a and b hold the same session (probabilities and weights within
 * tol), else 1 with the first difference in msg. */
int transcript_compare(const transcript *a, const transcript *b, double tol, char *msg, size_t msglen);

/* The expert that colours a token: the most frequent top-1 expert over the
 * MoE layers (ties: the lower index), as in the MiCRo paper's plots; -1
 * for a dense model. */
/* 1 if s[0..n) is valid UTF-8 without NUL bytes (JSON strings must be). */
int transcript_utf8_ok(const unsigned char *s, size_t n);
int transcript_colour_vote(const moe_token_trace *t);

/* SHA-256 of a file as 64 hex digits plus NUL in hex. 0, or -1 (errno set). */
int transcript_sha256_file(const char *path, char hex[65]);

#endif
