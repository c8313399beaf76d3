/* Compiled as C99 by the build so the public header never picks up C++. */
#include "ddpm_torch.h"

int ddpm_header_check(void) { return DDPM_MAX_DIMS; }
