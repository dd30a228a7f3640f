/* Shortest decimals of doubles and floats, written as orjson writes them
 * (docs/design.md, "The compiled hot path"; included by service/_native.c).
 *
 * A row read from a tier below L1 is rendered to JSON once, and orjson's output is
 * the reference: the HTTP answer of a row decoded here and of one decoded by
 * ViewCodec.decode_row (orjson) must be the same bytes. orjson writes the shortest
 * decimal that reads back as the same value (among those, the nearest), for a
 * Python float as a double and for a numpy float32 as a float, in the layout
 * `write_decimal` describes.
 *
 * Finding that decimal follows Ulf Adams' Ryu (PLDI 2018). The value is
 * m * 2^e2 with the binary exponent lowered by two, so that the halfway points to
 * the neighbouring values, mv - 2 (or - 1 below a power of two) and mv + 2 with
 * mv = 4m, are integers. The three are scaled into decimal by one multiplication
 * with a power of five kept to POW5_BITS bits (service/_native_tables.h, generated
 * by hatch_build.py from its definition) and a shift, which Ryu proves exact for
 * these sizes. Then digits are dropped while the interval still holds a shorter
 * number, tracking whether what was dropped was all zeros, to round to the
 * nearest (ties to even) and to include a bound only when reading back would.
 *
 * One routine serves both widths: a float's mantissa is narrower and its
 * exponents a subset of a double's, so the double's tables and bounds cover it.
 * tests/core/test_native.py compares both with orjson: random and edge values in
 * CI; scripts/check_floats.py every float32 there is.
 */
#include <stdint.h>
#include <string.h>

#include "_native_tables.h"

typedef unsigned __int128 u128;

/* bits(5^e) for 0 <= e <= 3528; floor(e log10 2) for 0 <= e <= 1650; floor(e log10 5)
 * for 0 <= e <= 2620: fixed-point approximations, exact in those ranges. */
static inline int32_t
pow5_bits(int32_t e)
{
    return (int32_t)(((uint32_t)e * 1217359u) >> 19) + 1;
}

static inline int32_t
log10_pow2(int32_t e)
{
    return (int32_t)(((uint32_t)e * 78913u) >> 18);
}

static inline int32_t
log10_pow5(int32_t e)
{
    return (int32_t)(((uint32_t)e * 732923u) >> 20);
}

/* floor(m * t / 2^j) for a 128-bit t = {low, high} and j >= 64. */
static inline uint64_t
mul_shift(uint64_t m, const uint64_t t[2], int32_t j)
{
    u128 low = (u128)m * t[0];
    u128 high = (u128)m * t[1];
    return (uint64_t)(((low >> 64) + high) >> (j - 64));
}

/* The digit dropping of `shortest` and `shortest32`, on their locals vr, vp, vm, last,
 * dropped (and vr_exact, vm_exact): drop the lowest N digits (P = 10^N) of vr, vp and
 * vm at once, keeping in `last` the highest digit dropped from vr, the one that rounds.
 * Whether the interval holds a number with k digits fewer (vp / 10^k > vm / 10^k) only
 * turns false as k grows, and so does whether vm ends in k zeros: dropping 8, 4, 2, then
 * 1 digit at a time where that holds drops as many digits as one at a time would, and
 * the same ones. One at a time, a value with few digits (10.09, 0.5, an integer) took
 * 15 steps of three divisions: 41-51 ns a double against 31 for one with 17 digits. */
#define DROP_DIGITS(P, N)                                                              \
    do {                                                                               \
        const __typeof__(vr) q_ = vr / (P);                                            \
        last = (int)((vr - q_ * (P)) / ((P) / 10));                                    \
        vr = q_;                                                                       \
        vp /= (P);                                                                     \
        vm /= (P);                                                                     \
        dropped += (N);                                                                \
    } while (0)
/* The same where vr_exact and vm_exact are tracked: vm_exact holds while every digit
 * dropped from vm is 0; vr_exact while every digit dropped from vr but the last is. */
#define DROP_DIGITS_EXACT(P, N)                                                        \
    do {                                                                               \
        const __typeof__(vr) rest_ = vr % (P);                                         \
        vm_exact &= vm % (P) == 0;                                                     \
        vr_exact &= last == 0 && rest_ % ((P) / 10) == 0;                              \
        DROP_DIGITS(P, N);                                                             \
    } while (0)
/* Drop digits while the interval holds a shorter number (see above). A value with all
 * the digits its width needs drops none, one or two (the standard data): those cost no
 * more tests than one digit at a time did; four or more go 8 and 4 at a time. */
#define DROP_WHILE_SHORTER(DROP)                                                       \
    do {                                                                               \
        if (vp / 100 > vm / 100) {                                                     \
            if (vp / 10000 > vm / 10000) {                                             \
                while (vp / 100000000 > vm / 100000000)                                \
                    DROP(100000000, 8);                                                \
                if (vp / 10000 > vm / 10000)                                           \
                    DROP(10000, 4);                                                    \
                if (vp / 100 > vm / 100)                                               \
                    DROP(100, 2);                                                      \
            }                                                                          \
            else                                                                       \
                DROP(100, 2);                                                          \
        }                                                                              \
        if (vp / 10 > vm / 10)                                                         \
            DROP(10, 1);                                                               \
    } while (0)
/* Drop the zeros vm ends with (vm > 0; vm_exact is known to hold). */
#define DROP_ZEROS_OF_VM()                                                             \
    do {                                                                               \
        while (vm % 100000000 == 0)                                                    \
            DROP_DIGITS_EXACT(100000000, 8);                                           \
        if (vm % 10000 == 0)                                                           \
            DROP_DIGITS_EXACT(10000, 4);                                               \
        if (vm % 100 == 0)                                                             \
            DROP_DIGITS_EXACT(100, 2);                                                 \
        if (vm % 10 == 0)                                                              \
            DROP_DIGITS_EXACT(10, 1);                                                  \
    } while (0)

/* Whether 5^p divides v (v > 0). */
static inline int
divisible_by_pow5(uint64_t v, int32_t p)
{
    int32_t count = 0;
    while (v % 5 == 0) {
        v /= 5;
        count++;
    }
    return count >= p;
}

/* The shortest decimal, digits * 10^exp10, in the rounding interval of m2 * 2^(e2 + 2);
 * the nearest to the value when several are as short. `narrow_below` is 1 when the gap
 * to the next value below is half the gap above (the value is a power of two). */
static inline uint64_t
shortest(uint64_t m2, int32_t e2, int narrow_below, int32_t *exp10)
{
    const int bounds_read_back = (m2 & 1) == 0; /* round-half-even reads a tie to even m2 */
    const uint64_t mv = 4 * m2;
    const uint64_t below = mv - 2 + (uint64_t)narrow_below; /* lower halfway point */
    uint64_t vr, vp, vm;
    int32_t e10;
    int vm_exact = 0, vr_exact = 0; /* no non-zero digit lost in scaling (or dropping) */
    if (e2 >= 0) {
        /* scale by 2^e2 / 10^q; q one less than it could be leaves a digit to drop */
        int32_t q = log10_pow2(e2);
        q = q > 0 ? q - 1 : 0;
        int32_t shift = -e2 + q + POW5_BITS + pow5_bits(q) - 1;
        e10 = q;
        vr = mul_shift(mv, POW5_INV[q], shift);
        vp = mul_shift(mv + 2, POW5_INV[q], shift);
        vm = mul_shift(below, POW5_INV[q], shift);
        if (q <= 21) { /* beyond, 5^q exceeds every mantissa: nothing divides exactly */
            if (mv % 5 == 0)
                vr_exact = divisible_by_pow5(mv, q);
            else if (bounds_read_back)
                vm_exact = divisible_by_pow5(below, q);
            else
                vp -= (uint64_t)divisible_by_pow5(mv + 2, q); /* the upper bound is out */
        }
    }
    else {
        /* scale by 5^(-e2-q) / 2^q, that is by 2^e2 / 10^(e2+q) */
        int32_t q = log10_pow5(-e2);
        q = q > 0 ? q - 1 : 0;
        int32_t i = -e2 - q;
        int32_t shift = q - (pow5_bits(i) - POW5_BITS);
        e10 = q + e2;
        vr = mul_shift(mv, POW5[i], shift);
        vp = mul_shift(mv + 2, POW5[i], shift);
        vm = mul_shift(below, POW5[i], shift);
        if (q <= 1) { /* dividing by 2^q <= 2: mv and mv + 2 are even, exact */
            vr_exact = 1;
            if (bounds_read_back)
                vm_exact = q == 0 || !narrow_below; /* below is even unless narrow_below */
            else
                vp -= 1; /* the upper bound is exact and out */
        }
        else if (q < 63) { /* exact iff 2^(q-1) divides mv (mv has 5s to spare) */
            vr_exact = (mv & ((1ull << (q - 1)) - 1)) == 0;
        }
    }
    int32_t dropped = 0;
    int last = 0; /* the last digit dropped from vr */
    uint64_t out;
    if (vm_exact || vr_exact) {
        DROP_WHILE_SHORTER(DROP_DIGITS_EXACT);
        if (vm_exact) /* the lower bound is in: drop the zeros it ends with, too */
            DROP_ZEROS_OF_VM();
        if (vr_exact && last == 5 && vr % 2 == 0)
            last = 4; /* an exact tie: to even */
        out = vr + ((vr == vm && (!bounds_read_back || !vm_exact)) || last >= 5);
    }
    else {
        DROP_WHILE_SHORTER(DROP_DIGITS);
        out = vr + (vr == vm || last >= 5);
    }
    *exp10 = e10 + dropped;
    return out;
}

/* floor(m * f / 2^j) for a 64-bit f and j > 32: Ryu f2s's 32-bit multiplication. */
static inline uint32_t
mul_shift32(uint32_t m, uint64_t f, int32_t j)
{
    uint64_t low = (uint64_t)m * (uint32_t)f;
    uint64_t high = (uint64_t)m * (uint32_t)(f >> 32);
    return (uint32_t)(((low >> 32) + high) >> (j - 32));
}

/* Whether 5^p divides v (v > 0). */
static inline int
divisible_by_pow5_32(uint32_t v, int32_t p)
{
    int32_t count = 0;
    while (v % 5 == 0) {
        v /= 5;
        count++;
    }
    return count >= p;
}

/* `shortest` for a float (m2 < 2^24), in 32-bit arithmetic: Ryu's f2s as published,
 * with its 64-bit tables. Where `shortest` scales to one digit more than it keeps, this
 * scales to exactly the digits it may keep (a 32-bit result) and computes the last digit
 * dropped apart, when it will not be dropped in the loop. The same decimal as
 * `shortest` (scripts/check_floats.py checks every float32 against orjson). */
static inline uint32_t
shortest32(uint32_t m2, int32_t e2, int narrow_below, int32_t *exp10)
{
    const int bounds_read_back = (m2 & 1) == 0;
    const uint32_t mv = 4 * m2, mp = mv + 2, mm = mv - 2 + (uint32_t)narrow_below;
    uint32_t vr, vp, vm;
    int32_t e10;
    int vm_exact = 0, vr_exact = 0, last = 0;
    if (e2 >= 0) {
        int32_t q = log10_pow2(e2);
        int32_t j = -e2 + q + FLOAT_POW5_INV_BITS + pow5_bits(q) - 1;
        e10 = q;
        vr = mul_shift32(mv, FLOAT_POW5_INV[q], j);
        vp = mul_shift32(mp, FLOAT_POW5_INV[q], j);
        vm = mul_shift32(mm, FLOAT_POW5_INV[q], j);
        if (q != 0 && (vp - 1) / 10 <= vm / 10) { /* the loop drops nothing: its digit */
            int32_t l = -e2 + q - 1 + FLOAT_POW5_INV_BITS + pow5_bits(q - 1) - 1;
            last = (int)(mul_shift32(mv, FLOAT_POW5_INV[q - 1], l) % 10);
        }
        if (q <= 9) { /* 5^10 exceeds a float's mantissa times 4 */
            if (mv % 5 == 0)
                vr_exact = divisible_by_pow5_32(mv, q);
            else if (bounds_read_back)
                vm_exact = divisible_by_pow5_32(mm, q);
            else
                vp -= (uint32_t)divisible_by_pow5_32(mp, q);
        }
    }
    else {
        int32_t q = log10_pow5(-e2);
        int32_t i = -e2 - q;
        int32_t j = q - (pow5_bits(i) - FLOAT_POW5_BITS);
        e10 = q + e2;
        vr = mul_shift32(mv, FLOAT_POW5[i], j);
        vp = mul_shift32(mp, FLOAT_POW5[i], j);
        vm = mul_shift32(mm, FLOAT_POW5[i], j);
        if (q != 0 && (vp - 1) / 10 <= vm / 10) {
            j = q - 1 - (pow5_bits(i + 1) - FLOAT_POW5_BITS);
            last = (int)(mul_shift32(mv, FLOAT_POW5[i + 1], j) % 10);
        }
        if (q <= 1) {
            vr_exact = 1;
            if (bounds_read_back)
                vm_exact = !narrow_below; /* mm has a trailing 0 bit iff it is mv - 2 */
            else
                vp -= 1;
        }
        else if (q < 31) {
            vr_exact = (mv & ((1u << (q - 1)) - 1)) == 0;
        }
    }
    int32_t dropped = 0;
    uint32_t out;
    if (vm_exact || vr_exact) {
        DROP_WHILE_SHORTER(DROP_DIGITS_EXACT);
        if (vm_exact)
            DROP_ZEROS_OF_VM();
        if (vr_exact && last == 5 && vr % 2 == 0)
            last = 4;
        out = vr + ((vr == vm && (!bounds_read_back || !vm_exact)) || last >= 5);
    }
    else {
        DROP_WHILE_SHORTER(DROP_DIGITS);
        out = vr + (vr == vm || last >= 5);
    }
    *exp10 = e10 + dropped;
    return out;
}

/* How many decimal digits v has (v > 0): from its bit length, log10 2 ~ 1233 / 4096. */
static inline int32_t
decimal_length(uint64_t v)
{
    static const uint64_t powers[] = {
        1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull,
        100000000ull, 1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull,
        10000000000000ull, 100000000000000ull, 1000000000000000ull, 10000000000000000ull,
        100000000000000000ull, 1000000000000000000ull, 10000000000000000000ull,
    };
    int32_t t = ((64 - __builtin_clzll(v)) * 1233) >> 12; /* digits, or one too many */
    return t + (v >= powers[t]);
}

/* The eight decimal digits of v < 10^8 (leading zeros included) as ASCII, the first in
 * the lowest byte: stored little-endian, they read in order. All eight at once in one
 * word (SWAR): the two halves v / 10^4 and v % 10^4 in 32-bit lanes, each split by 100
 * into 16-bit lanes and those by 10 into bytes, the divisions as multiplications by
 * reciprocals exact for these ranges (10486 / 2^20 below 10^4, 103 / 2^10 below 100). */
static inline uint64_t
eight_digits(uint32_t v)
{
    uint64_t x = (uint64_t)(v / 10000) | (uint64_t)(v % 10000) << 32;
    uint64_t hundreds = ((x * 10486) >> 20) & 0x0000007F0000007Full;
    x = hundreds | (x - 100 * hundreds) << 16;
    uint64_t tens = ((x * 103) >> 10) & 0x000F000F000F000Full;
    x = tens | (x - 10 * tens) << 8;
    return x + 0x3030303030303030ull;
}

/* The n decimal digits of v (n = decimal_length(v) <= 17) at p; returns p + n. Writes
 * 8 or 16 bytes from the first digit whatever n is (the caller's room: NUMBER_MAX):
 * the digits of v (mod 10^16) as one word of eight (n <= 8) or two, shifted past their
 * leading zeros. No loop runs a number of times that depends on the value: the digit
 * loops this replaced mispredicted from one value to the next, and took more time than
 * finding the digits (docs/design.md, "The compiled hot path"). */
static inline char *
put_digits(char *p, uint64_t v, int32_t n)
{
    if (n <= 8) {
        uint64_t one = eight_digits((uint32_t)v) >> 8 * (8 - n);
        memcpy(p, &one, 8);
        return p + n;
    }
    if (n > 16) {
        uint64_t top = v / 10000000000000000ull;
        *p++ = (char)('0' + top);
        v -= top * 10000000000000000ull;
        n = 16;
    }
    u128 both = (u128)eight_digits((uint32_t)(v / 100000000))
                | (u128)eight_digits((uint32_t)(v % 100000000)) << 64;
    both >>= 8 * (16 - n);
    memcpy(p, &both, 16);
    return p + n;
}

/* digits * 10^exp10 as orjson writes it: plain while the decimal point is at most
 * `max_int` digits from the left (1000000000000000.0 for a double) or at most
 * -`min_frac` zeros follow it (0.00001), with ".0" after an integer; otherwise
 * d.ddde+N / d.ddde-N (1e+16, 1.25e-7). A double: 16 and -5, a float: 13 and -6.
 * Every layout is written with copies of fixed sizes (put_digits), which write past
 * the end; NUMBER_MAX bounds how far. */
static inline __attribute__((always_inline)) char *
write_decimal(char *p, int negative, uint64_t digits, int32_t exp10, int32_t max_int,
              int32_t min_frac)
{
    int32_t n = decimal_length(digits);
    int32_t point = n + exp10; /* the digits before the decimal point */
    *p = '-';
    p += negative;
    if (exp10 >= 0 && point <= max_int) { /* an integer: n + exp10 <= 16 */
        p = put_digits(p, digits, n);
        memcpy(p, "0000000000000000", 16);
        p += exp10;
        memcpy(p, ".0", 2);
        return p + 2;
    }
    if (point > 0 && point <= max_int) { /* the point between digits: n - point <= 16 */
        put_digits(p, digits, n);
        memmove(p + point + 1, p + point, 16);
        p[point] = '.';
        return p + n + 1;
    }
    if (point <= 0 && point > min_frac) { /* 0.000ddd: at most 5 zeros */
        memcpy(p, "0.000000", 8);
        return put_digits(p + 2 - point, digits, n);
    }
    put_digits(p + 1, digits, n);
    p[0] = p[1];
    if (n > 1) {
        p[1] = '.';
        p += n + 1;
    }
    else
        p += 1;
    int32_t e = point - 1;
    *p++ = 'e';
    *p++ = e < 0 ? '-' : '+';
    e = e < 0 ? -e : e;
    if (e >= 100)
        *p++ = (char)('0' + e / 100);
    if (e >= 10)
        *p++ = (char)('0' + e / 10 % 10);
    *p++ = (char)('0' + e % 10);
    return p;
}

/* The most bytes write_double and write_float write. */
#define NUMBER_MAX 40

/* The value of IEEE fields (sign, biased exponent, mantissa without its implicit bit)
 * as orjson writes it: null if not finite (the exponent all ones). */
static inline __attribute__((always_inline)) char *
write_fields(char *p, int negative, uint64_t mantissa, int32_t exponent, int32_t exponent_max,
             int32_t mantissa_bits, int32_t bias, int32_t max_int, int32_t min_frac)
{
    if (exponent == exponent_max) {
        memcpy(p, "null", 4);
        return p + 4;
    }
    if (exponent == 0 && mantissa == 0) {
        if (negative)
            *p++ = '-';
        memcpy(p, "0.0", 3);
        return p + 3;
    }
    uint64_t m2 = exponent ? mantissa | (1ull << mantissa_bits) : mantissa;
    int32_t e2 = (exponent ? exponent : 1) - bias - mantissa_bits - 2;
    int32_t exp10;
    int narrow_below = mantissa == 0 && exponent > 1;
    uint64_t digits = mantissa_bits == 23 ? shortest32((uint32_t)m2, e2, narrow_below, &exp10)
                                          : shortest(m2, e2, narrow_below, &exp10);
    return write_decimal(p, negative, digits, exp10, max_int, min_frac);
}

/* A double as orjson writes a Python float. Returns the end. */
static inline char *
write_double(char *p, double x)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    return write_fields(p, (int)(bits >> 63), bits & ((1ull << 52) - 1),
                        (int32_t)((bits >> 52) & 0x7FF), 0x7FF, 52, 1023, 16, -5);
}

/* A float as orjson writes a numpy float32. Returns the end. */
static inline char *
write_float(char *p, float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return write_fields(p, (int)(bits >> 31), bits & ((1u << 23) - 1),
                        (int32_t)((bits >> 23) & 0xFF), 0xFF, 23, 127, 13, -6);
}
