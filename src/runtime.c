/* What the engine runs on: the BLAS core OpenBLAS chose at load time and
 * the SIMD kernels picked for this CPU, for bench and inspect output. */
#include <cblas.h>

#include "kernels.h"
#include "moescope/moescope.h"

const char *moe_blas_core(void)
{
    return openblas_get_corename();
}

const char *moe_kernel_isa(void)
{
    kern_init();
    return kern_isa();
}
