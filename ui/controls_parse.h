/* The control vocabulary shared by the command-line flags and (later) the
 * explorer's `:` command line: a verb and its argument, applied to a
 * session through the engine's public API.
 *
 *   k       N | L:N                 experts per token (all layers or layer L)
 *   off/on  E[,E..] | L:E[,E..]     switch experts off or back on
 *   force   E[,E..] | L:E[,E..] | none | L:none
 *   bias    E=X | L:E=X             add X to expert E's router logit
 *   offset  L:N=D                   neuron N of layer L's dense MLP
 *           L:E:N=D                 neuron N of routed expert E
 *           L:shared:N=D            neuron N of the shared expert
 *           L:resid:N=D             dimension N of the residual stream after L
 *   capacity C | C,drop | off       mark (or drop) assignments past capacity
 */
#ifndef MOE_CONTROLS_PARSE_H
#define MOE_CONTROLS_PARSE_H

#include <stddef.h>

#include "moescope/moescope.h"

/* 1 if `verb` is one of the words above. */
int control_is_verb(const char *verb);
/* The control verb a command-line flag stands for ("--k" -> "k",
 * "--expert-off" -> "off", "--bias" -> "bias", ...), or NULL. */
const char *control_flag_verb(const char *flag);
/* Parse and apply. Returns 0, or -1 with a message in msg (nothing changed). */
int control_apply(moe_session *s, const char *verb, const char *arg, char *msg, size_t msglen);
/* Apply a change as the engine logged it (moe_control_event.text: "off L1:5",
 * "capacity 1.5,drop", "reset", "reprefill"), for replays and restores. */
int control_apply_logged(moe_session *s, const char *change, char *msg, size_t msglen);

#endif
