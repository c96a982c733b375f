#include "CScan.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>  /* SSE2, which every x86-64 processor has */
#endif

int cscan_has_bare_line_ending(const uint8_t *bytes, size_t count) {
    size_t index = 0;
    unsigned previousCR = 0;  /* whether the byte before `index` is a CR */
#if defined(__x86_64__) || defined(_M_X64)
    /* In each block of sixteen, one bit per byte marks the CRs and another the LFs. Every LF
       must follow a CR and every CR precede an LF, so the LF marks must be exactly the CR
       marks moved on by one byte, the last block's final CR carried in. Mismatches gather
       with no branch; the blocks are independent but for that one carried bit. */
    const __m128i cr = _mm_set1_epi8(13);
    const __m128i lf = _mm_set1_epi8(10);
    unsigned mismatch = 0;
    for (; index + 16 <= count; index += 16) {
        __m128i block = _mm_loadu_si128((const __m128i *)(bytes + index));
        unsigned crs = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(block, cr));
        unsigned lfs = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(block, lf));
        mismatch |= lfs ^ (((crs << 1) | previousCR) & 0xFFFFu);
        previousCR = crs >> 15;
    }
    if (mismatch != 0) return 1;
#endif
    for (; index < count; index++) {
        uint8_t byte = bytes[index];
        if (previousCR ? byte != 10 : byte == 10) return 1;
        previousCR = byte == 13;
    }
    return previousCR != 0;
}
