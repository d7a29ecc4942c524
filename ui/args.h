/* Command-line parsing shared by the subcommands: numbers with ranges, and
 * the messages a user sees when a flag is wrong. */
#ifndef MOE_ARGS_H
#define MOE_ARGS_H

#include <stdint.h>

#include "moescope/moescope.h"

/* Parse `s` as an integer in [lo, hi] or a float in [lo, hi]. On failure
 * print "moescope: FLAG: ..." to stderr and return 0. */
int arg_int(const char *flag, const char *s, long lo, long hi, long *out);
int arg_float(const char *flag, const char *s, double lo, double hi, double *out);
/* "1,5,9" -> ids. Returns the count, or -1 after printing an error. *ids is
 * malloc'ed; the caller frees it. */
int arg_id_list(const char *flag, const char *s, int32_t **ids);

/* --kv-type: "f32" -> MOE_F32, "f16" -> MOE_F16, "q8_0" -> MOE_Q8_0;
 * --act-type: "f32" -> MOE_F32, "q8" -> MOE_Q8_0 (8-bit activations for
 * K-quant weights). On failure print the error, naming every choice, and
 * return 0. */
int arg_kv_type(const char *flag, const char *s, moe_dtype *out);
int arg_act_type(const char *flag, const char *s, moe_dtype *out);
/* The help line for --act-type, shared by the commands that take it. */
#define ACT_TYPE_HELP                                                                                        \
    "  --act-type T           activations meeting Q4_K/Q5_K/Q6_K weights: q8 (8-bit, integer\n"         \
    "                         kernels, as llama.cpp; default with AVX2/AVX-512) or f32 (exact)\n"

/* Print "moescope: error: MSG" and return 1 (the exit status). */
int fail_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
