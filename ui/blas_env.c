/* Debian's OpenBLAS is built for many CPUs and picks its kernel at load
 * time; on recent Intel parts it can fall back to a generic "Prescott"
 * kernel five times slower than its SkylakeX one. It reads
 * OPENBLAS_CORETYPE only while loading, before main runs, so the one way
 * to choose for the user is to set it and run the program again.
 * A value the user set is always kept (some setups need it for
 * correctness); MOESCOPE_BLAS_REEXEC=0 turns this off. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"

static int in_list(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (strcasecmp(name, *list) == 0)
            return 1;
    return 0;
}

void blas_env_select(char **argv)
{
    const char *off = getenv("MOESCOPE_BLAS_REEXEC");
    if (getenv("OPENBLAS_CORETYPE") || (off && strcmp(off, "0") == 0))
        return;
    static const char *const avx512_cores[] = {"SkylakeX", "Cooperlake", "SapphireRapids", NULL};
    static const char *const avx2_cores[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake",
                                             "SapphireRapids", NULL};
    __builtin_cpu_init();
    const char *want = NULL;
    const char *const *good = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
        want = "SKYLAKEX";
        good = avx512_cores;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        want = "HASWELL";
        good = avx2_cores;
    }
    const char *have = openblas_get_corename();
    if (!want || !have || in_list(have, good))
        return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("MOESCOPE_BLAS_REEXEC", "0", 1); /* never loop */
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the kernel we have */
    unsetenv("OPENBLAS_CORETYPE");
}
