/*
 * The constants of the exact angle reduction and the sin/cos polynomials,
 * shared by angle.c's portable row (RS_SINCOS_BODY) and its NEON form
 * (angle_neon.h): one set of bits, so both round alike.
 */
#ifndef RS_ANGLE_CONSTS_H
#define RS_ANGLE_CONSTS_H

/* pi/2 = P1 + P2 + P3 (+ ~2^-91): P1 and P2 carry at most 19 significant bits,
 * so n*P1 and n*P2 are exact for |n| < 2^34 (|t*theta| <= RS_MAX_ANGLE). */
static const double HALF_PI_1 = 0x1.921f800000000p+0;
static const double HALF_PI_2 = 0x1.aa22000000000p-19;
static const double HALF_PI_3 = 0x1.68c234c4c6629p-39;
static const double TWO_OVER_PI = 0x1.45f306dc9c883p-1;
/* Adding and subtracting 1.5*2^52 rounds |v| < 2^51 to the nearest integer,
 * in any vector width (SSE2 has no rounding instruction). */
static const double ROUNDER = 0x1.8p52;

/* 1/n!, correctly rounded (Taylor coefficients; on |r| <= pi/4 the series
 * truncated after r^17 (sin) and r^16 (cos) is within 5e-17). */
#define S3 (-0x1.5555555555555p-3)
#define S5 0x1.1111111111111p-7
#define S7 (-0x1.a01a01a01a01ap-13)
#define S9 0x1.71de3a556c734p-19
#define S11 (-0x1.ae64567f544e4p-26)
#define S13 0x1.6124613a86d09p-33
#define S15 (-0x1.ae7f3e733b81fp-41)
#define S17 0x1.952c77030ad4ap-49
#define C2 (-0x1.0000000000000p-1)
#define C4 0x1.5555555555555p-5
#define C6 (-0x1.6c16c16c16c17p-10)
#define C8 0x1.a01a01a01a01ap-16
#define C10 (-0x1.27e4fb7789f5cp-22)
#define C12 0x1.1eed8eff8d898p-29
#define C14 (-0x1.93974a8c07c9dp-37)
#define C16 0x1.ae7f3e733b81fp-45

#endif
