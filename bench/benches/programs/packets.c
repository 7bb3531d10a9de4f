/* Packet parsing: 64 frames of 64 bytes (Ethernet, IPv4, UDP); sums the UDP destination ports. */
#include "bench.h"

PROG(packets)
{
    const u8 *buf = data;
    u64 sum = 0;
    for (int k = 0; k < 64; k++) {
        const u8 *p = buf + k * 64;
        if (p[12] != 0x08 || p[13] != 0x00)
            continue;
        u32 ihl = (p[14] & 15) * 4;
        if ((p[14] >> 4) != 4 || ihl < 20 || ihl > 28 || p[23] != 17)
            continue;
        const u8 *udp = p + 14 + ihl;
        sum += (u32)udp[2] << 8 | udp[3];
    }
    return sum;
}
