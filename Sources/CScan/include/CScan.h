#ifndef SLUICE_CSCAN_H
#define SLUICE_CSCAN_H

#include <stddef.h>
#include <stdint.h>

/// Whether `bytes` hold a CR not followed by LF, or an LF not preceded by CR (a bare line
/// ending, refused in message content by RFC 5321 §2.3.8). Vector code on x86-64, sixteen
/// bytes a step; a byte at a time elsewhere.
int cscan_has_bare_line_ending(const uint8_t *bytes, size_t count);

#endif
