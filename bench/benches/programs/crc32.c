/* Shifts and masks: bitwise CRC-32 (the reflected polynomial 0xEDB88320, no table) over the first
 * 1024 input bytes, eight steps a byte. Returns the CRC. */
#include "bench.h"

PROG(crc32)
{
    const u8 *p = data;
    u32 crc = 0xffffffff;
    for (int i = 0; i < 1024; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xedb88320 & -(crc & 1));
    }
    return ~crc;
}
