// Fused CPU kernels for the memory part of one NTM time step (forward and backward).
//
// What one call computes, for every example of a batch (see ntm/core.py::_step_t and
// ntm/addressing.py, whose maths this file follows):
//
//   1. each write head h addresses the OLD memory (content -> interpolation -> shift -> sharpen);
//   2. the write: mem1 = mem0 * prod_h (1 - e_h w_h^T) + sum_h a_h w_h^T   (erase, then add);
//   3. each read head r addresses the NEW memory mem1;
//   4. the reads: reads[r] = mem1 @ rw[r].
//
// Memory is stored transposed, [M, N] per example (rows N minor), as in ntm.core's time loop.
// Leading axes of every buffer are batch axes (the Python wrapper passes per-example shapes and
// jax.vmap adds them with vmap_method="broadcast_all"); the batch is split over XLA's intra-op
// thread pool.
//
// Per example, the buffers are (W write heads, R read heads, K = 2S+1 shifts):
//   mem [M, N], wprev_w [W, N], wprev_r [R, N],
//   write heads: key [W, M], beta [W], gate [W], shift [W, K], gamma [W], erase [W, M], add [W, M],
//   read heads:  key [R, M], beta [R], gate [R], shift [R, K], gamma [R].
// Forward results: mem1 [M, N], write weights [W, N], read weights [R, N], reads [R, M].
// The backward kernel takes the same inputs plus the cotangents of the four results and returns
// the cotangent of every input, in input order. It recomputes the forward intermediates
// (all O(N) per head except mem1) instead of storing them, so the JAX side saves only inputs.
//
// Speed: every memory-sized [M, N] quantity is touched in as few row-by-row passes as possible
// (forward: 3 passes; backward: 4), with the n loop innermost so that it vectorises. The O(N)
// exp/log of the softmaxes and the sharpening use the branch-free polynomial expf/logf below
// (Cephes, as Eigen and XLA:CPU use) so that they vectorise too.
//
// Numerics: IEEE float32 operations (no -ffast-math, no FMA contraction); exp/log are the
// polynomial approximations (~1 ulp); sums marked `omp simd reduction` may be evaluated in a
// different order than XLA's.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr float kEps = 1e-8f;   // addressing.EPS
constexpr float kTiny = 1e-30f;  // addressing._TINY

using F32Buf = ffi::Buffer<ffi::F32>;
using F32Ret = ffi::ResultBuffer<ffi::F32>;

// ---------------------------------------------------------------------------------------------
// Vectorisable exp and log (Cephes single precision, the same polynomials as Eigen's pexp/plog).
// ---------------------------------------------------------------------------------------------

inline float AsFloat(int32_t i) { return __builtin_bit_cast(float, i); }
inline int32_t AsInt(float f) { return __builtin_bit_cast(int32_t, f); }

// exp(x): x = k ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-7 polynomial, times 2^k built in the
// exponent bits. Exact 0 below ln(FLT_MIN) (where expf would return a denormal < 1.2e-38),
// +inf above ln(FLT_MAX), NaN for NaN.
inline float FastExp(float x) {
  const float hi = 88.7228391f, lo = -87.3365447504f;  // ln(FLT_MAX), ln(FLT_MIN)
  const float xc = std::min(std::max(x, lo), hi);
  const float k = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - k * 0.693359375f;  // ln2 in two parts (Cody-Waite)
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  // k in [-126, 128]: scale by 2^k as 2^k1 * 2^k2 (k1, k2 in [-63, 64], both normal floats), so
  // that k = 128 (x just below ln(FLT_MAX)) does not build the exponent pattern of infinity.
  const int32_t ki = static_cast<int32_t>(k), k1 = ki / 2, k2 = ki - k1;
  const float y = (p * AsFloat((k1 + 127) << 23)) * AsFloat((k2 + 127) << 23);
  return x != x ? x : (x < lo ? 0.f : (x > hi ? std::numeric_limits<float>::infinity() : y));
}

// log(x) for x >= FLT_MIN (callers pass max(ws, 1e-30)): x = m 2^e with m in [sqrt(1/2), sqrt(2)),
// log(m) by a degree-9 polynomial in m - 1. +inf and NaN pass through.
inline float FastLog(float x) {
  const int32_t bits = AsInt(x);
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
  float m = AsFloat((bits & 0x807fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1.f : e;
  m = small ? m + m - 1.f : m - 1.f;
  const float z = m * m;
  float p = 7.0376836292e-2f;
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  float y = p * m * z;
  y = y + e * -2.12194440e-4f;
  y = y - 0.5f * z;
  const float out = m + y + e * 0.693359375f;
  return !(x < std::numeric_limits<float>::infinity()) ? x : out;  // +inf, NaN
}

// ---------------------------------------------------------------------------------------------
// Small vector helpers (length-N loops, n contiguous).
// ---------------------------------------------------------------------------------------------

// Numerically stable softmax in place, as jax.nn.softmax: exp(x - max) / sum.
void SoftmaxInPlace(float* x, int64_t n) {
  // Max over 16 independent lanes (a single running max is a serial dependency chain).
  constexpr int64_t L = 16;
  float lane[L];
  for (int64_t j = 0; j < L; ++j) lane[j] = x[0];
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int64_t j = 0; j < L; ++j) lane[j] = lane[j] < x[i + j] ? x[i + j] : lane[j];
  for (; i < n; ++i) lane[0] = lane[0] < x[i] ? x[i] : lane[0];
  float mx = lane[0];
  for (int64_t j = 1; j < L; ++j) mx = mx < lane[j] ? lane[j] : mx;
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (i = 0; i < n; ++i) {
    x[i] = FastExp(x[i] - mx);
    sum += x[i];
  }
  for (i = 0; i < n; ++i) x[i] = x[i] / sum;
}

float Dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Source offset of a circular roll: roll(w, off)[i] = w[(i - off) mod N]. Returns d in [0, N)
// such that for i >= d the source is i - d, and for i < d it is i - d + N.
int64_t RollOffset(int64_t off, int64_t N) { return ((off % N) + N) % N; }

// ---------------------------------------------------------------------------------------------
// One head's addressing, split into the memory-sized part (the key-row dot products, computed by
// the caller inside its pass over the memory) and the O(N) rest.
// ---------------------------------------------------------------------------------------------

struct HeadParams {  // one head of one example
  const float* key;  // [M]
  float beta, gate, gamma;
  const float* shift;  // [K]
  const float* wprev;  // [N]
};

struct HeadTrace {  // forward intermediates of one head, each [N] (kn a scalar)
  float* cos;  // on entry to AddressFinish: key . mem[:, n]; then the cosine similarity
  float* wc;   // content weights softmax(beta * cos)
  float* wg;   // interpolated g * wc + (1 - g) * wprev
  float* ws;   // shifted (circular convolution with the shift distribution)
  float* lw;   // log(max(ws, TINY))
  float* w;    // sharpened: the final weighting
  float* a;    // backward: dmem[m, n] += a[n] key[m] + b[n] mem[m, n]
  float* b;
  float kn;    // sqrt(|key|^2 + EPS)
  float c;     // backward: dkey[m] = sum_n a[n] mem[m, n] + c key[m]
};

// Finishes one head's addressing given the dot products in t.cos and the row norms rn [N]
// (rn[n] = sqrt(|mem[:, n]|^2 + EPS)).
void AddressFinish(const float* rn, int64_t M, int64_t N, int64_t K, const HeadParams& p, HeadTrace& t) {
  // Content: cos[n] = dot[n] / (rn[n] * kn), wc = softmax(beta * cos).
  float ksq = 0.f;
  for (int64_t m = 0; m < M; ++m) ksq += p.key[m] * p.key[m];
  t.kn = std::sqrt(ksq + kEps);
  for (int64_t n = 0; n < N; ++n) t.cos[n] = t.cos[n] / (rn[n] * t.kn);
  for (int64_t n = 0; n < N; ++n) t.wc[n] = p.beta * t.cos[n];
  SoftmaxInPlace(t.wc, N);
  // Interpolation.
  for (int64_t n = 0; n < N; ++n) t.wg[n] = p.gate * t.wc[n] + (1.f - p.gate) * p.wprev[n];
  // Shift: ws[i] = sum_j s[j] * wg[(i - (j - S)) mod N], accumulated in the order j = -S..S.
  const int64_t S = (K - 1) / 2;
  std::fill(t.ws, t.ws + N, 0.f);
  for (int64_t j = 0; j < K; ++j) {
    const float sj = p.shift[j];
    const int64_t d = RollOffset(j - S, N);
    for (int64_t i = 0; i < d; ++i) t.ws[i] += sj * t.wg[i - d + N];
    for (int64_t i = d; i < N; ++i) t.ws[i] += sj * t.wg[i - d];
  }
  // Sharpening: softmax(gamma * log(max(ws, TINY))).
  {
    const float* __restrict ws = t.ws;
    float* __restrict lw = t.lw;
    float* __restrict w = t.w;
    const float gamma = p.gamma;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) {
      lw[n] = FastLog(ws[n] < kTiny ? kTiny : ws[n]);  // ws < TINY is false for NaN, as in jnp.maximum
      w[n] = gamma * lw[n];
    }
  }
  SoftmaxInPlace(t.w, N);
}

struct HeadGrads {  // cotangents of one head's inputs (outputs of the backward kernel)
  float* dwprev;  // [N]
  float* dkey;    // [M], written by the caller's memory pass from t.a and t.c
  float* dbeta;
  float* dgate;
  float* dshift;  // [K]
  float* dgamma;
};

// The O(N) part of one head's addressing backward. Given dw [N], the cotangent of the head's
// final weighting, writes the cotangents of wprev, beta, gate, shift and gamma, and leaves in
// t.a, t.b, t.c the coefficients of the memory-sized part, which the caller applies in its pass
// over the memory:  dmem[m, n] += a[n] key[m] + b[n] mem[m, n],  dkey[m] = sum_n a[n] mem[m, n] + c key[m].
// `tmp` is scratch of 3N floats.
void AddressBackward(const float* rn, int64_t N, int64_t K, const HeadParams& p, HeadTrace& t,
                     const float* dw, float* tmp, const HeadGrads& g) {
  float* du = tmp;        // cotangent of the sharpening logits u = gamma * lw
  float* dws = tmp + N;   // cotangent of ws
  float* dwg = tmp + 2 * N;

  // Softmax backward (w = softmax(u)): du = w * (dw - <dw, w>).
  const float dw_dot_w = Dot(dw, t.w, N);
  for (int64_t n = 0; n < N; ++n) du[n] = t.w[n] * (dw[n] - dw_dot_w);
  // u = gamma * lw, lw = log(max(ws, TINY)): dgamma = <du, lw>, dlw = gamma * du, and
  // d log(x) / dx = 1 / x. jnp.maximum passes the gradient to ws where ws > TINY, half of it on a
  // tie (JAX's balanced rule), none below.
  *g.dgamma = Dot(du, t.lw, N);
#pragma omp simd
  for (int64_t n = 0; n < N; ++n) {
    const float ws = t.ws[n];
    const float dlw = p.gamma * du[n];
    const float share = ws > kTiny ? 1.f : (ws == kTiny ? 0.5f : 0.f);
    dws[n] = share * (dlw / (ws >= kTiny ? ws : 1.f));  // (branch-free: no division by ws < TINY)
  }

  // Shift backward, ws[i] = sum_j s[j] * wg[(i - o_j) mod N] with o_j = j - S:
  //   dwg[k] = sum_j s[j] * dws[(k + o_j) mod N],   ds[j] = sum_i dws[i] * wg[(i - o_j) mod N].
  const int64_t S = (K - 1) / 2;
  std::fill(dwg, dwg + N, 0.f);
  for (int64_t j = 0; j < K; ++j) {
    const float sj = p.shift[j];
    const int64_t d = RollOffset(j - S, N);  // ws[i] reads wg[i - d (mod N)]
    for (int64_t i = 0; i < d; ++i) dwg[i - d + N] += sj * dws[i];
    for (int64_t i = d; i < N; ++i) dwg[i - d] += sj * dws[i];
    g.dshift[j] = Dot(dws, t.wg + N - d, d) + Dot(dws + d, t.wg, N - d);
  }

  // Interpolation backward, wg = g * wc + (1 - g) * wprev:
  //   dwc = g * dwg,  dwprev = (1 - g) * dwg,  dgate = <dwg, wc - wprev>.
  float dgate = 0.f;
  float* dwc = dws;  // reuse
#pragma omp simd reduction(+ : dgate)
  for (int64_t n = 0; n < N; ++n) {
    dwc[n] = p.gate * dwg[n];
    g.dwprev[n] = (1.f - p.gate) * dwg[n];
    dgate += dwg[n] * (t.wc[n] - p.wprev[n]);
  }
  *g.dgate = dgate;

  // Content softmax backward (wc = softmax(z), z = beta * cos):
  //   dz = wc * (dwc - <dwc, wc>),  dbeta = <dz, cos>,  dcos = beta * dz.
  const float dwc_dot_wc = Dot(dwc, t.wc, N);
  float dbeta = 0.f;
  float* dcos = du;  // reuse
#pragma omp simd reduction(+ : dbeta)
  for (int64_t n = 0; n < N; ++n) {
    const float dz = t.wc[n] * (dwc[n] - dwc_dot_wc);
    dbeta += dz * t.cos[n];
    dcos[n] = p.beta * dz;
  }
  *g.dbeta = dbeta;

  // Cosine backward, cos[n] = dot[n] / (rn[n] kn), dot[n] = key . mem[:, n],
  // rn[n] = sqrt(|mem[:, n]|^2 + EPS), kn = sqrt(|key|^2 + EPS):
  //   ddot[n] = dcos[n] / (rn[n] kn)                                  =: a[n]
  //   drn[n]  = -dcos[n] cos[n] / rn[n];  d|mem[:, n]|^2 = drn / (2 rn), d/dmem |mem[:, n]|^2 = 2 mem
  //     => dmem[m, n] += a[n] key[m] + b[n] mem[m, n]   with b[n] = -dcos[n] cos[n] / rn[n]^2
  //   dkn = -sum_n dcos[n] cos[n] / kn;  d kn / d key = key / kn
  //     => dkey[m] = sum_n a[n] mem[m, n] + c key[m]     with c = dkn / kn.
  float dkn = 0.f;
#pragma omp simd reduction(+ : dkn)
  for (int64_t n = 0; n < N; ++n) {
    const float dc = dcos[n];
    dkn += -dc * t.cos[n] / t.kn;
    t.b[n] = -dc * t.cos[n] / (rn[n] * rn[n]);
    t.a[n] = dc / (rn[n] * t.kn);
  }
  t.c = dkn / t.kn;
}

// ---------------------------------------------------------------------------------------------
// Per-example views of the batched buffers.
// ---------------------------------------------------------------------------------------------

struct Dims {
  int64_t B, M, N, W, R, K;
};

struct Inputs {  // batched input pointers
  const float *mem, *wprev_w, *wprev_r;
  const float *key_w, *beta_w, *gate_w, *shift_w, *gamma_w, *erase, *add;
  const float *key_r, *beta_r, *gate_r, *shift_r, *gamma_r;
};

HeadParams WriteHead(const Inputs& in, const Dims& d, int64_t b, int64_t h) {
  const int64_t i = b * d.W + h;
  return {in.key_w + i * d.M, in.beta_w[i], in.gate_w[i], in.gamma_w[i], in.shift_w + i * d.K,
          in.wprev_w + i * d.N};
}

HeadParams ReadHead(const Inputs& in, const Dims& d, int64_t b, int64_t r) {
  const int64_t i = b * d.R + r;
  return {in.key_r + i * d.M, in.beta_r[i], in.gate_r[i], in.gamma_r[i], in.shift_r + i * d.K,
          in.wprev_r + i * d.N};
}

// Scratch for one example's intermediates; reused across the examples of a chunk.
struct Workspace {
  std::vector<float> buf;
  std::vector<HeadTrace> write, read;
  float *rn0, *rn1, *keep, *added, *d1, *tmp, *dw, *mem1;

  Workspace(const Dims& d, bool backward) {
    const int64_t heads = d.W + d.R;
    const int64_t size = 8 * heads * d.N + 5 * d.N + 3 * d.N + std::max(d.W, d.R) * d.N +
                         (backward ? d.M * d.N : 0);
    buf.resize(static_cast<size_t>(size));
    float* p = buf.data();
    auto take = [&p](int64_t n) { float* q = p; p += n; return q; };
    write.resize(static_cast<size_t>(d.W));
    read.resize(static_cast<size_t>(d.R));
    for (auto* v : {&write, &read})
      for (HeadTrace& t : *v) {
        t.cos = take(d.N); t.wc = take(d.N); t.wg = take(d.N); t.ws = take(d.N);
        t.lw = take(d.N); t.w = take(d.N); t.a = take(d.N); t.b = take(d.N);
        t.kn = t.c = 0.f;
      }
    rn0 = take(d.N); rn1 = take(d.N); keep = take(d.N); added = take(d.N); d1 = take(d.N);
    tmp = take(3 * d.N);
    dw = take(std::max(d.W, d.R) * d.N);
    mem1 = backward ? take(d.M * d.N) : nullptr;
  }
};

// keep[n] = prod_h (1 - e[h, m] w[h, n]) and added[n] = sum_h a[h, m] w[h, n] for memory row m.
void WriteFactors(const Workspace& ws, const float* erase, const float* add, int64_t W, int64_t M, int64_t N,
                  int64_t m, float* keep, float* added) {
  const float* w0 = ws.write[0].w;
  const float e0 = erase[m], a0 = add[m];
  for (int64_t n = 0; n < N; ++n) {
    keep[n] = 1.f - e0 * w0[n];
    added[n] = a0 * w0[n];
  }
  for (int64_t h = 1; h < W; ++h) {
    const float* wh = ws.write[h].w;
    const float eh = erase[h * M + m], ah = add[h * M + m];
    for (int64_t n = 0; n < N; ++n) {
      keep[n] = keep[n] * (1.f - eh * wh[n]);
      added[n] = added[n] + ah * wh[n];
    }
  }
}

// Forward of one example: two passes over memory rows, then the reads.
//   pass A (old memory): row norms and the write heads' key dot products; write heads finish.
//   pass B: the write, row by row, into mem1, with mem1's row norms and the read heads' key dot
//           products; read heads finish. With `drw` non-null (the backward's recomputation),
//           also accumulates drw[r, n] += sum_m dreads[r, m] mem1[m, n] (the reads' backward).
//   pass C (forward only): reads[r, m] = sum_n rw[r, n] mem1[m, n].
void ForwardOne(const Inputs& in, const Dims& d, int64_t b, Workspace& ws, float* mem1,
                float* ww_out, float* rw_out, float* reads_out, const float* dreads, float* drw) {
  const int64_t M = d.M, N = d.N, W = d.W, R = d.R;
  const float* mem0 = in.mem + b * M * N;

  // Pass A.
  std::fill(ws.rn0, ws.rn0 + N, 0.f);
  for (int64_t h = 0; h < W; ++h) std::fill(ws.write[h].cos, ws.write[h].cos + N, 0.f);
  for (int64_t m = 0; m < M; ++m) {
    const float* row = mem0 + m * N;
    for (int64_t n = 0; n < N; ++n) ws.rn0[n] += row[n] * row[n];
    for (int64_t h = 0; h < W; ++h) {
      const float k = in.key_w[(b * W + h) * M + m];
      float* dot = ws.write[h].cos;
      for (int64_t n = 0; n < N; ++n) dot[n] += k * row[n];
    }
  }
  for (int64_t n = 0; n < N; ++n) ws.rn0[n] = std::sqrt(ws.rn0[n] + kEps);
  for (int64_t h = 0; h < W; ++h) AddressFinish(ws.rn0, M, N, d.K, WriteHead(in, d, b, h), ws.write[h]);

  // Pass B.
  const float* erase = in.erase + b * W * M;
  const float* add = in.add + b * W * M;
  std::fill(ws.rn1, ws.rn1 + N, 0.f);
  for (int64_t r = 0; r < R; ++r) std::fill(ws.read[r].cos, ws.read[r].cos + N, 0.f);
  for (int64_t m = 0; m < M; ++m) {
    WriteFactors(ws, erase, add, W, M, N, m, ws.keep, ws.added);
    const float* row0 = mem0 + m * N;
    float* row1 = mem1 + m * N;
    for (int64_t n = 0; n < N; ++n) {
      row1[n] = row0[n] * ws.keep[n] + ws.added[n];
      ws.rn1[n] += row1[n] * row1[n];
    }
    for (int64_t r = 0; r < R; ++r) {
      const float k = in.key_r[(b * R + r) * M + m];
      float* dot = ws.read[r].cos;
      for (int64_t n = 0; n < N; ++n) dot[n] += k * row1[n];
      if (drw) {
        const float dr = dreads[r * M + m];
        float* g = drw + r * N;
        for (int64_t n = 0; n < N; ++n) g[n] += dr * row1[n];
      }
    }
  }
  for (int64_t n = 0; n < N; ++n) ws.rn1[n] = std::sqrt(ws.rn1[n] + kEps);
  for (int64_t r = 0; r < R; ++r) AddressFinish(ws.rn1, M, N, d.K, ReadHead(in, d, b, r), ws.read[r]);

  // Pass C and the weightings.
  if (ww_out)
    for (int64_t h = 0; h < W; ++h) std::copy(ws.write[h].w, ws.write[h].w + N, ww_out + (b * W + h) * N);
  if (rw_out)
    for (int64_t r = 0; r < R; ++r) std::copy(ws.read[r].w, ws.read[r].w + N, rw_out + (b * R + r) * N);
  if (reads_out)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t r = 0; r < R; ++r) reads_out[(b * R + r) * M + m] = Dot(ws.read[r].w, mem1 + m * N, N);
}

// ---------------------------------------------------------------------------------------------
// Batch parallelism over XLA's intra-op thread pool.
// ---------------------------------------------------------------------------------------------

// Runs fn(begin, end) over [0, B) in chunks. The calling thread works too, and waits only for
// chunks some thread has claimed, so it cannot deadlock on a busy pool; tasks that start after
// all chunks are claimed return at once (they share the state through a shared_ptr).
void ParallelFor(ffi::ThreadPool& pool, int64_t B, int64_t work_per_item,
                 const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  // Split only calls of at least ~1M multiply-adds (a few hundred microseconds): on a shared
  // machine a helper thread that is preempted after claiming a chunk makes the caller wait for it,
  // which small calls cannot afford (with a 64k threshold the fused copy step at batch 16 measured
  // slower than pure JAX on a loaded 2-core machine).
  if (threads == 1 || B < 2 || B * work_per_item < (int64_t{1} << 20)) {
    fn(0, B);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0}, done{0};
    int64_t chunks = 0, chunk = 0, B = 0;
    std::function<void(int64_t, int64_t)> fn;
  };
  auto s = std::make_shared<Shared>();
  s->B = B;
  s->chunks = std::min<int64_t>(B, 4 * threads);
  s->chunk = (B + s->chunks - 1) / s->chunks;
  s->chunks = (B + s->chunk - 1) / s->chunk;
  s->fn = fn;
  auto work = [](Shared& st) {
    for (int64_t c; (c = st.next.fetch_add(1)) < st.chunks;) {
      st.fn(c * st.chunk, std::min(st.B, (c + 1) * st.chunk));
      st.done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t i = 0; i < threads && i + 1 < s->chunks; ++i) pool.Schedule([s, work] { work(*s); });
  work(*s);
  while (s->done.load(std::memory_order_acquire) < s->chunks) std::this_thread::yield();
}

// ---------------------------------------------------------------------------------------------
// Shape checks.
// ---------------------------------------------------------------------------------------------

ffi::Error CheckCount(const char* name, size_t got, int64_t want) {
  if (static_cast<int64_t>(got) != want)
    return ffi::Error::InvalidArgument(std::string("ntm_memory_step: ") + name + " has " +
                                       std::to_string(got) + " elements, expected " + std::to_string(want));
  return ffi::Error::Success();
}

#define NTM_RETURN_IF_ERROR(expr)    \
  do {                               \
    ffi::Error err_ = (expr);        \
    if (err_.failure()) return err_; \
  } while (0)

// Reads the dimensions off the buffers ([..., M, N] memory, [..., W, N], [..., R, N] weightings,
// [..., W, K] shifts) and checks every input's size against them.
ffi::Error GetDims(const F32Buf& mem, const F32Buf& wprev_w, const F32Buf& wprev_r, const F32Buf& key_w,
                   const F32Buf& beta_w, const F32Buf& gate_w, const F32Buf& shift_w, const F32Buf& gamma_w,
                   const F32Buf& erase, const F32Buf& add, const F32Buf& key_r, const F32Buf& beta_r,
                   const F32Buf& gate_r, const F32Buf& shift_r, const F32Buf& gamma_r, Dims& d) {
  auto md = mem.dimensions(), wd = wprev_w.dimensions(), rd = wprev_r.dimensions(), sd = shift_w.dimensions();
  if (md.size() < 2 || wd.size() < 2 || rd.size() < 2 || sd.size() < 2)
    return ffi::Error::InvalidArgument("ntm_memory_step: memory, weightings and shifts need rank >= 2");
  d.M = md[md.size() - 2];
  d.N = md[md.size() - 1];
  d.W = wd[wd.size() - 2];
  d.R = rd[rd.size() - 2];
  d.K = sd[sd.size() - 1];
  if (d.M < 1 || d.N < 1 || d.W < 1 || d.R < 1 || d.K < 1 || d.K % 2 == 0)
    return ffi::Error::InvalidArgument("ntm_memory_step: needs M, N, W, R >= 1 and an odd shift length");
  d.B = static_cast<int64_t>(mem.element_count()) / (d.M * d.N);
  NTM_RETURN_IF_ERROR(CheckCount("memory", mem.element_count(), d.B * d.M * d.N));
  NTM_RETURN_IF_ERROR(CheckCount("write weights", wprev_w.element_count(), d.B * d.W * d.N));
  NTM_RETURN_IF_ERROR(CheckCount("read weights", wprev_r.element_count(), d.B * d.R * d.N));
  NTM_RETURN_IF_ERROR(CheckCount("write key", key_w.element_count(), d.B * d.W * d.M));
  NTM_RETURN_IF_ERROR(CheckCount("write beta", beta_w.element_count(), d.B * d.W));
  NTM_RETURN_IF_ERROR(CheckCount("write gate", gate_w.element_count(), d.B * d.W));
  NTM_RETURN_IF_ERROR(CheckCount("write shift", shift_w.element_count(), d.B * d.W * d.K));
  NTM_RETURN_IF_ERROR(CheckCount("write gamma", gamma_w.element_count(), d.B * d.W));
  NTM_RETURN_IF_ERROR(CheckCount("erase", erase.element_count(), d.B * d.W * d.M));
  NTM_RETURN_IF_ERROR(CheckCount("add", add.element_count(), d.B * d.W * d.M));
  NTM_RETURN_IF_ERROR(CheckCount("read key", key_r.element_count(), d.B * d.R * d.M));
  NTM_RETURN_IF_ERROR(CheckCount("read beta", beta_r.element_count(), d.B * d.R));
  NTM_RETURN_IF_ERROR(CheckCount("read gate", gate_r.element_count(), d.B * d.R));
  NTM_RETURN_IF_ERROR(CheckCount("read shift", shift_r.element_count(), d.B * d.R * d.K));
  NTM_RETURN_IF_ERROR(CheckCount("read gamma", gamma_r.element_count(), d.B * d.R));
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Forward kernel.
// ---------------------------------------------------------------------------------------------

ffi::Error ForwardImpl(ffi::ThreadPool pool, F32Buf mem, F32Buf wprev_w, F32Buf wprev_r, F32Buf key_w, F32Buf beta_w,
                       F32Buf gate_w, F32Buf shift_w, F32Buf gamma_w, F32Buf erase, F32Buf add, F32Buf key_r,
                       F32Buf beta_r, F32Buf gate_r, F32Buf shift_r, F32Buf gamma_r, F32Ret mem_out, F32Ret ww_out,
                       F32Ret rw_out, F32Ret reads_out) {
  Dims d;
  NTM_RETURN_IF_ERROR(GetDims(mem, wprev_w, wprev_r, key_w, beta_w, gate_w, shift_w, gamma_w, erase, add, key_r,
                              beta_r, gate_r, shift_r, gamma_r, d));
  NTM_RETURN_IF_ERROR(CheckCount("memory result", mem_out->element_count(), d.B * d.M * d.N));
  NTM_RETURN_IF_ERROR(CheckCount("write weights result", ww_out->element_count(), d.B * d.W * d.N));
  NTM_RETURN_IF_ERROR(CheckCount("read weights result", rw_out->element_count(), d.B * d.R * d.N));
  NTM_RETURN_IF_ERROR(CheckCount("reads result", reads_out->element_count(), d.B * d.R * d.M));
  const Inputs in{mem.typed_data(),    wprev_w.typed_data(), wprev_r.typed_data(), key_w.typed_data(),
                  beta_w.typed_data(), gate_w.typed_data(),  shift_w.typed_data(), gamma_w.typed_data(),
                  erase.typed_data(),  add.typed_data(),     key_r.typed_data(),   beta_r.typed_data(),
                  gate_r.typed_data(), shift_r.typed_data(), gamma_r.typed_data()};
  float* mem1 = mem_out->typed_data();
  float* ww = ww_out->typed_data();
  float* rw = rw_out->typed_data();
  float* reads = reads_out->typed_data();
  ParallelFor(pool, d.B, (d.W + d.R + 3) * d.M * d.N, [&](int64_t begin, int64_t end) {
    Workspace ws(d, /*backward=*/false);
    for (int64_t b = begin; b < end; ++b)
      ForwardOne(in, d, b, ws, mem1 + b * d.M * d.N, ww, rw, reads, nullptr, nullptr);
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Backward kernel.
// ---------------------------------------------------------------------------------------------

struct Cotangents {  // batched cotangents of the forward results
  const float *mem1, *ww, *rw, *reads;
};

struct Grads {  // batched cotangents of the inputs (the backward kernel's results)
  float *mem, *wprev_w, *wprev_r;
  float *key_w, *beta_w, *gate_w, *shift_w, *gamma_w, *erase, *add;
  float *key_r, *beta_r, *gate_r, *shift_r, *gamma_r;
};

HeadGrads WriteHeadGrads(const Grads& g, const Dims& d, int64_t b, int64_t h) {
  const int64_t i = b * d.W + h;
  return {g.wprev_w + i * d.N, g.key_w + i * d.M, g.beta_w + i, g.gate_w + i, g.shift_w + i * d.K, g.gamma_w + i};
}

HeadGrads ReadHeadGrads(const Grads& g, const Dims& d, int64_t b, int64_t r) {
  const int64_t i = b * d.R + r;
  return {g.wprev_r + i * d.N, g.key_r + i * d.M, g.beta_r + i, g.gate_r + i, g.shift_r + i * d.K, g.gamma_r + i};
}

// Backward of one example, in reverse order of the forward:
//   recompute the forward (passes A and B; B also finishes drw, the read weights' cotangent,
//     drw[r, n] = d_rw_out[r, n] + sum_m dreads[r, m] mem1[m, n]);
//   read heads' addressing backward, O(N) (coefficients a, b, c of the memory-sized part);
//   pass D over rows m: the new memory's cotangent row
//     dmem1[m, :] = d_mem_out[m, :] + sum_r (dreads[r, m] rw[r, :] + a_r key_r[m] + b_r mem1[m, :]),
//     the read keys' cotangent dkey_r[m] = <a_r, mem1[m, :]> + c_r key_r[m], and the write's backward
//     (below), which gives dmem0's row and accumulates the write weights' cotangent dww;
//   write heads' addressing backward, O(N);
//   pass E over rows m: dmem0[m, :] += a_h key_h[m] + b_h mem0[m, :],  dkey_h[m] = <a_h, mem0[m, :]> + c_h key_h[m].
void BackwardOne(const Inputs& in, const Cotangents& ct, const Grads& g, const Dims& d, int64_t b, Workspace& ws) {
  const int64_t M = d.M, N = d.N, W = d.W, R = d.R;
  const float* mem0 = in.mem + b * M * N;
  float* drw = ws.dw;  // [R, N], then reused as dww [W, N]
  std::copy(ct.rw + b * R * N, ct.rw + (b + 1) * R * N, drw);
  ForwardOne(in, d, b, ws, ws.mem1, nullptr, nullptr, nullptr, ct.reads + b * R * M, drw);
  const float* mem1 = ws.mem1;
  for (int64_t r = 0; r < R; ++r)
    AddressBackward(ws.rn1, N, d.K, ReadHead(in, d, b, r), ws.read[r], drw + r * N, ws.tmp, ReadHeadGrads(g, d, b, r));

  // Pass D. The write, mem1 = mem0 * keep + added with keep = prod_h f_h, f_h[m, n] = 1 - e[h, m] w[h, n],
  // added = sum_h a[h, m] w[h, n], has the backward
  //   dmem0 = dmem1 * keep
  //   dkeep = dmem1 * mem0,   df_h = dkeep * prod_{h' != h} f_h'   (product of the others, no division)
  //   de[h, m] = -sum_n df_h[m, n] w[h, n]
  //   da[h, m] =  sum_n dmem1[m, n] w[h, n]
  //   dw[h, n] =  d_ww_out[h, n] + sum_m (dmem1[m, n] a[h, m] - df_h[m, n] e[h, m])
  const float* erase = in.erase + b * W * M;
  const float* add = in.add + b * W * M;
  const float* dreads = ct.reads + b * R * M;
  float* dmem0 = g.mem + b * M * N;
  float* dww = ws.dw;
  std::copy(ct.ww + b * W * N, ct.ww + (b + 1) * W * N, dww);
  float* d1 = ws.d1;
  for (int64_t m = 0; m < M; ++m) {
    const float* row0 = mem0 + m * N;
    const float* row1 = mem1 + m * N;
    float* drow0 = dmem0 + m * N;
    // dmem1 row m
    std::copy(ct.mem1 + (b * M + m) * N, ct.mem1 + (b * M + m + 1) * N, d1);
    for (int64_t r = 0; r < R; ++r) {
      const HeadTrace& t = ws.read[r];
      const float dr = dreads[r * M + m];
      const float k = in.key_r[(b * R + r) * M + m];
      for (int64_t n = 0; n < N; ++n) d1[n] += dr * t.w[n] + t.a[n] * k + t.b[n] * row1[n];
      g.key_r[(b * R + r) * M + m] = Dot(t.a, row1, N) + t.c * k;
    }
    // the write's backward for row m
    if (W == 1) {
      const float* w0 = ws.write[0].w;
      const float e0 = erase[m], a0 = add[m];
      float de = 0.f, da = 0.f;
#pragma omp simd reduction(+ : de, da)
      for (int64_t n = 0; n < N; ++n) {
        const float df = d1[n] * row0[n];  // dkeep = df_0 (no other heads)
        drow0[n] = d1[n] * (1.f - e0 * w0[n]);
        de += -df * w0[n];
        da += d1[n] * w0[n];
        dww[n] += d1[n] * a0 - df * e0;
      }
      g.erase[b * M + m] = de;
      g.add[b * M + m] = da;
      continue;
    }
    WriteFactors(ws, erase, add, W, M, N, m, ws.keep, ws.added);
    for (int64_t n = 0; n < N; ++n) drow0[n] = d1[n] * ws.keep[n];
    for (int64_t h = 0; h < W; ++h) {
      const float* wh = ws.write[h].w;
      const float eh = erase[h * M + m], ah = add[h * M + m];
      float de = 0.f, da = 0.f;
      for (int64_t n = 0; n < N; ++n) {
        float prod_others = 1.f;
        for (int64_t k = 0; k < W; ++k)
          if (k != h) prod_others = prod_others * (1.f - erase[k * M + m] * ws.write[k].w[n]);
        const float df = d1[n] * row0[n] * prod_others;
        de += -df * wh[n];
        da += d1[n] * wh[n];
        dww[h * N + n] += d1[n] * ah - df * eh;
      }
      g.erase[(b * W + h) * M + m] = de;
      g.add[(b * W + h) * M + m] = da;
    }
  }

  for (int64_t h = 0; h < W; ++h)
    AddressBackward(ws.rn0, N, d.K, WriteHead(in, d, b, h), ws.write[h], dww + h * N, ws.tmp, WriteHeadGrads(g, d, b, h));

  // Pass E.
  for (int64_t m = 0; m < M; ++m) {
    const float* row0 = mem0 + m * N;
    float* drow0 = dmem0 + m * N;
    for (int64_t h = 0; h < W; ++h) {
      const HeadTrace& t = ws.write[h];
      const float k = in.key_w[(b * W + h) * M + m];
      for (int64_t n = 0; n < N; ++n) drow0[n] += t.a[n] * k + t.b[n] * row0[n];
      g.key_w[(b * W + h) * M + m] = Dot(t.a, row0, N) + t.c * k;
    }
  }
}

ffi::Error BackwardImpl(ffi::ThreadPool pool, F32Buf mem, F32Buf wprev_w, F32Buf wprev_r, F32Buf key_w, F32Buf beta_w,
                        F32Buf gate_w, F32Buf shift_w, F32Buf gamma_w, F32Buf erase, F32Buf add, F32Buf key_r,
                        F32Buf beta_r, F32Buf gate_r, F32Buf shift_r, F32Buf gamma_r, F32Buf ct_mem, F32Buf ct_ww,
                        F32Buf ct_rw, F32Buf ct_reads, F32Ret g_mem, F32Ret g_wprev_w, F32Ret g_wprev_r,
                        F32Ret g_key_w, F32Ret g_beta_w, F32Ret g_gate_w, F32Ret g_shift_w, F32Ret g_gamma_w,
                        F32Ret g_erase, F32Ret g_add, F32Ret g_key_r, F32Ret g_beta_r, F32Ret g_gate_r,
                        F32Ret g_shift_r, F32Ret g_gamma_r) {
  Dims d;
  NTM_RETURN_IF_ERROR(GetDims(mem, wprev_w, wprev_r, key_w, beta_w, gate_w, shift_w, gamma_w, erase, add, key_r,
                              beta_r, gate_r, shift_r, gamma_r, d));
  NTM_RETURN_IF_ERROR(CheckCount("memory cotangent", ct_mem.element_count(), d.B * d.M * d.N));
  NTM_RETURN_IF_ERROR(CheckCount("write weights cotangent", ct_ww.element_count(), d.B * d.W * d.N));
  NTM_RETURN_IF_ERROR(CheckCount("read weights cotangent", ct_rw.element_count(), d.B * d.R * d.N));
  NTM_RETURN_IF_ERROR(CheckCount("reads cotangent", ct_reads.element_count(), d.B * d.R * d.M));
  // Each result has its input's shape (the wrapper declares them so); check them all.
  NTM_RETURN_IF_ERROR(GetDims(*g_mem, *g_wprev_w, *g_wprev_r, *g_key_w, *g_beta_w, *g_gate_w, *g_shift_w, *g_gamma_w,
                              *g_erase, *g_add, *g_key_r, *g_beta_r, *g_gate_r, *g_shift_r, *g_gamma_r, d));
  const Inputs in{mem.typed_data(),    wprev_w.typed_data(), wprev_r.typed_data(), key_w.typed_data(),
                  beta_w.typed_data(), gate_w.typed_data(),  shift_w.typed_data(), gamma_w.typed_data(),
                  erase.typed_data(),  add.typed_data(),     key_r.typed_data(),   beta_r.typed_data(),
                  gate_r.typed_data(), shift_r.typed_data(), gamma_r.typed_data()};
  const Cotangents ct{ct_mem.typed_data(), ct_ww.typed_data(), ct_rw.typed_data(), ct_reads.typed_data()};
  const Grads g{g_mem->typed_data(),    g_wprev_w->typed_data(), g_wprev_r->typed_data(), g_key_w->typed_data(),
                g_beta_w->typed_data(), g_gate_w->typed_data(),  g_shift_w->typed_data(), g_gamma_w->typed_data(),
                g_erase->typed_data(),  g_add->typed_data(),     g_key_r->typed_data(),   g_beta_r->typed_data(),
                g_gate_r->typed_data(), g_shift_r->typed_data(), g_gamma_r->typed_data()};
  ParallelFor(pool, d.B, 3 * (d.W + d.R + 3) * d.M * d.N, [&](int64_t begin, int64_t end) {
    Workspace ws(d, /*backward=*/true);
    for (int64_t b = begin; b < end; ++b) BackwardOne(in, ct, g, d, b, ws);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(NtmMemoryStepFwd, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32Buf>()  // memory [M, N]
                                  .Arg<F32Buf>()  // previous write weights [W, N]
                                  .Arg<F32Buf>()  // previous read weights [R, N]
                                  .Arg<F32Buf>()  // write key [W, M]
                                  .Arg<F32Buf>()  // write beta [W]
                                  .Arg<F32Buf>()  // write gate [W]
                                  .Arg<F32Buf>()  // write shift [W, K]
                                  .Arg<F32Buf>()  // write gamma [W]
                                  .Arg<F32Buf>()  // erase [W, M]
                                  .Arg<F32Buf>()  // add [W, M]
                                  .Arg<F32Buf>()  // read key [R, M]
                                  .Arg<F32Buf>()  // read beta [R]
                                  .Arg<F32Buf>()  // read gate [R]
                                  .Arg<F32Buf>()  // read shift [R, K]
                                  .Arg<F32Buf>()  // read gamma [R]
                                  .Ret<F32Buf>()  // new memory [M, N]
                                  .Ret<F32Buf>()  // write weights [W, N]
                                  .Ret<F32Buf>()  // read weights [R, N]
                                  .Ret<F32Buf>()  // reads [R, M]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(NtmMemoryStepBwd, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32Buf>().Arg<F32Buf>().Arg<F32Buf>()  // memory, prev write / read weights
                                  .Arg<F32Buf>().Arg<F32Buf>().Arg<F32Buf>().Arg<F32Buf>().Arg<F32Buf>()  // write head
                                  .Arg<F32Buf>().Arg<F32Buf>()                                            // erase, add
                                  .Arg<F32Buf>().Arg<F32Buf>().Arg<F32Buf>().Arg<F32Buf>().Arg<F32Buf>()  // read head
                                  .Arg<F32Buf>().Arg<F32Buf>().Arg<F32Buf>().Arg<F32Buf>()  // cotangents of results
                                  .Ret<F32Buf>().Ret<F32Buf>().Ret<F32Buf>()                // memory, weights
                                  .Ret<F32Buf>().Ret<F32Buf>().Ret<F32Buf>().Ret<F32Buf>().Ret<F32Buf>()  // write head
                                  .Ret<F32Buf>().Ret<F32Buf>()                                            // erase, add
                                  .Ret<F32Buf>().Ret<F32Buf>().Ret<F32Buf>().Ret<F32Buf>().Ret<F32Buf>()  // read head
);
