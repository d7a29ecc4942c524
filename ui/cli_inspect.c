/* moescope inspect MODEL: what a model is and what running it costs. */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "moescope/moescope.h"

static void print_count(const char *label, uint64_t n)
{
    printf("%-22s %llu (%.2f %s)\n", label, (unsigned long long)n,
           n >= 1000000000ull ? n / 1e9 : n / 1e6, n >= 1000000000ull ? "B" : "M");
}

static void print_bytes(const char *label, double b)
{
    printf("%-22s %.2f %s\n", label, b >= (1 << 30) ? b / (1 << 30) : b / (1 << 20),
           b >= (1 << 30) ? "GiB" : "MiB");
}

int cmd_inspect(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        printf("usage: moescope inspect MODEL [--ctx N]\n"
               "  --ctx N   context length used for the KV-cache figure (default 4096 or the model's)\n");
        return argc < 2 ? 2 : 0;
    }
    long ctx = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--ctx") == 0 || strcmp(argv[i], "-c") == 0) {
            if (!arg_int(argv[i], i + 1 < argc ? argv[i + 1] : NULL, 1, 1 << 20, &ctx))
                return 2;
            i++;
        } else {
            return fail_msg("inspect: unknown option '%s'", argv[i]) + 1;
        }
    }
    moe_model *m;
    moe_error err = {0};
    if (moe_model_open(argv[1], &m, &err))
        return fail_msg("%s", err.msg);
    const moe_model_info *in = moe_model_info_get(m);
    if (!ctx)
        ctx = in->max_pos < 4096 ? in->max_pos : 4096;
    double kv = (double)in->kv_bytes_per_token * ctx;

    printf("%-22s %s\n", "path", in->path);
    printf("%-22s %s (%s)\n", "architecture", in->arch, in->hf_class);
    printf("%-22s %d\n", "layers", in->n_layers);
    printf("%-22s %d\n", "hidden size", in->dim);
    printf("%-22s %d (kv heads %d, head dim %d)\n", "attention heads", in->n_heads, in->n_kv_heads,
           in->head_dim);
    printf("%-22s %d\n", in->n_experts ? "expert width" : "mlp width", in->ff);
    if (in->n_experts) {
        if (in->n_moe_layers < in->n_layers)
            printf("%-22s %d in %d MoE layers (%d dense, mlp width %d)\n", "experts", in->n_experts,
                   in->n_moe_layers, in->n_layers - in->n_moe_layers, in->dense_ff);
        else
            printf("%-22s %d in %d MoE layers\n", "experts", in->n_experts, in->n_moe_layers);
        printf("%-22s %d\n", "experts per token", in->k);
        if (in->expert_names) {
            printf("%-22s", "expert names");
            for (int e = 0; e < in->n_experts; e++)
                printf(" %d %s%s", e, in->expert_names[e], e + 1 < in->n_experts ? "," : "\n");
        }
        printf("%-22s softmax, top-%d, %s\n", "routing", in->k,
               in->renormalize ? "weights renormalised" : "weights as probabilities (not renormalised)");
        if (in->n_shared_experts)
            printf("%-22s 1 per MoE layer, width %d, sigmoid-gated\n", "shared expert", in->shared_ff);
    } else {
        printf("%-22s none (dense)\n", "experts");
    }
    printf("%-22s %d\n", "vocabulary", in->vocab);
    printf("%-22s %d\n", "max positions", in->max_pos);
    printf("%-22s %g\n", "rope theta", in->rope_theta);
    printf("%-22s %s\n", "tied embeddings", in->tied_embeddings ? "yes" : "no");
    print_count("parameters", in->params_total);
    print_count("active per token", in->params_active);
    printf("%-22s %s\n", "weight type", moe_dtype_name(in->dtype));
    int n_types = 0;
    for (int t = 0; t < MOE_DTYPE_COUNT; t++)
        n_types += in->bytes_by_type[t] > 0;
    if (n_types > 1) { /* a quantised mix (Q4_K_M ...): the share of each type in the bytes */
        printf("%-22s", "weight type mix");
        for (int t = 0, shown = 0; t < MOE_DTYPE_COUNT; t++)
            if (in->bytes_by_type[t])
                printf("%s %s %.1f%%", shown++ ? "," : "", moe_dtype_name((moe_dtype)t),
                       100.0 * (double)in->bytes_by_type[t] / (double)in->weight_bytes);
        printf("\n");
    }
    print_bytes("weights (mmap)", (double)in->weight_bytes);
    print_bytes("read per token", (double)in->active_bytes);
    char label[40];
    snprintf(label, sizeof label, "KV cache (%ld tok)", ctx);
    print_bytes(label, kv);
    print_bytes("memory needed", (double)in->weight_bytes + kv);
    moe_model_close(m);
    return 0;
}
