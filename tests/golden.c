/* Reading golden JSON files for the model tests. */
#include "golden.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>


static int ints(const cJSON *a, int32_t **out)
{
    int n = cJSON_GetArraySize(a);
    *out = malloc(((size_t)n + 1) * sizeof **out);
    int i = 0;
    for (const cJSON *v = a ? a->child : NULL; v; v = v->next)
        (*out)[i++] = (int32_t)v->valuedouble;
    return n;
}

int golden_load(const char *path, golden *g)
{
    g->cases = NULL;
    g->n_cases = 0;
    char *text = test_slurp(path, NULL);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    if (!root || !cJSON_IsArray(cases)) {
        printf("# cannot read golden file %s\n", path);
        cJSON_Delete(root);
        return -1;
    }
    g->n_cases = cJSON_GetArraySize(cases);
    g->cases = calloc((size_t)g->n_cases, sizeof *g->cases);
    int i = 0;
    for (const cJSON *c = cases->child; c; c = c->next, i++) {
        golden_case *gc = &g->cases[i];
        gc->n_prompt = ints(cJSON_GetObjectItem(c, "prompt"), &gc->prompt);
        gc->n_greedy = ints(cJSON_GetObjectItem(c, "greedy"), &gc->greedy);
        const cJSON *k = cJSON_GetObjectItem(c, "k");
        gc->k = cJSON_IsNumber(k) ? (int)k->valuedouble : 0;
        const cJSON *mm = cJSON_GetObjectItem(c, "min_margin");
        gc->min_margin = cJSON_IsNumber(mm) ? mm->valuedouble : 0;
        const cJSON *rl = cJSON_GetObjectItem(c, "routing_last");
        const cJSON *re = cJSON_GetObjectItem(rl, "experts"), *rw = cJSON_GetObjectItem(rl, "weights");
        if (cJSON_IsArray(re) && cJSON_IsArray(rw) && cJSON_GetArraySize(re) > 0) {
            gc->route_layers = cJSON_GetArraySize(re);
            gc->route_k = cJSON_GetArraySize(re->child);
            size_t n = (size_t)gc->route_layers * gc->route_k;
            gc->route_experts = calloc(n, sizeof(int));
            gc->route_weights = calloc(n, sizeof(float));
            int l = 0;
            for (const cJSON *a = re->child, *b = rw->child; a && b; a = a->next, b = b->next, l++) {
                int j = 0;
                for (const cJSON *x = a->child, *y = b->child; x && y && j < gc->route_k;
                     x = x->next, y = y->next, j++) {
                    gc->route_experts[l * gc->route_k + j] = (int)x->valuedouble;
                    gc->route_weights[l * gc->route_k + j] = (float)y->valuedouble;
                }
            }
        }
        const cJSON *lg = cJSON_GetObjectItem(c, "logits");
        gc->n_logits = cJSON_GetArraySize(lg);
        gc->logits = malloc(((size_t)gc->n_logits + 1) * sizeof(float));
        int j = 0;
        for (const cJSON *v = lg ? lg->child : NULL; v; v = v->next)
            gc->logits[j++] = (float)v->valuedouble;
    }
    cJSON_Delete(root);
    return 0;
}

void golden_free(golden *g)
{
    for (int i = 0; i < g->n_cases; i++) {
        free(g->cases[i].prompt);
        free(g->cases[i].greedy);
        free(g->cases[i].logits);
        free(g->cases[i].route_experts);
        free(g->cases[i].route_weights);
    }
    free(g->cases);
}
