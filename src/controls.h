/* The interventions in force in a session: expert masks, k, forced
 * experts, router biases and neuron offsets, with the log of every change.
 * The router (route() in session.c) and the MLPs read them; the public
 * moe_session_set_* functions in controls.c change them. */
#ifndef MOE_CONTROLS_H
#define MOE_CONTROLS_H

#include <stdint.h>

#include "moescope/moescope.h"

typedef struct {
    int n_layers, n_experts;   /* n_experts >= 1 (dense models: 1, unused) */
    int *k;                    /* (n_layers) experts per token */
    uint8_t *off;              /* (n_layers, n_experts) 1: switched off */
    int *n_on;                 /* (n_layers) experts still on */
    float *bias;               /* (n_layers, n_experts) added to router logits */
    int *has_bias;             /* (n_layers) any non-zero bias */
    uint8_t *forced;           /* (n_layers, n_experts) 1: forced */
    int *n_forced;             /* (n_layers) 0: routing is free */
    double capacity;           /* capacity factor; 0: off */
    int drop;                  /* drop overflowing assignments */
    moe_offset *offsets;       /* (n_offsets) */
    int n_offsets, cap_offsets;
    moe_control_event *log;    /* (n_log) */
    int n_log, cap_log;
} controls;

/* 0 on success, -1 when out of memory. */
int controls_init(controls *c, int n_layers, int n_experts, int k);
void controls_done(controls *c);

#endif
