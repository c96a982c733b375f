#ifndef SLUICE_CZLIB_SHIM_H
#define SLUICE_CZLIB_SHIM_H

/* zlib compresses and inflates HdrHistogram's interval logs (`sluice bench --hdr-out`, and
 * `sluice bench merge`), whose encoded histograms are zlib streams. */
#include <zlib.h>

#endif
