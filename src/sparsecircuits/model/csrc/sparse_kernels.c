/* Products of a frozen sparse weight with dense activations, and AbsTopK, for the CPU.
 *
 * Built on first use by sparsecircuits.model.native (plain C, no Python or torch headers,
 * so it compiles in about a second) and called through ctypes on float32 row-major
 * buffers.  Each function handles a range of rows [r0, r1) so that the caller can split
 * the rows over threads.
 */
#include <stdint.h>
#include <string.h>

#ifndef TILE
#define TILE 32 /* tokens per tile in spmm_tiled; 16, 32 and 64 measured, 32 best overall */
#endif

/* Eight floats; GCC and Clang lower it to whatever vector width -march allows. */
typedef float v8f __attribute__((vector_size(32), aligned(4)));

/* The positions of the nonzero entries of x[0..n), in order, into nz; returns how many.
 * Branch-free, since the pattern after AbsTopK is random and a branch per entry would be
 * mispredicted about a quarter of the time. */
static int64_t nonzeros(const float *restrict x, int64_t n, int32_t *restrict nz)
{
    int64_t c = 0;
    for (int64_t j = 0; j < n; ++j) {
        nz[c] = (int32_t)j;
        c += x[j] != 0.0f;
    }
    return c;
}

/* y[n, :] = sum_j x[n, j] * M[j, :] for n in [r0, r1): x (N, in), y (N, out) row-major,
 * M (in, out) in CSR (ptr (in + 1), idx, val).  Only the nonzero entries of x are visited,
 * so an input after AbsTopK (1 in 4 nonzero) costs a quarter of a dense one.  A scalar
 * scatter: pays when M is very sparse.  nz: scratch of in int32. */
void spmm_scatter(const float *restrict x, const int32_t *restrict ptr, const int32_t *restrict idx,
                  const float *restrict val, float *restrict y, int64_t in, int64_t out, int64_t r0, int64_t r1,
                  int32_t *restrict nz)
{
    for (int64_t n = r0; n < r1; ++n) {
        const float *xr = x + n * in;
        float *yr = y + n * out;
        memset(yr, 0, (size_t)out * sizeof(float));
        const int64_t c = nonzeros(xr, in, nz);
        for (int64_t q = 0; q < c; ++q) {
            const int32_t j = nz[q];
            const float a = xr[j];
            for (int32_t p = ptr[j]; p < ptr[j + 1]; ++p)
                yr[idx[p]] += a * val[p];
        }
    }
}

/* y = x @ W^T for rows [r0, r1), with W (out, in) in CSR (ptr (out + 1), idx, val).
 * Works on tiles of TILE tokens transposed into xt (in, TILE): each nonzero W[o, j] is then
 * one broadcast multiply-add over TILE tokens in vector registers.  Pays when W is
 * moderately sparse and there are many tokens.  xt, yt: scratch of in * TILE and out * TILE
 * floats. */
void spmm_tiled(const float *restrict x, const int32_t *restrict ptr, const int32_t *restrict idx,
                const float *restrict val, float *restrict y, int64_t in, int64_t out, int64_t r0, int64_t r1,
                float *restrict xt, float *restrict yt)
{
    enum { V = TILE / 8 };
    for (int64_t n0 = r0; n0 < r1; n0 += TILE) {
        const int64_t nb = (r1 - n0 < TILE) ? r1 - n0 : TILE;
        if (nb < TILE)
            memset(xt, 0, (size_t)(in * TILE) * sizeof(float));
        for (int64_t n = 0; n < nb; ++n) {
            const float *xr = x + (n0 + n) * in;
            for (int64_t j = 0; j < in; ++j)
                xt[j * TILE + n] = xr[j];
        }
        for (int64_t o = 0; o < out; ++o) {
            v8f acc[V];
            for (int t = 0; t < V; ++t)
                acc[t] = (v8f){0};
            for (int32_t p = ptr[o]; p < ptr[o + 1]; ++p) {
                const float w = val[p];
                const v8f *xc = (const v8f *)(xt + (int64_t)idx[p] * TILE);
                for (int t = 0; t < V; ++t)
                    acc[t] += w * xc[t];
            }
            memcpy(yt + o * TILE, acc, sizeof(acc));
        }
        for (int64_t n = 0; n < nb; ++n) {
            float *yr = y + (n0 + n) * out;
            for (int64_t o = 0; o < out; ++o)
                yr[o] = yt[o * TILE + n];
        }
    }
}

/* The k-th largest of m[0..n) (1 <= k <= n), by radix selection on the bit patterns
 * (non-negative IEEE floats order like their bits): histograms over 8, 8, 8 and 7 bits,
 * each pass keeping only the candidates that share the prefix found so far, and once at
 * most RANK_MAX candidates are left, a rank count among them.  No data-dependent branch
 * per entry, unlike a quickselect, whose mispredictions cost more than its arithmetic at
 * these widths.  Each histogram is split in HISTS interleaved parts, because values of
 * one row share few exponents and increments of one counter would wait on each other, and
 * each bin scan starts at the largest candidate's bin.  cand: scratch of n. */
#define RANK_MAX 48
#define HISTS 4
static uint32_t kth_largest(const uint32_t *m, int64_t n, int64_t k, uint32_t *cand)
{
    static const int shifts[4] = {23, 15, 7, 0};
    static const uint32_t widths[4] = {0xffu, 0xffu, 0xffu, 0x7fu};
    uint32_t prefix = 0;
    const uint32_t *src = m;
    int64_t count = n, need = k; /* the need-th largest of src[0..count) is the answer */
    for (int pass = 0; pass < 4; ++pass) {
        if (count <= RANK_MAX) {
            /* the need-th largest is the smallest value with fewer than need values above it */
            uint32_t t = UINT32_MAX;
            for (int64_t i = 0; i < count; ++i) {
                int64_t above = 0;
                for (int64_t j = 0; j < count; ++j)
                    above += src[j] > src[i];
                t = (above < need && src[i] < t) ? src[i] : t;
            }
            return t;
        }
        const int s = shifts[pass];
        const uint32_t w = widths[pass];
        int32_t hist[HISTS][256];
        memset(hist, 0, sizeof(hist));
        uint32_t top = 0;
        int64_t i = 0;
        for (; i + HISTS <= count; i += HISTS)
            for (int h = 0; h < HISTS; ++h)
                hist[h][(src[i + h] >> s) & w]++;
        for (; i < count; ++i)
            hist[0][(src[i] >> s) & w]++;
        uint32_t low = UINT32_MAX;
        for (i = 0; i < count; ++i) {
            top = src[i] > top ? src[i] : top;
            low = src[i] < low ? src[i] : low;
        }
        if (top == low) /* all candidates equal (a row of zeros, say): that is the answer */
            return top;
        int64_t above = 0;
        int b = (int)((top >> s) & w); /* no bin above the largest candidate's */
        for (; b > 0; --b) {
            const int64_t here = hist[0][b] + hist[1][b] + hist[2][b] + hist[3][b];
            if (above + here >= need)
                break;
            above += here;
        }
        need -= above;
        prefix |= (uint32_t)b << s;
        if (pass == 3)
            break;
        int64_t c = 0;
        for (i = 0; i < count; ++i) {
            const uint32_t v = src[i];
            cand[c] = v;
            c += (((v >> s) & w) == (uint32_t)b);
        }
        src = cand;
        count = c;
    }
    return prefix;
}

/* AbsTopK of rows [r0, r1) of x (R, w): keep = 1.0 where |x| is among the row's k largest
 * (compared as bit patterns, as gpt.abstopk does on the CPU), else 0.0; out = x * keep.
 * keep is float, as gpt.abstopk's mask, so the backward is the same single multiply.  amb[r] = 1 when the k-th largest magnitude is tied with
 * an entry outside the k: the kept set is then not unique and this function keeps every
 * tied entry, so the caller must redo that row with the tie rule it wants.  amb[r] = 2
 * when that magnitude is zero (the row has fewer than k nonzeros): out is then x itself,
 * whichever zeros a tie rule keeps, so only a caller that needs keep must redo the row.
 * scratch: 2 * w uint32. */
void abstopk_rows(const float *restrict x, float *restrict out, float *restrict keep, uint8_t *restrict amb,
                  int64_t w, int64_t k, int64_t r0, int64_t r1, uint32_t *restrict scratch)
{
    uint32_t *m = scratch, *cand = scratch + w;
    for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * w;
        for (int64_t i = 0; i < w; ++i) {
            uint32_t bits;
            memcpy(&bits, xr + i, sizeof bits); /* the float's bit pattern, without breaking aliasing rules */
            m[i] = bits & 0x7fffffffu;
        }
        const uint32_t t = kth_largest(m, w, k, cand);
        int64_t kept = 0;
        float *orow = out + r * w;
        float *krow = keep + r * w;
        for (int64_t i = 0; i < w; ++i) {
            const int on = m[i] >= t;
            kept += on;
            krow[i] = (float)on;
            orow[i] = xr[i] * (float)on; /* the mask multiply of gpt.abstopk: same zeros, signs, NaNs */
        }
        amb[r] = kept == k ? 0 : (t == 0 ? 2 : 1);
    }
}
