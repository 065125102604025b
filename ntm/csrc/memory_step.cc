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
// Speed: every memory-sized [M, N] quantity is touched in as few passes as possible (forward: 3
// passes; backward: 4), vectorised over n. With one write and one read head (W = R = 1, Graves'
// set-up) the passes are specialised: the forward's two passes go column block by column block
// (two vectors of columns: 32 with AVX-512) over all M rows, keeping the per-column sums in registers, and the
// backward's rows are single fused loops. Other head counts take the general row-by-row passes.
// The O(N) exp/log of the softmaxes and the sharpening use the branch-free polynomial expf/logf
// below (Cephes, as Eigen and XLA:CPU use) so that they vectorise too; the shifts read a
// wrap-around-padded copy of the weighting instead of splitting each roll in two.
//
// Numerics: IEEE float32 operations except that the build (ntm/fused_cpu.py) allows FMA
// contraction (-ffp-contract=fast: a*b+c may round once); no -ffast-math. Divisions by a common
// factor are multiplications by its reciprocal (1/rn, 1/kn, 1/sum). exp/log are the polynomial
// approximations (~1 ulp). Sums over n (Dot, Sum, the row sums of the memory passes) use vector
// partial sums, so they are evaluated in a different order than XLA's.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
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

// exp(x) for x <= 0 (the softmaxes' exp(x - max), the only exps here): x = k ln2 + r, |r| <= ln2 / 2,
// exp(r) by a degree-7 polynomial, times 2^k built in the exponent bits (k in [-126, 0]: one normal
// float). Exact 0 below ln(FLT_MIN) (where expf would return a denormal < 1.2e-38); NaN for NaN (it
// propagates through the clamp and the polynomial).
inline float FastExpNonPos(float x) {
  const float lo = -87.3365447504f;  // ln(FLT_MIN)
  const float xc = x < lo ? lo : x;   // NaN stays NaN
  const float k = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  const float kc = k == k ? k : 0.f;  // NaN x: no float-to-int conversion of NaN (r, so y, is NaN anyway)
  const float y = p * AsFloat((static_cast<int32_t>(kc) + 127) << 23);
  return x < lo ? 0.f : y;
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

// A GCC/Clang vector of the build target's native width: 16 floats with AVX-512, 8 with AVX, 4
// otherwise (SSE). The memory passes of the one-head fast path (below) keep their per-column
// accumulators in these. Loads and stores are unaligned (memcpy); every operation is elementwise.
#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
#elif defined(__AVX__)
constexpr int64_t kLanes = 8;
#else
constexpr int64_t kLanes = 4;
#endif
typedef float V16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));
typedef float Vec __attribute__((vector_size(4 * kLanes)));

#define NTM_INLINE inline __attribute__((always_inline))
template <class T> NTM_INLINE T Load(const float* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T> NTM_INLINE void Store(float* p, T v) { std::memcpy(p, &v, sizeof v); }
// Horizontal sums, pairwise: 16 -> 8 -> 4 -> 2 -> 1.
NTM_INLINE float HSum(float x) { return x; }
NTM_INLINE float HSum(V4 v) { return (v[0] + v[2]) + (v[1] + v[3]); }
NTM_INLINE float HSum(V8 v) {
  V4 lo, hi;
  std::memcpy(&lo, &v, 16);
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + 16, 16);
  return HSum(lo + hi);
}
NTM_INLINE float HSum(V16 v) {
  V8 lo, hi;
  std::memcpy(&lo, &v, 32);
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + 32, 32);
  return HSum(lo + hi);
}

// Reductions over length-n vectors, with explicit vector accumulators (GCC's `omp simd reduction`
// ends in a serial scalar sum over the lanes, slow next to a 128-long loop). The summation order
// is fixed by n alone: lane-wise partial sums, then pairwise across lanes, then the tail.
float Dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  Vec s0{}, s1{}, s2{}, s3{};
  int64_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    s0 += Load<Vec>(a + i) * Load<Vec>(b + i);
    s1 += Load<Vec>(a + i + kLanes) * Load<Vec>(b + i + kLanes);
    s2 += Load<Vec>(a + i + 2 * kLanes) * Load<Vec>(b + i + 2 * kLanes);
    s3 += Load<Vec>(a + i + 3 * kLanes) * Load<Vec>(b + i + 3 * kLanes);
  }
  for (; i + kLanes <= n; i += kLanes) s0 += Load<Vec>(a + i) * Load<Vec>(b + i);
  float s = HSum((s0 + s1) + (s2 + s3));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

float Sum(const float* __restrict a, int64_t n) {
  Vec s0{}, s1{};
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    s0 += Load<Vec>(a + i);
    s1 += Load<Vec>(a + i + kLanes);
  }
  for (; i + kLanes <= n; i += kLanes) s0 += Load<Vec>(a + i);
  float s = HSum(s0 + s1);
  for (; i < n; ++i) s += a[i];
  return s;
}

// Softmax's max (n >= 1). NaN is ignored unless it is x[0]; the softmax is NaN everywhere then
// anyway (exp(NaN - max) poisons the sum), as jax.nn.softmax.
float Max(const float* __restrict x, int64_t n) {
  float mx = x[0];
  int64_t i = 0;
  if (n >= kLanes) {
    Vec v = Load<Vec>(x);
    for (i = kLanes; i + kLanes <= n; i += kLanes) {
      const Vec y = Load<Vec>(x + i);
      v = v < y ? y : v;
    }
    for (int64_t j = 0; j < kLanes; ++j) mx = mx < v[j] ? v[j] : mx;
  }
  for (; i < n; ++i) mx = mx < x[i] ? x[i] : mx;
  return mx;
}

// Fills the wrap-around margins of a padded circular buffer: p holds x [N] at p[S .. S + N) and
// gets p[q] = x[(q - S) mod N] for q in [0, S) and [S + N, 2S + N), so that any circular roll of x
// by at most S places is a plain offset into p.
void PadCircular(float* p, int64_t N, int64_t S) {
  if (S <= N) {
    for (int64_t q = 0; q < S; ++q) p[q] = p[q + N];
    for (int64_t q = S + N; q < 2 * S + N; ++q) p[q] = p[q - N];
    return;
  }
  for (int64_t q = 0; q < S; ++q) p[q] = p[S + (((q - S) % N) + N) % N];
  for (int64_t q = S + N; q < 2 * S + N; ++q) p[q] = p[S + (q - S) % N];
}

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
  float* wg;   // interpolated g * wc + (1 - g) * wprev; wg[-S .. N + S) valid (PadCircular)
  float* ws;   // shifted (circular convolution with the shift distribution)
  float* lw;   // log(max(ws, TINY))
  float* w;    // sharpened: the final weighting
  float* a;    // backward: dmem[m, n] += a[n] key[m] + b[n] mem[m, n]
  float* b;
  float kn;    // sqrt(|key|^2 + EPS)
  float c;     // backward: dkey[m] = sum_n a[n] mem[m, n] + c key[m]
};

// x = exp(x - mx) in place; returns the sum.
inline float ExpShiftSum(float* __restrict x, float mx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = FastExpNonPos(x[i] - mx);
  return Sum(x, n);
}

// Shift: ws[i] = sum_j s[j] * wg[i - (j - S)] over the padded wg, accumulated j = 0..K-1, then the
// sharpening logits: lw = log(max(ws, TINY)), u = gamma * lw (into w). KT > 0: K known statically.
template <int KT>
void ShiftAndLog(const float* __restrict wgp, const float* __restrict s, float gamma, int64_t N, int64_t K,
                 float* __restrict ws, float* __restrict lw, float* __restrict u) {
  if constexpr (KT > 0) K = KT;
  const int64_t S = (K - 1) / 2;
  const float* base = wgp + S;  // wg[0]; ws[i] reads base[i + S - j]
#pragma omp simd
  for (int64_t n = 0; n < N; ++n) {
    float acc = 0.f;
    for (int64_t j = 0; j < K; ++j) acc += s[j] * base[n + S - j];
    ws[n] = acc;
    lw[n] = FastLog(acc < kTiny ? kTiny : acc);  // acc < TINY is false for NaN, as in jnp.maximum
    u[n] = gamma * lw[n];
  }
}

// Finishes one head's addressing given the dot products in t.cos and the inverse row norms
// inv_rn [N] (inv_rn[n] = 1 / sqrt(|mem[:, n]|^2 + EPS)).
void AddressFinish(const float* __restrict inv_rn, int64_t M, int64_t N, int64_t K, const HeadParams& p,
                   HeadTrace& t) {
  // Content: cos[n] = dot[n] / (rn[n] * kn), wc = softmax(beta * cos).
  t.kn = std::sqrt(Dot(p.key, p.key, M) + kEps);
  const float inv_kn = 1.f / t.kn, beta = p.beta, gate = p.gate;
  float* __restrict cos = t.cos;
  float* __restrict wc = t.wc;
  float* __restrict wg = t.wg;
  const float* __restrict wprev = p.wprev;
#pragma omp simd
  for (int64_t n = 0; n < N; ++n) {
    cos[n] = cos[n] * inv_rn[n] * inv_kn;
    wc[n] = beta * cos[n];
  }
  const float inv_sum = 1.f / ExpShiftSum(wc, Max(wc, N), N);
  // Interpolation, into the padded wg.
#pragma omp simd
  for (int64_t n = 0; n < N; ++n) {
    wc[n] = wc[n] * inv_sum;
    wg[n] = gate * wc[n] + (1.f - gate) * wprev[n];
  }
  const int64_t S = (K - 1) / 2;
  PadCircular(t.wg - S, N, S);
  // Shift and sharpening: softmax(gamma * log(max(ws, TINY))).
  if (K == 3)
    ShiftAndLog<3>(t.wg - S, p.shift, p.gamma, N, K, t.ws, t.lw, t.w);
  else
    ShiftAndLog<0>(t.wg - S, p.shift, p.gamma, N, K, t.ws, t.lw, t.w);
  float* __restrict w = t.w;
  const float inv_sum2 = 1.f / ExpShiftSum(w, Max(w, N), N);
#pragma omp simd
  for (int64_t n = 0; n < N; ++n) w[n] = w[n] * inv_sum2;
}

struct HeadGrads {  // cotangents of one head's inputs (outputs of the backward kernel)
  float* dwprev;  // [N]
  float* dkey;    // [M], written by the caller's memory pass from t.a and t.c
  float* dbeta;
  float* dgate;
  float* dshift;  // [K]
  float* dgamma;
};

// dwg[k] = sum_j s[j] dwsp[k + j] (the shift's backward, over the padded dws), then the
// interpolation's elementwise backward: dwc = g * dwg, dwprev = (1 - g) * dwg, and dwg itself
// (for dgate). K known statically when KT > 0.
template <int KT>
void ShiftInterpBackward(const float* __restrict dwsp, const float* __restrict s, float gate, int64_t N, int64_t K,
                         float* __restrict dwg_out, float* __restrict dwc, float* __restrict dwprev) {
  if constexpr (KT > 0) K = KT;
#pragma omp simd
  for (int64_t n = 0; n < N; ++n) {
    float dwg = 0.f;
    for (int64_t j = 0; j < K; ++j) dwg += s[j] * dwsp[n + j];
    dwg_out[n] = dwg;
    dwc[n] = gate * dwg;
    dwprev[n] = (1.f - gate) * dwg;
  }
}

// The O(N) part of one head's addressing backward. Given dw [N], the cotangent of the head's
// final weighting, writes the cotangents of wprev, beta, gate, shift and gamma, and leaves in
// t.a, t.b, t.c the coefficients of the memory-sized part, which the caller applies in its pass
// over the memory:  dmem[m, n] += a[n] key[m] + b[n] mem[m, n],  dkey[m] = sum_n a[n] mem[m, n] + c key[m].
// `tmp` is scratch of kTmpVectors * N + K - 1 floats. Elementwise loops store their terms and the
// sums over n are Dot / Sum calls.
constexpr int64_t kTmpVectors = 4;
void AddressBackward(const float* __restrict inv_rn, int64_t N, int64_t K, const HeadParams& p, HeadTrace& t,
                     const float* __restrict dw, float* tmp, const HeadGrads& g) {
  const int64_t S = (K - 1) / 2;
  float* __restrict du = tmp;                  // cotangent of the sharpening logits
  float* __restrict dwsp = tmp + N;            // cotangent of ws, padded (PadCircular)
  float* __restrict dws = dwsp + S;
  float* __restrict dwg = tmp + 2 * N + K - 1;  // cotangent of wg
  float* __restrict dwc = tmp + 3 * N + K - 1;  // cotangent of wc
  const float* __restrict w = t.w;
  const float* __restrict ws_ = t.ws;

  // Softmax backward (w = softmax(u)): du = w * (dw - <dw, w>).
  // u = gamma * lw, lw = log(max(ws, TINY)): dgamma = <du, lw>, dlw = gamma * du, and
  // d log(x) / dx = 1 / x. jnp.maximum passes the gradient to ws where ws > TINY, half of it on a
  // tie (JAX's balanced rule), none below.
  // dgamma is computed as <du, lw - <w, lw>>: equal, since sum_n du[n] = 0 (sum_n w[n] = 1), but
  // with smaller terms (lw can be large and negative where ws is small), so less cancellation.
  const float dw_dot_w = Dot(dw, w, N);
  const float lw_mean = Dot(w, t.lw, N);
  const float gamma = p.gamma;
  float* __restrict lwc = dwc;  // reuse (dwc is written later)
#pragma omp simd
  for (int64_t n = 0; n < N; ++n) {
    lwc[n] = t.lw[n] - lw_mean;
    du[n] = w[n] * (dw[n] - dw_dot_w);
    const float ws = ws_[n];
    const float dlw = gamma * du[n];
    const float share = ws > kTiny ? 1.f : (ws == kTiny ? 0.5f : 0.f);
    dws[n] = share * (dlw / (ws >= kTiny ? ws : 1.f));  // (branch-free: no division by ws < TINY)
  }
  *g.dgamma = Dot(du, lwc, N);
  PadCircular(dwsp, N, S);

  // Shift backward, ws[i] = sum_j s[j] * wg[(i - o_j) mod N] with o_j = j - S:
  //   dwg[k] = sum_j s[j] * dws[(k + o_j) mod N] = sum_j s[j] dwsp[k + j],
  //   ds[j] = sum_i dws[i] * wg[(i - o_j) mod N] = sum_i dws[i] wgp[i + 2S - j];
  // interpolation backward, wg = g * wc + (1 - g) * wprev:
  //   dwc = g * dwg,  dwprev = (1 - g) * dwg,  dgate = <dwg, wc - wprev>.
  if (K == 3)
    ShiftInterpBackward<3>(dwsp, p.shift, p.gate, N, K, dwg, dwc, g.dwprev);
  else
    ShiftInterpBackward<0>(dwsp, p.shift, p.gate, N, K, dwg, dwc, g.dwprev);
  const float* wgp = t.wg - S;
  for (int64_t j = 0; j < K; ++j) g.dshift[j] = Dot(dws, wgp + 2 * S - j, N);
  const float* __restrict wc = t.wc;
  const float* __restrict wprev = p.wprev;
  float* __restrict diff = du;  // reuse
#pragma omp simd
  for (int64_t n = 0; n < N; ++n) diff[n] = wc[n] - wprev[n];
  *g.dgate = Dot(dwg, diff, N);

  // Content softmax backward (wc = softmax(z), z = beta * cos):
  //   dz = wc * (dwc - <dwc, wc>),  dbeta = <dz, cos>,  dcos = beta * dz.
  // Cosine backward, cos[n] = dot[n] / (rn[n] kn), dot[n] = key . mem[:, n],
  // rn[n] = sqrt(|mem[:, n]|^2 + EPS), kn = sqrt(|key|^2 + EPS):
  //   ddot[n] = dcos[n] / (rn[n] kn)                                  =: a[n]
  //   drn[n]  = -dcos[n] cos[n] / rn[n];  d|mem[:, n]|^2 = drn / (2 rn), d/dmem |mem[:, n]|^2 = 2 mem
  //     => dmem[m, n] += a[n] key[m] + b[n] mem[m, n]   with b[n] = -dcos[n] cos[n] / rn[n]^2
  //   dkn = -sum_n dcos[n] cos[n] / kn = -beta dbeta / kn;  d kn / d key = key / kn
  //     => dkey[m] = sum_n a[n] mem[m, n] + c key[m]     with c = dkn / kn.
  const float dwc_dot_wc = Dot(dwc, wc, N);
  const float* __restrict cos = t.cos;
  float* __restrict a = t.a;
  float* __restrict b = t.b;
  float* __restrict dz = dwg;  // reuse
  const float beta = p.beta, inv_kn = 1.f / t.kn;
#pragma omp simd
  for (int64_t n = 0; n < N; ++n) {
    dz[n] = wc[n] * (dwc[n] - dwc_dot_wc);
    const float dc = beta * dz[n];
    b[n] = -(dc * cos[n]) * (inv_rn[n] * inv_rn[n]);
    a[n] = dc * (inv_rn[n] * inv_kn);
  }
  const float dbeta = Dot(dz, cos, N);
  *g.dbeta = dbeta;
  t.c = -(beta * dbeta) * (inv_kn * inv_kn);
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

// Scratch for one example's intermediates; reused across the examples of a chunk and across calls
// (ThreadWorkspace). Every array starts on a 64-byte boundary.
struct Workspace {
  std::vector<float> buf;
  std::vector<HeadTrace> write, read;
  float *rn0, *rn1, *keep, *added, *d1, *tmp, *dw, *mem1;  // rn0, rn1: inverse row norms

  Workspace(const Dims& d, bool backward) {
    const int64_t heads = d.W + d.R;
    auto round = [](int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; };
    const int64_t pad = d.K - 1;  // wg's margins (PadCircular)
    const int64_t size = heads * (7 * round(d.N) + round(d.N + pad)) + 5 * round(d.N) +
                         round(kTmpVectors * d.N + pad) + round(std::max(d.W, d.R) * d.N) +
                         (backward ? round(d.M * d.N) : 0) + kLanes;
    buf.resize(static_cast<size_t>(size));
    float* p = buf.data();
    p += (kLanes - (reinterpret_cast<uintptr_t>(p) / sizeof(float)) % kLanes) % kLanes;
    auto take = [&p, &round](int64_t n) { float* q = p; p += round(n); return q; };
    write.resize(static_cast<size_t>(d.W));
    read.resize(static_cast<size_t>(d.R));
    for (auto* v : {&write, &read})
      for (HeadTrace& t : *v) {
        t.cos = take(d.N); t.wc = take(d.N); t.wg = take(d.N + pad) + pad / 2; t.ws = take(d.N);
        t.lw = take(d.N); t.w = take(d.N); t.a = take(d.N); t.b = take(d.N);
        t.kn = t.c = 0.f;
      }
    rn0 = take(d.N); rn1 = take(d.N); keep = take(d.N); added = take(d.N); d1 = take(d.N);
    tmp = take(kTmpVectors * d.N + pad);
    dw = take(std::max(d.W, d.R) * d.N);
    mem1 = backward ? take(d.M * d.N) : nullptr;
  }
};

// This thread's workspace for these dimensions, kept between calls (a call's chunks run to
// completion on their thread, so no two users share one).
Workspace& ThreadWorkspace(const Dims& d, bool backward) {
  struct Cached {
    int64_t M = -1, N = -1, W = -1, R = -1, K = -1;
    std::unique_ptr<Workspace> ws;
  };
  thread_local Cached cache[2];
  Cached& c = cache[backward ? 1 : 0];
  if (!c.ws || c.M != d.M || c.N != d.N || c.W != d.W || c.R != d.R || c.K != d.K) {
    c.ws = std::make_unique<Workspace>(d, backward);
    c.M = d.M; c.N = d.N; c.W = d.W; c.R = d.R; c.K = d.K;
  }
  return *c.ws;
}

// rn[n] = 1 / sqrt(rn[n] + EPS) in place (sums of squares -> inverse row norms).
void InvNorms(float* __restrict rn, int64_t N) {
#pragma omp simd
  for (int64_t n = 0; n < N; ++n) rn[n] = 1.f / std::sqrt(rn[n] + kEps);
}

// keep[n] = prod_h (1 - e[h, m] w[h, n]) and added[n] = sum_h a[h, m] w[h, n] for memory row m.
void WriteFactors(const Workspace& ws, const float* erase, const float* add, int64_t W, int64_t M, int64_t N,
                  int64_t m, float* __restrict keep, float* __restrict added) {
  const float* __restrict w0 = ws.write[0].w;
  const float e0 = erase[m], a0 = add[m];
  for (int64_t n = 0; n < N; ++n) {
    keep[n] = 1.f - e0 * w0[n];
    added[n] = a0 * w0[n];
  }
  for (int64_t h = 1; h < W; ++h) {
    const float* __restrict wh = ws.write[h].w;
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
// This is the general version (any number of heads); ForwardOne1 is the one-head-each fast path.
void ForwardOneGeneral(const Inputs& in, const Dims& d, int64_t b, Workspace& ws, float* mem1,
                       const float* dreads, float* drw) {
  const int64_t M = d.M, N = d.N, W = d.W, R = d.R;
  const float* mem0 = in.mem + b * M * N;

  // Pass A.
  std::fill(ws.rn0, ws.rn0 + N, 0.f);
  for (int64_t h = 0; h < W; ++h) std::fill(ws.write[h].cos, ws.write[h].cos + N, 0.f);
  for (int64_t m = 0; m < M; ++m) {
    const float* __restrict row = mem0 + m * N;
    float* __restrict rn = ws.rn0;
    for (int64_t n = 0; n < N; ++n) rn[n] += row[n] * row[n];
    for (int64_t h = 0; h < W; ++h) {
      const float k = in.key_w[(b * W + h) * M + m];
      float* __restrict dot = ws.write[h].cos;
      for (int64_t n = 0; n < N; ++n) dot[n] += k * row[n];
    }
  }
  InvNorms(ws.rn0, N);
  for (int64_t h = 0; h < W; ++h) AddressFinish(ws.rn0, M, N, d.K, WriteHead(in, d, b, h), ws.write[h]);

  // Pass B.
  const float* erase = in.erase + b * W * M;
  const float* add = in.add + b * W * M;
  std::fill(ws.rn1, ws.rn1 + N, 0.f);
  for (int64_t r = 0; r < R; ++r) std::fill(ws.read[r].cos, ws.read[r].cos + N, 0.f);
  for (int64_t m = 0; m < M; ++m) {
    WriteFactors(ws, erase, add, W, M, N, m, ws.keep, ws.added);
    const float* __restrict row0 = mem0 + m * N;
    float* __restrict row1 = mem1 + m * N;
    float* __restrict rn = ws.rn1;
    const float* __restrict keep = ws.keep;
    const float* __restrict added = ws.added;
    for (int64_t n = 0; n < N; ++n) {
      row1[n] = row0[n] * keep[n] + added[n];
      rn[n] += row1[n] * row1[n];
    }
    for (int64_t r = 0; r < R; ++r) {
      const float k = in.key_r[(b * R + r) * M + m];
      float* __restrict dot = ws.read[r].cos;
      for (int64_t n = 0; n < N; ++n) dot[n] += k * row1[n];
      if (drw) {
        const float dr = dreads[r * M + m];
        float* __restrict g = drw + r * N;
        for (int64_t n = 0; n < N; ++n) g[n] += dr * row1[n];
      }
    }
  }
  InvNorms(ws.rn1, N);
  for (int64_t r = 0; r < R; ++r) AddressFinish(ws.rn1, M, N, d.K, ReadHead(in, d, b, r), ws.read[r]);
}

// Pass A of the one-head fast path for the U vectors of columns at n (T = Vec: U * kLanes
// columns; T = float: U columns): sums of squares and the write key's dot products, accumulated
// over the rows in registers (U independent chains, for instruction-level parallelism).
template <class T, int U>
NTM_INLINE void PassA1(const float* __restrict mem0, const float* __restrict key, int64_t M, int64_t N, int64_t n,
                       float* __restrict rn, float* __restrict dot) {
  constexpr int64_t L = sizeof(T) / sizeof(float);
  T s[U], k[U];
  for (int u = 0; u < U; ++u) s[u] = k[u] = T{};
  for (int64_t m = 0; m < M; ++m) {
    const float km = key[m];
    for (int u = 0; u < U; ++u) {
      const T x = Load<T>(mem0 + m * N + n + u * L);
      s[u] += x * x;
      k[u] += km * x;
    }
  }
  for (int u = 0; u < U; ++u) {
    Store(rn + n + u * L, s[u]);
    Store(dot + n + u * L, k[u]);
  }
}

// Pass B of the one-head fast path (see PassA1): the write into mem1, mem1's sums of squares and
// the read key's dot products; with DRW, drw[n] += sum_m dreads[m] mem1[m, n].
template <class T, int U, bool DRW>
NTM_INLINE void PassB1(const float* __restrict mem0, float* __restrict mem1, const float* __restrict ww,
                       const float* __restrict erase, const float* __restrict add, const float* __restrict key,
                       const float* __restrict dreads, int64_t M, int64_t N, int64_t n, float* __restrict rn,
                       float* __restrict dot, float* __restrict drw) {
  constexpr int64_t L = sizeof(T) / sizeof(float);
  T w[U], s[U], k[U], g[U];
  for (int u = 0; u < U; ++u) {
    w[u] = Load<T>(ww + n + u * L);
    s[u] = k[u] = T{};
    g[u] = DRW ? Load<T>(drw + n + u * L) : T{};
  }
  for (int64_t m = 0; m < M; ++m) {
    const float em = erase[m], am = add[m], km = key[m];
    for (int u = 0; u < U; ++u) {
      const T keep = 1.f - em * w[u];
      const T x = Load<T>(mem0 + m * N + n + u * L) * keep + am * w[u];
      Store(mem1 + m * N + n + u * L, x);
      s[u] += x * x;
      k[u] += km * x;
      if constexpr (DRW) g[u] += dreads[m] * x;
    }
  }
  for (int u = 0; u < U; ++u) {
    Store(rn + n + u * L, s[u]);
    Store(dot + n + u * L, k[u]);
    if constexpr (DRW) Store(drw + n + u * L, g[u]);
  }
}

template <bool DRW>
void PassB1All(const float* mem0, float* mem1, const float* ww, const float* erase, const float* add,
               const float* key, const float* dreads, int64_t M, int64_t N, float* rn, float* dot, float* drw) {
  int64_t n = 0;
  for (; n + 2 * kLanes <= N; n += 2 * kLanes)
    PassB1<Vec, 2, DRW>(mem0, mem1, ww, erase, add, key, dreads, M, N, n, rn, dot, drw);
  for (; n + kLanes <= N; n += kLanes) PassB1<Vec, 1, DRW>(mem0, mem1, ww, erase, add, key, dreads, M, N, n, rn, dot, drw);
  for (; n < N; ++n) PassB1<float, 1, DRW>(mem0, mem1, ww, erase, add, key, dreads, M, N, n, rn, dot, drw);
}

// The forward for one write head and one read head (W = R = 1, any M, N, K): the same passes as
// ForwardOneGeneral, but column-blocked (two vectors of columns at a time, all M rows) so that the per-column
// accumulators stay in registers.
void ForwardOne1(const Inputs& in, const Dims& d, int64_t b, Workspace& ws, float* mem1, const float* dreads,
                 float* drw) {
  const int64_t M = d.M, N = d.N;
  const float* mem0 = in.mem + b * M * N;
  const float* kw = in.key_w + b * M;
  int64_t n = 0;
  for (; n + 2 * kLanes <= N; n += 2 * kLanes) PassA1<Vec, 2>(mem0, kw, M, N, n, ws.rn0, ws.write[0].cos);
  for (; n + kLanes <= N; n += kLanes) PassA1<Vec, 1>(mem0, kw, M, N, n, ws.rn0, ws.write[0].cos);
  for (; n < N; ++n) PassA1<float, 1>(mem0, kw, M, N, n, ws.rn0, ws.write[0].cos);
  InvNorms(ws.rn0, N);
  AddressFinish(ws.rn0, M, N, d.K, WriteHead(in, d, b, 0), ws.write[0]);

  const float* erase = in.erase + b * M;
  const float* add = in.add + b * M;
  const float* kr = in.key_r + b * M;
  if (drw)
    PassB1All<true>(mem0, mem1, ws.write[0].w, erase, add, kr, dreads, M, N, ws.rn1, ws.read[0].cos, drw);
  else
    PassB1All<false>(mem0, mem1, ws.write[0].w, erase, add, kr, dreads, M, N, ws.rn1, ws.read[0].cos, drw);
  InvNorms(ws.rn1, N);
  AddressFinish(ws.rn1, M, N, d.K, ReadHead(in, d, b, 0), ws.read[0]);
}

// Forward of one example (dispatch), then pass C and the weightings when the outputs are given.
void ForwardOne(const Inputs& in, const Dims& d, int64_t b, Workspace& ws, float* mem1,
                float* ww_out, float* rw_out, float* reads_out, const float* dreads, float* drw) {
  const int64_t M = d.M, N = d.N, W = d.W, R = d.R;
  if (W == 1 && R == 1)
    ForwardOne1(in, d, b, ws, mem1, dreads, drw);
  else
    ForwardOneGeneral(in, d, b, ws, mem1, dreads, drw);
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

// The threading threshold (in multiply-adds per call, see ParallelFor) and the chunks per thread;
// -D overrides are for measuring only (ntm/fused_cpu.py passes none).
#ifndef NTM_PARALLEL_MIN_WORK
#define NTM_PARALLEL_MIN_WORK (int64_t{1} << 20)
#endif
#ifndef NTM_CHUNKS_PER_THREAD
#define NTM_CHUNKS_PER_THREAD 4
#endif
constexpr int64_t kParallelMinWork = NTM_PARALLEL_MIN_WORK;

// The threshold in effect: NTM_FUSED_PARALLEL_MIN_WORK from the environment (read once; a
// non-negative integer; a huge value never splits a call, e.g. when several XLA devices already
// run one call each per core), else kParallelMinWork.
int64_t ParallelMinWork() {
  static const int64_t value = [] {
    const char* text = std::getenv("NTM_FUSED_PARALLEL_MIN_WORK");
    if (text != nullptr && *text != '\0') {
      char* end = nullptr;
      const long long v = std::strtoll(text, &end, 10);
      if (*end == '\0' && v >= 0) return static_cast<int64_t>(v);
    }
    return kParallelMinWork;
  }();
  return value;
}

// Runs fn(begin, end) over [0, B) in chunks. The calling thread works too, and waits only for
// chunks some thread has claimed, so it cannot deadlock on a busy pool; tasks that start after
// all chunks are claimed return at once (they share the state through a shared_ptr).
void ParallelFor(ffi::ThreadPool& pool, int64_t B, int64_t work_per_item,
                 const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  // Split only calls of at least ~1M multiply-adds (~100 microseconds): on a shared machine a
  // helper thread that is preempted after claiming a chunk makes the caller wait for it, which
  // small calls cannot afford (with a 64k threshold the fused copy step at batch 16 measured
  // slower than pure JAX on a loaded 2-core machine). On an idle machine a 64k threshold halves
  // the batch-16/64 calls' time, but with another process busy on both cores it makes them up to
  // 2x slower; the threshold stays where it was.
  if (threads == 1 || B < 2 || B * work_per_item < ParallelMinWork()) {
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
  s->chunks = std::min<int64_t>(B, NTM_CHUNKS_PER_THREAD * threads);
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
    Workspace& ws = ThreadWorkspace(d, /*backward=*/false);
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
// The write, mem1 = mem0 * keep + added with keep = prod_h f_h, f_h[m, n] = 1 - e[h, m] w[h, n],
// added = sum_h a[h, m] w[h, n], has the backward
//   dmem0 = dmem1 * keep
//   dkeep = dmem1 * mem0,   df_h = dkeep * prod_{h' != h} f_h'   (product of the others, no division)
//   de[h, m] = -sum_n df_h[m, n] w[h, n]
//   da[h, m] =  sum_n dmem1[m, n] w[h, n]
//   dw[h, n] =  d_ww_out[h, n] + sum_m (dmem1[m, n] a[h, m] - df_h[m, n] e[h, m])
// BackwardOneGeneral handles any number of heads; BackwardOne1 is the one-head-each fast path.
void BackwardOneGeneral(const Inputs& in, const Cotangents& ct, const Grads& g, const Dims& d, int64_t b,
                        Workspace& ws) {
  const int64_t M = d.M, N = d.N, W = d.W, R = d.R;
  const float* mem0 = in.mem + b * M * N;
  float* drw = ws.dw;  // [R, N], then reused as dww [W, N]
  std::copy(ct.rw + b * R * N, ct.rw + (b + 1) * R * N, drw);
  ForwardOne(in, d, b, ws, ws.mem1, nullptr, nullptr, nullptr, ct.reads + b * R * M, drw);
  const float* mem1 = ws.mem1;
  for (int64_t r = 0; r < R; ++r)
    AddressBackward(ws.rn1, N, d.K, ReadHead(in, d, b, r), ws.read[r], drw + r * N, ws.tmp, ReadHeadGrads(g, d, b, r));

  // Pass D.
  const float* erase = in.erase + b * W * M;
  const float* add = in.add + b * W * M;
  const float* dreads = ct.reads + b * R * M;
  float* dmem0 = g.mem + b * M * N;
  float* dww = ws.dw;
  std::copy(ct.ww + b * W * N, ct.ww + (b + 1) * W * N, dww);
  float* __restrict d1 = ws.d1;
  for (int64_t m = 0; m < M; ++m) {
    const float* __restrict row0 = mem0 + m * N;
    const float* __restrict row1 = mem1 + m * N;
    float* __restrict drow0 = dmem0 + m * N;
    // dmem1 row m
    std::copy(ct.mem1 + (b * M + m) * N, ct.mem1 + (b * M + m + 1) * N, d1);
    for (int64_t r = 0; r < R; ++r) {
      const HeadTrace& t = ws.read[r];
      const float dr = dreads[r * M + m];
      const float k = in.key_r[(b * R + r) * M + m];
      const float* __restrict tw = t.w;
      const float* __restrict ta = t.a;
      const float* __restrict tb = t.b;
      for (int64_t n = 0; n < N; ++n) d1[n] += dr * tw[n] + ta[n] * k + tb[n] * row1[n];
      g.key_r[(b * R + r) * M + m] = Dot(t.a, row1, N) + t.c * k;
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
    const float* __restrict row0 = mem0 + m * N;
    float* __restrict drow0 = dmem0 + m * N;
    for (int64_t h = 0; h < W; ++h) {
      const HeadTrace& t = ws.write[h];
      const float k = in.key_w[(b * W + h) * M + m];
      const float* __restrict ta = t.a;
      const float* __restrict tb = t.b;
      for (int64_t n = 0; n < N; ++n) drow0[n] += ta[n] * k + tb[n] * row0[n];
      g.key_w[(b * W + h) * M + m] = Dot(t.a, row0, N) + t.c * k;
    }
  }
}

// Pass D of the one-head fast path for row m: the whole of the general pass D's row in one loop
// over the columns. Writes the row of dmem0, accumulates dww, and returns in out[0..2] the row's
// dkey_r[m] (without the c key term), derase[m] and dadd[m].
NTM_INLINE void PassD1Row(int64_t N, const float* __restrict ctrow, const float* __restrict row0,
                          const float* __restrict row1, const float* __restrict rw, const float* __restrict ar,
                          const float* __restrict br, const float* __restrict ww, float dr, float kr, float e,
                          float a, float* __restrict drow0, float* __restrict dww, float* __restrict out) {
  Vec dk{}, de{}, da{};
  int64_t n = 0;
  for (; n + kLanes <= N; n += kLanes) {
    const Vec r0 = Load<Vec>(row0 + n), r1 = Load<Vec>(row1 + n), w = Load<Vec>(ww + n), an = Load<Vec>(ar + n);
    const Vec d1 = Load<Vec>(ctrow + n) + dr * Load<Vec>(rw + n) + an * kr + Load<Vec>(br + n) * r1;
    dk += an * r1;
    const Vec df = d1 * r0;
    Store(drow0 + n, d1 * (1.f - e * w));
    de -= df * w;
    da += d1 * w;
    Store(dww + n, Load<Vec>(dww + n) + (d1 * a - df * e));
  }
  float dks = HSum(dk), des = HSum(de), das = HSum(da);
  for (; n < N; ++n) {
    const float d1 = ctrow[n] + dr * rw[n] + ar[n] * kr + br[n] * row1[n];
    dks += ar[n] * row1[n];
    const float df = d1 * row0[n];
    drow0[n] = d1 * (1.f - e * ww[n]);
    des -= df * ww[n];
    das += d1 * ww[n];
    dww[n] = dww[n] + (d1 * a - df * e);
  }
  out[0] = dks;
  out[1] = des;
  out[2] = das;
}

// Pass E of the one-head fast path for row m: dmem0's row += a key[m] + b mem0's row; returns the
// row's dkey_w[m] without the c key term.
NTM_INLINE float PassE1Row(int64_t N, const float* __restrict row0, const float* __restrict aw,
                           const float* __restrict bw, float k, float* __restrict drow0) {
  Vec dk{};
  int64_t n = 0;
  for (; n + kLanes <= N; n += kLanes) {
    const Vec r0 = Load<Vec>(row0 + n), an = Load<Vec>(aw + n);
    Store(drow0 + n, Load<Vec>(drow0 + n) + (an * k + Load<Vec>(bw + n) * r0));
    dk += an * r0;
  }
  float dks = HSum(dk);
  for (; n < N; ++n) {
    drow0[n] = drow0[n] + (aw[n] * k + bw[n] * row0[n]);
    dks += aw[n] * row0[n];
  }
  return dks;
}

void BackwardOne1(const Inputs& in, const Cotangents& ct, const Grads& g, const Dims& d, int64_t b, Workspace& ws) {
  const int64_t M = d.M, N = d.N;
  const float* mem0 = in.mem + b * M * N;
  float* drw = ws.dw;
  std::copy(ct.rw + b * N, ct.rw + (b + 1) * N, drw);
  const float* dreads = ct.reads + b * M;
  ForwardOne(in, d, b, ws, ws.mem1, nullptr, nullptr, nullptr, dreads, drw);
  const float* mem1 = ws.mem1;
  const HeadTrace& tr = ws.read[0];
  const HeadTrace& tw = ws.write[0];
  AddressBackward(ws.rn1, N, d.K, ReadHead(in, d, b, 0), ws.read[0], drw, ws.tmp, ReadHeadGrads(g, d, b, 0));

  // Pass D.
  const float* erase = in.erase + b * M;
  const float* add = in.add + b * M;
  const float* kr = in.key_r + b * M;
  const float* kw = in.key_w + b * M;
  float* dmem0 = g.mem + b * M * N;
  float* dww = ws.dw;
  std::copy(ct.ww + b * N, ct.ww + (b + 1) * N, dww);
  const float* trw = tr.w;
  const float* tra = tr.a;
  const float* trb = tr.b;
  const float* tww = tw.w;
  const float* ctm = ct.mem1 + b * M * N;
  for (int64_t m = 0; m < M; ++m) {
    float out[3];
    PassD1Row(N, ctm + m * N, mem0 + m * N, mem1 + m * N, trw, tra, trb, tww, dreads[m], kr[m], erase[m], add[m],
              dmem0 + m * N, dww, out);
    g.key_r[b * M + m] = out[0] + tr.c * kr[m];
    g.erase[b * M + m] = out[1];
    g.add[b * M + m] = out[2];
  }

  AddressBackward(ws.rn0, N, d.K, WriteHead(in, d, b, 0), ws.write[0], dww, ws.tmp, WriteHeadGrads(g, d, b, 0));

  // Pass E.
  const float* twa = tw.a;
  const float* twb = tw.b;
  const float twc = tw.c;
  for (int64_t m = 0; m < M; ++m)
    g.key_w[b * M + m] = PassE1Row(N, mem0 + m * N, twa, twb, kw[m], dmem0 + m * N) + twc * kw[m];
}

void BackwardOne(const Inputs& in, const Cotangents& ct, const Grads& g, const Dims& d, int64_t b, Workspace& ws) {
  if (d.W == 1 && d.R == 1)
    BackwardOne1(in, ct, g, d, b, ws);
  else
    BackwardOneGeneral(in, ct, g, d, b, ws);
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
    Workspace& ws = ThreadWorkspace(d, /*backward=*/true);
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
