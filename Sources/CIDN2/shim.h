#ifndef SLUICE_CIDN2_SHIM_H
#define SLUICE_CIDN2_SHIM_H

/* GNU libidn2: IDNA2008 / UTS #46 conversion of internationalised domain names to A-labels. */
#include <idn2.h>

#endif
