/* Checks a `moescope run --trace` file for the shell tests:
 *   trace_check FILE IDS N_PROMPT N_LAYERS N_EXPERTS K
 * IDS is the comma-separated prompt followed by the generated ids. Prints
 * what is wrong and exits 1, or exits 0. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *why, int tok)
{
    printf("trace: token %d: %s\n", tok, why);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 7)
        return 2;
    FILE *f = fopen(argv[1], "rb");
    if (!f)
        return fail("cannot open the file", -1);
    static char buf[1 << 24];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *root = cJSON_Parse(buf);
    const cJSON *toks = cJSON_GetObjectItem(root, "tokens");
    if (!cJSON_IsArray(toks) || !cJSON_IsObject(cJSON_GetObjectItem(root, "model")))
        return fail("no model object or tokens array", -1);
    int n_prompt = atoi(argv[3]), n_layers = atoi(argv[4]), n_exp = atoi(argv[5]), k = atoi(argv[6]);
    char *ids = argv[2];
    int i = 0;
    for (const cJSON *t = toks->child; t; t = t->next, i++) {
        long want = strtol(ids, &ids, 10);
        if (*ids == ',')
            ids++;
        if (cJSON_GetObjectItem(t, "id")->valuedouble != want)
            return fail("id differs from the printed one", i);
        if (cJSON_GetObjectItem(t, "pos")->valuedouble != i)
            return fail("wrong position", i);
        if (cJSON_IsTrue(cJSON_GetObjectItem(t, "prompt")) != (i < n_prompt))
            return fail("prompt flag wrong", i);
        const cJSON *layers = cJSON_GetObjectItem(t, "layers");
        if (cJSON_GetArraySize(layers) != n_layers)
            return fail("wrong number of layers", i);
        int votes[4096] = {0};
        for (const cJSON *l = layers->child; l; l = l->next) {
            const cJSON *p = cJSON_GetObjectItem(l, "probs"), *e = cJSON_GetObjectItem(l, "experts"),
                        *w = cJSON_GetObjectItem(l, "weights");
            if (cJSON_GetArraySize(p) != n_exp || cJSON_GetArraySize(e) != k || cJSON_GetArraySize(w) != k)
                return fail("probs/experts/weights of the wrong length", i);
            double ps = 0, ws = 0;
            for (const cJSON *x = p->child; x; x = x->next)
                ps += x->valuedouble;
            for (const cJSON *x = w->child; x; x = x->next)
                ws += x->valuedouble;
            if (fabs(ps - 1) > 1e-4 || fabs(ws - 1) > 1e-4)
                return fail("probabilities or weights do not sum to 1", i);
            int top = (int)e->child->valuedouble;
            for (const cJSON *x = p->child; x; x = x->next)
                if (x->valuedouble > cJSON_GetArrayItem(p, top)->valuedouble)
                    return fail("first expert is not the most probable", i);
            votes[top]++;
        }
        int best = 0;
        for (int x = 1; x < n_exp; x++)
            if (votes[x] > votes[best])
                best = x;
        if (cJSON_GetObjectItem(t, "colour")->valuedouble != best)
            return fail("colour is not the layer vote", i);
    }
    if (*ids)
        return fail("fewer tokens in the trace than ids", i);
    cJSON_Delete(root);
    return 0;
}
