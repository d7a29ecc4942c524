/* Golden values written by tests/reference/reference.py (see its README). */
#ifndef MOE_GOLDEN_H
#define MOE_GOLDEN_H

#include <stdint.h>

typedef struct {
    int32_t *prompt;
    int n_prompt;
    int k;                     /* 0: the model's own (dense models) */
    float *logits;             /* (n_logits) at the last prompt position */
    int n_logits;
    int32_t *greedy;
    int n_greedy;
    double min_margin;         /* smallest top-1/top-2 logit gap along the greedy path */
    /* routing of the last prompt token, per MoE layer: route_k experts and
     * their mixing weights (route_layers 0 for dense models) */
    int route_layers, route_k;
    int *route_experts;        /* (route_layers, route_k) */
    float *route_weights;      /* (route_layers, route_k) */
} golden_case;

typedef struct {
    golden_case *cases;
    int n_cases;
} golden;

/* Returns 0 on success; on failure prints a TAP diagnostic. */
int golden_load(const char *path, golden *g);
void golden_free(golden *g);

#endif
