/* fp16 / bf16 <-> fp32 conversion, round to nearest even, NaN/Inf kept. */
#ifndef RDA_CONVERT_H
#define RDA_CONVERT_H

#include <stdint.h>
#include <string.h>

static inline float rda_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t rda_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float rda_bf16_to_f32(uint16_t h) { return rda_bits_to_f32((uint32_t)h << 16); }

static inline uint16_t rda_f32_to_bf16(float f) {
    uint32_t u = rda_f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float rda_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: value = man * 2^-24 */
            float f = (float)man * 5.9604644775390625e-08f;
            return sign ? -f : f;
        }
    } else {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    }
    return rda_bits_to_f32(u);
}

static inline uint16_t rda_f32_to_f16(float f) {
    uint32_t u = rda_f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);           /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);          /* rounds to Inf */
    if (a < 0x38800000u) {                                             /* subnormal or 0 */
        /* value in units of 2^-24, rounded to nearest even */
        float v = rda_bits_to_f32(a) * 16777216.0f;
        uint32_t m = (uint32_t)v;
        float rem = v - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1u))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t exp = (a >> 23) - 112u;
    uint32_t man = a & 0x7fffffu;
    uint32_t h = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* may carry into exp: fine */
    return (uint16_t)(sign | h);
}

#endif
