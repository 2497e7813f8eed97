// Softmax cross-entropy (torch.nn.functional.cross_entropy) forward and fused forward+backward.
//
// Self-contained: no #include, so NVRTC compiles it without a CUDA include path. The 16-bit
// element types are declared here as raw bit patterns (half_t, bfloat16_t) and converted with
// PTX cvt instructions; arithmetic is in float for half/bfloat16/float and in double for double.
// Compile WITHOUT -ftz=true / --use_fast_math: the tiny probabilities and losses this harness
// measures live in the subnormal range of float and bfloat16.
//
// Layout. Logits are (M, C) rows with the class axis last ("rows" kernels), or K-dim
// (N, C, D) with D = d1*...*dk where row r = (n, s) has its classes at stride D ("strided"
// kernel). Index targets are (M,) int64; probability targets have the logits' layout.
//
// Numerics (per row, A = accumulation type):
//   m   running max of the row
//   s   sum of exp(x_j - m) over every element EXCEPT one occurrence of the max, so
//       S = sum_j exp(x_j - m) = 1 + s and -log p_t = (m - x_t) + log1p(s): a loss of 2e-9
//       keeps all its digits (log(S) would round 1 + 2e-9 to 1). When the max grows, the old
//       max's own term (1) moves into the sum: s <- (s + 1) * exp(m_old - m_new).
//   d,t only when coefficients q_j are needed (label smoothing: q_j = w_j; probability
//       targets: q_j = w_j * ((1-eps) t_j + eps/C)): t = sum_j q_j and
//       d = sum_j q_j (m - x_j), every term >= 0 for q >= 0, so sum_j q_j (-log p_j) = d + t*log1p(s)
//       has no cancellation; when the max grows, d <- d + t (m_new - m_old).
// exp(x_j - m) for float/double logits corrects the rounding of x_j - m (see exp_diff).
// Divisions use xdiv (no IEEE-division subroutine call, which made ptxas spill).
// Specials follow torch: -inf logits contribute exp = 0 (but q * inf to d, so 0 * inf = NaN
// where torch multiplies a zero target or weight by -inf); a row whose max is +inf or -inf, or
// that holds a NaN, gives NaN loss and NaN gradient (also on ignored rows, like torch's
// log_softmax backward 0 - p * 0).
//
// Gradient of the returned loss (for 'none': of the sum of per-sample losses), per row:
//   index targets: g_j = scale * (a p_j - (eps/C) w_j - (1-eps) w_t [j == t]),
//                  a = (1-eps) w_t + (eps/C) sum_c w_c, and for the target class
//                  p_t - 1 = -(S - e_t)/S with S - e_t = s when x_t is the max, else 1 + (s - e_t)
//                  (no cancellation);
//   probability targets: g_j = scale * (p_j sum_c q_c - q_j);
//   scale = 1 / sum_n w_{y_n} ('mean', index targets), 1/M ('mean', probabilities), else 1.
//
// Reductions over rows ('mean'/'sum', and the denominator sum_n w_{y_n}) are done in double
// on the device: every block writes its partial sums, the last block to finish (atomic
// ticket) adds the partials in a fixed order, so results are deterministic and no host
// synchronisation is needed. The fused kernel needs the 'mean' denominator before it starts;
// xent_weight_sum computes it from the targets alone (cheap: it never touches the logits).
//
// Entry points (T = element type, VEC = elements per 128-bit access or 1, MODE = 0 index
// targets, 1 index targets + label smoothing, 2 probability targets, BWD = also write grad):
//   xent_group<T,VEC,MODE,BWD>    small C: a group of G = 1..32 lanes of a warp per row,
//                                 several rows per warp and per block (256 threads)
//   xent_block<T,VEC,MODE,BWD>    larger C: one block (64..512 threads) per row
//   xent_strided<T,MODE,BWD>      K-dim with D >= 32: one thread per row, classes at stride D
//                                 (neighbouring threads read neighbouring addresses)
//   xent_split_stats/_finish/_grad  huge C with few rows: several blocks per row
//   xent_weight_sum<T>            sum_n w_{y_n} over non-ignored rows (for the fused 'mean')
// Every kernel takes its parameters as plain structs by value (see "Kernel parameters":
// Tensors<T>, Shape, Options, then Reduce and/or Split<A>; xent_group also its lanes per row).
// In the fused row kernels each thread keeps its first NC packs of the row in registers between
// the statistics sweep and the gradient sweep (NC = 4, 16 elements in the strided kernel);
// packs beyond that are re-read (L1/L2 hits). __launch_bounds__ caps registers at 128 per
// thread (256 threads x 2 blocks, or 512 x 1): with a bare __launch_bounds__(256) ptxas chose
// 64 registers and spilled.
//
// All indices and sizes are 64-bit (long long): M*C may exceed 2^31.

typedef long long i64;

struct __align__(2) half_t { unsigned short bits; };
struct __align__(2) bfloat16_t { unsigned short bits; };

template <typename T> struct AccOf { typedef float type; };
template <> struct AccOf<double> { typedef double type; };

// ---------------------------------------------------------------------------------------------
// The only inline PTX. A host build for testing (XENT_EMULATE) supplies C++ versions of these.
// ---------------------------------------------------------------------------------------------
#ifndef XENT_EMULATE
__device__ __forceinline__ float half_bits_to_float(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short float_to_half_bits(float f) {  // round to nearest even
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ unsigned short double_to_half_bits(double d) {  // one rounding
    unsigned short h;
    asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h) : "d"(d));
    return h;
}
// Reciprocal estimates (refined by xdiv); operands here are normal numbers.
__device__ __forceinline__ float rcp_approx(float b) {
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(b));
    return y;
}
__device__ __forceinline__ double rcp_approx(double b) {
    double y;
    asm("rcp.approx.ftz.f64 %0, %1;" : "=d"(y) : "d"(b));
    return y;
}
// 128-bit accesses are written in PTX: through plain C++ (unions, uint4 stores) the compiler
// sometimes splits them into 32- or 16-bit pieces. ld.global.nc: the logits, targets and
// weights are read-only for the whole kernel.
__device__ __forceinline__ uint4 ldg_v4(const void* p) {
    uint4 r;
    asm("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
        : "l"(p));
    return r;
}
__device__ __forceinline__ void stg_v4(void* p, uint4 v) {
    asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};"
                 :
                 : "l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
}
#endif

// ---------------------------------------------------------------------------------------------
// Conversions (round to nearest even; NaN stays NaN, overflow gives inf)
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ float to_acc(half_t v) { return half_bits_to_float(v.bits); }
__device__ __forceinline__ float to_acc(bfloat16_t v) {
    return __uint_as_float(((unsigned int)v.bits) << 16);
}
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }

// float -> bfloat16 bits, round to nearest even (software version for pre-sm_80 targets).
__device__ __forceinline__ unsigned short f32_to_bf16_bits(float f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(XENT_EMULATE)
    unsigned short b;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(f));
    return b;
#else
    const unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x0040u);  // quiet NaN
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#endif
}

// A 16-bit element (half_t, bfloat16_t) from its bit pattern.
template <typename T> __device__ __forceinline__ T from_bits(unsigned short bits) {
    T v;
    v.bits = bits;
    return v;
}

template <typename T> __device__ __forceinline__ T from_float(float f);
template <> __device__ __forceinline__ half_t from_float<half_t>(float f) {
    return from_bits<half_t>(float_to_half_bits(f));
}
template <> __device__ __forceinline__ bfloat16_t from_float<bfloat16_t>(float f) {
    return from_bits<bfloat16_t>(f32_to_bf16_bits(f));
}
template <> __device__ __forceinline__ float from_float<float>(float f) { return f; }

template <typename T> __device__ __forceinline__ T from_acc(typename AccOf<T>::type a) {
    return from_float<T>(a);
}
template <> __device__ __forceinline__ double from_acc<double>(double a) { return a; }

// double -> T with a single rounding (used for the reduced 'mean'/'sum' loss).
template <typename T> __device__ __forceinline__ T from_double(double d);
template <> __device__ __forceinline__ half_t from_double<half_t>(double d) {
    return from_bits<half_t>(double_to_half_bits(d));
}
template <> __device__ __forceinline__ bfloat16_t from_double<bfloat16_t>(double d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(XENT_EMULATE)
    unsigned short b;
    asm("cvt.rn.bf16.f64 %0, %1;" : "=h"(b) : "d"(d));
    return from_bits<bfloat16_t>(b);
#else
    // Round to odd into float (truncate, then set the sticky bit if anything was cut off),
    // then round to nearest into bfloat16: float keeps >= 2 extra bits, so this equals one
    // correct rounding of d.
    unsigned int u = __float_as_uint(__double2float_rz(d));
    if ((double)__uint_as_float(u) != d && d == d) u |= 1u;
    return from_bits<bfloat16_t>(f32_to_bf16_bits(__uint_as_float(u)));
#endif
}
template <> __device__ __forceinline__ float from_double<float>(double d) { return __double2float_rn(d); }
template <> __device__ __forceinline__ double from_double<double>(double d) { return d; }

// ---------------------------------------------------------------------------------------------
// Math in the accumulation type (full-precision library functions, not the __expf intrinsics)
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ float xexp(float x) { return expf(x); }
__device__ __forceinline__ double xexp(double x) { return exp(x); }
__device__ __forceinline__ float xlog1p(float x) { return log1pf(x); }
__device__ __forceinline__ double xlog1p(double x) { return log1p(x); }
__device__ __forceinline__ float xfma(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double xfma(double a, double b, double c) { return fma(a, b, c); }
__device__ __forceinline__ float xmax(float a, float b) { return fmaxf(a, b); }   // ignores NaN
__device__ __forceinline__ double xmax(double a, double b) { return fmax(a, b); }
__device__ __forceinline__ float xabs(float a) { return fabsf(a); }
__device__ __forceinline__ double xabs(double a) { return fabs(a); }

// Division without the subroutine call that IEEE div.rn expands to (ptxas spills registers
// around that call): hardware reciprocal estimate, Newton refinement, then one correction of the
// quotient (Markstein), accurate to <= 1 ulp and nearly always correctly rounded. The operands
// here are a normal divisor in [1, 2^63] (a softmax denominator) or a row count / weight sum; the
// specials (b = 0, NaN, or a non-finite dividend) are handled first with IEEE semantics.
__device__ __forceinline__ float xdiv(float a, float b) {
    const float inf = __int_as_float(0x7f800000);
    if (!(fabsf(a) < inf) || !(fabsf(b) < inf) || b == 0.0f) {  // IEEE results for the specials
        if (a != a || b != b) return a + b;                      // NaN
        if (fabsf(b) == inf) return a * copysignf(0.0f, b);     // x/inf = 0, inf/inf = NaN
        return a * copysignf(inf, b);                            // x/0 = inf, 0/0 = NaN, inf/x = inf
    }
    float y = rcp_approx(b);
    y = fmaf(fmaf(-b, y, 1.0f), y, y);
    const float q = a * y;
    return fmaf(fmaf(-b, q, a), y, q);
}
__device__ __forceinline__ double xdiv(double a, double b) {
    const double inf = __longlong_as_double(0x7ff0000000000000LL);
    if (!(fabs(a) < inf) || !(fabs(b) < inf) || b == 0.0) {
        if (a != a || b != b) return a + b;
        if (fabs(b) == inf) return a * copysign(0.0, b);
        return a * copysign(inf, b);
    }
    double y = rcp_approx(b);        // about 20 correct bits
    y = fma(fma(-b, y, 1.0), y, y);  // Newton steps double them
    y = fma(fma(-b, y, 1.0), y, y);
    y = fma(fma(-b, y, 1.0), y, y);
    const double q = a * y;
    return fma(fma(-b, q, a), y, q);
}

// exp(a - b) for a <= b, where a - b is first rounded: for float32 logits that rounding
// (0.5 ulp of |a - b|, i.e. |a - b| * 2^-24 relative after exp) would cost several ulps in tiny
// probabilities and losses, so the exact remainder of the subtraction (TwoSum) corrects the
// result: exp(z + err) = exp(z) * (1 + err). The caller handles a = -inf.
template <bool CORRECT, typename A>
__device__ __forceinline__ A exp_diff(A a, A b) {
    const A z = a - b;
    A e = xexp(z);
    if constexpr (CORRECT) {
        const A bb = z - a;
        const A err = (a - (z - bb)) + (-b - bb);
        if (e > A(0)) e = xfma(e, err, e);  // e = 0: also skips a NaN err from an infinite z
    }
    return e;
}
// Per element the correction is skipped for 16-bit logits: there the rounding of a - b in
// float is far below the output precision, and those kernels are closest to instruction-bound.
template <typename T> struct ExactExp { static constexpr bool value = sizeof(T) >= 4; };

template <typename A> __device__ __forceinline__ A inf_of();
template <> __device__ __forceinline__ float inf_of<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double inf_of<double>() {
    return __longlong_as_double(0x7ff0000000000000LL);
}
template <typename A> __device__ __forceinline__ A nan_of();
template <> __device__ __forceinline__ float nan_of<float>() { return __int_as_float(0x7fffffff); }
template <> __device__ __forceinline__ double nan_of<double>() {
    return __longlong_as_double(0x7ff8000000000000LL);
}

// ---------------------------------------------------------------------------------------------
// Packs: VEC elements moved with one 128-bit access (VEC = 16 / sizeof(T)) or one scalar.
// The caller guarantees 16-byte alignment when VEC > 1 (aligned base pointers, C % VEC == 0).
// ---------------------------------------------------------------------------------------------
template <typename T, int N> struct alignas(sizeof(T) * N) Pack { T v[N]; };

template <typename T, int N>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
    static_assert(N == 1 || sizeof(Pack<T, N>) == 16, "packs are one element or 16 bytes");
    Pack<T, N> r;
    if constexpr (N == 1) {
        r.v[0] = *p;
    } else {
        const uint4 u = ldg_v4(p);
        if constexpr (sizeof(T) == 2) {
            const unsigned int w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                r.v[2 * i].bits = (unsigned short)(w[i] & 0xffffu);
                r.v[2 * i + 1].bits = (unsigned short)(w[i] >> 16);
            }
        } else if constexpr (sizeof(T) == 4) {
            r.v[0] = __uint_as_float(u.x);
            r.v[1] = __uint_as_float(u.y);
            r.v[2] = __uint_as_float(u.z);
            r.v[3] = __uint_as_float(u.w);
        } else {
            r.v[0] = __hiloint2double((int)u.y, (int)u.x);
            r.v[1] = __hiloint2double((int)u.w, (int)u.z);
        }
    }
    return r;
}

template <typename T, int N>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& v) {
    if constexpr (N == 1) {
        *p = v.v[0];
    } else {
        uint4 u;
        if constexpr (sizeof(T) == 2) {
            u.x = (unsigned int)v.v[0].bits | ((unsigned int)v.v[1].bits << 16);
            u.y = (unsigned int)v.v[2].bits | ((unsigned int)v.v[3].bits << 16);
            u.z = (unsigned int)v.v[4].bits | ((unsigned int)v.v[5].bits << 16);
            u.w = (unsigned int)v.v[6].bits | ((unsigned int)v.v[7].bits << 16);
        } else if constexpr (sizeof(T) == 4) {
            u = make_uint4(__float_as_uint(v.v[0]), __float_as_uint(v.v[1]), __float_as_uint(v.v[2]),
                           __float_as_uint(v.v[3]));
        } else {
            u = make_uint4((unsigned int)__double2loint(v.v[0]), (unsigned int)__double2hiint(v.v[0]),
                           (unsigned int)__double2loint(v.v[1]), (unsigned int)__double2hiint(v.v[1]));
        }
        stg_v4(p, u);
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel parameters: plain structs passed by value, one per group. The host side
// (harness/implementations/cupy/params.py) declares the same fields in the same order as NumPy
// structured dtypes; tests/test_cupy_kernel.py reads the field lists below and has g++ and nvcc
// check every offset, size and alignment. Pointer members are device addresses, null where
// absent; the layout does not depend on T or A (every pointer is 8 bytes). nvcc does not take
// pointers read from a struct as __restrict__: scalar loads are plain ld.global (the 128-bit
// loads are explicit ld.global.nc, see ldg_v4).
// ---------------------------------------------------------------------------------------------
// The problem's arrays.
template <typename T> struct Tensors {
    const T* x;       // logits
    const i64* tidx;  // index targets (M,), or null
    const T* tprob;   // probability targets (logits' layout), or null
    const T* w;       // class weights (C,), or null
    T* grad;          // gradient (logits' layout), or null for forward only
    T* out;           // per-row losses (M,) for 'none', else the scalar loss
};

// Sizes and the class stride.
struct Shape {
    i64 M;  // rows (samples)
    i64 C;  // classes
    i64 D;  // stride between classes: d1*...*dk for xent_strided (K-dim in place), else 1
};

// torch.nn.functional.cross_entropy's options.
struct Options {
    i64 ignore_index;
    double om;      // 1 - label_smoothing
    double eoc;     // label_smoothing / C
    int reduction;  // 0 none, 1 sum, 2 mean
};

// The deterministic grid-wide sum over rows (grid_sum2) and the gradient's scale.
struct Reduce {
    double* partials;       // 2 * gridDim.x doubles
    unsigned int* counter;  // 0 on entry; the last block resets it
    double* den;            // sum_n w_{y_n}: written by xent_weight_sum, read by the fused 'mean'
                            // over index targets; null when not precomputed
    double scale;           // gradient scale when den is null: 1/M ('mean', probabilities), else 1
};

// Split rows: block b handles chunk b % splits of row b / splits. A = AccOf<T>::type.
template <typename A> struct Split {
    i64 splits;   // blocks per row
    i64 chunk;    // packs per block
    A* ws;        // 4 partial statistics per (row, chunk)
    A* rowinfo;   // 4 gradient coefficients per row (BWD), or null
    i64* rowtgt;  // target class per row (BWD), or null
};

// What the device functions below read: a.x, a.C, a.om, ... (built from the parameters).
template <typename T> struct Args : Tensors<T>, Shape, Options {};

// Coefficients q_j of one pack (class index j0 .. j0+N-1): the weights for label smoothing, the
// weighted smoothed targets for probability targets. tp points at the target of class j0.
template <int MODE, typename T, typename A, int N>
__device__ __forceinline__ void load_q(A (&q)[N], const Args<T>& a, i64 j0, const T* tp) {
    A wv[N];
    if (a.w != nullptr) {
        const Pack<T, N> wp = load_pack<T, N>(a.w + j0);
#pragma unroll
        for (int i = 0; i < N; ++i) wv[i] = to_acc(wp.v[i]);
    } else {
#pragma unroll
        for (int i = 0; i < N; ++i) wv[i] = A(1);
    }
    if constexpr (MODE == 2) {
        const Pack<T, N> tpk = load_pack<T, N>(tp);
        const A om = (A)a.om, eoc = (A)a.eoc;
#pragma unroll
        for (int i = 0; i < N; ++i) q[i] = wv[i] * xfma(om, to_acc(tpk.v[i]), eoc);
    } else {
#pragma unroll
        for (int i = 0; i < N; ++i) q[i] = wv[i];
    }
}

// ---------------------------------------------------------------------------------------------
// Online statistics of a (part of a) row
// ---------------------------------------------------------------------------------------------
template <typename A> struct Stats { A m, s, d, t; };

template <typename A> __device__ __forceinline__ Stats<A> stats_empty() {
    Stats<A> r;
    r.m = -inf_of<A>();
    r.s = A(0);
    r.d = A(0);
    r.t = A(0);
    return r;
}

// Fold N values into st: first the pack's max (one rescale per pack instead of per element),
// then one exp per element. Exactly one occurrence of a new max is excluded from s.
template <bool Q, bool EXACT, typename A, int N>
__device__ __forceinline__ void fold(Stats<A>& st, const A (&x)[N], const A (&q)[N]) {
    const A inf = inf_of<A>();
    A vmax = x[0];
#pragma unroll
    for (int i = 1; i < N; ++i) vmax = xmax(vmax, x[i]);
    bool excl = false;
    if (vmax > st.m) {
        if (st.m != -inf) {  // the old max (excluded so far) joins the sum
            st.s = (st.s + A(1)) * exp_diff<true>(st.m, vmax);
            if constexpr (Q) st.d = xfma(st.t, vmax - st.m, st.d);
        }
        st.m = vmax;
        excl = true;
    }
#pragma unroll
    for (int i = 0; i < N; ++i) {
        const bool skip = excl && (x[i] == st.m);
        excl = excl && !skip;
        // x = -inf contributes 0 (also while st.m is still -inf, where x - m would be NaN)
        const A e = (x[i] == -inf) ? A(0) : exp_diff<EXACT>(x[i], st.m);
        st.s += skip ? A(0) : e;
        if constexpr (Q) {
            const A gap = (x[i] == -inf) ? inf : st.m - x[i];
            st.d = xfma(q[i], gap, st.d);
            st.t += q[i];
        }
    }
}

// Combine two partial statistics. Bitwise commutative (merge(a,b) == merge(b,a)), so a
// butterfly all-reduce leaves the identical result in every lane. st.m is never NaN: fmax
// ignores NaN and a NaN element only poisons s (and d).
template <bool Q, typename A>
__device__ __forceinline__ Stats<A> merge(const Stats<A>& a, const Stats<A>& b) {
    const A inf = inf_of<A>();
    Stats<A> r;
    r.m = xmax(a.m, b.m);
    r.t = a.t + b.t;
    if (a.m == b.m) {
        // equal maxima (or both empty): one of the two excluded maxima joins the sum
        r.s = (a.s + b.s) + ((r.m == -inf) ? A(0) : A(1));
        if constexpr (Q) r.d = a.d + b.d;
    } else {
        const bool a_wins = a.m > b.m;
        const A ws = a_wins ? a.s : b.s;
        const A lm = a_wins ? b.m : a.m;
        const A ls = a_wins ? b.s : a.s;
        const A lt = a_wins ? b.t : a.t;
        if (lm == -inf) {  // the loser saw no finite element: nothing to rescale
            r.s = ws + ls;
            if constexpr (Q) r.d = a.d + b.d;
        } else {
            r.s = ws + (ls + A(1)) * exp_diff<true>(lm, r.m);
            if constexpr (Q) r.d = (a.d + b.d) + lt * (r.m - lm);
        }
    }
    if constexpr (!Q) {
        r.d = A(0);
    }
    return r;
}

template <bool Q, typename A>
__device__ __forceinline__ Stats<A> shfl_xor_stats(const Stats<A>& v, int off) {
    Stats<A> r;
    r.m = __shfl_xor_sync(0xffffffffu, v.m, off);
    r.s = __shfl_xor_sync(0xffffffffu, v.s, off);
    if constexpr (Q) {
        r.d = __shfl_xor_sync(0xffffffffu, v.d, off);
        r.t = __shfl_xor_sync(0xffffffffu, v.t, off);
    } else {
        r.d = A(0);
        r.t = A(0);
    }
    return r;
}

// Butterfly over aligned groups of `width` lanes (a power of two <= 32). Every lane of the warp
// must call it (full mask).
template <bool Q, typename A>
__device__ __forceinline__ Stats<A> warp_allreduce(Stats<A> st, int width) {
    for (int off = width >> 1; off > 0; off >>= 1) st = merge<Q>(st, shfl_xor_stats<Q>(st, off));
    return st;
}

// Whole-block all-reduce; every thread of the block must call it. sh holds 32 entries.
template <bool Q, typename A>
__device__ __forceinline__ Stats<A> block_allreduce(Stats<A> st, Stats<A>* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    st = warp_allreduce<Q>(st, 32);
    __syncthreads();  // every thread has finished reading sh from the previous call
    if (lane == 0) sh[warp] = st;
    __syncthreads();  // all warp totals are visible
    // every warp reduces the same values in the same order: identical result in all threads
    Stats<A> r = (lane < nwarps) ? sh[lane] : stats_empty<A>();
    return warp_allreduce<Q>(r, 32);
}

// Teams of threads sharing one row.
struct TeamSolo {
    template <bool Q, typename A> __device__ __forceinline__ Stats<A> reduce(Stats<A> s) const { return s; }
};
struct TeamGroup {
    int width;
    template <bool Q, typename A> __device__ __forceinline__ Stats<A> reduce(Stats<A> s) const {
        return warp_allreduce<Q>(s, width);
    }
};
template <typename AA> struct TeamBlock {
    Stats<AA>* sh;
    template <bool Q, typename A> __device__ __forceinline__ Stats<A> reduce(Stats<A> s) const {
        return block_allreduce<Q>(s, sh);
    }
};

// ---------------------------------------------------------------------------------------------
// Per-row loss and gradient coefficients
// ---------------------------------------------------------------------------------------------
template <typename A> struct RowResult {
    A loss;   // this row's loss (0 for an ignored row)
    A den;    // its contribution to the 'mean' denominator: w_t, 0 if ignored, 1 for probabilities
    A m;      // row max
    A coef;   // g_j = coef * exp(x_j - m) - csc * q_j   (j != tgt)
    A csc;
    A gt;     // gradient of the target class
    i64 tgt;  // target class, -1 if none
};

template <int MODE, typename T, typename A>
__device__ __forceinline__ RowResult<A> row_finish(Stats<A> st, const Args<T>& a, i64 row,
                                                   const T* xrow, i64 cs, A scale) {
    const A inf = inf_of<A>();
    RowResult<A> r;
    // a +inf max (inf - inf) or an all -inf row: torch gives NaN for the loss and the gradient
    if (!(xabs(st.m) < inf)) st.s = nan_of<A>();
    const A L = xlog1p(st.s);  // log(S) with S = 1 + s, accurate for tiny s
    const A S = A(1) + st.s;
    r.m = st.m;
    r.tgt = -1;
    r.gt = A(0);
    if constexpr (MODE == 2) {
        r.loss = xfma(st.t, L, st.d);  // sum_j q_j (m - x_j + log S)
        r.den = A(1);
        r.coef = xdiv(scale * st.t, S);
        r.csc = scale;
        return r;
    } else {
        const i64 t = a.tidx[row];
        if (t == a.ignore_index) {
            r.loss = A(0);
            r.den = A(0);
            r.coef = A(0) * S;  // 0, or NaN when the row is non-finite (torch: 0 - p * 0)
            r.csc = A(0);
            return r;
        }
        if (t < 0 || t >= a.C) {  // unreachable for validated problems; never read out of bounds
            r.loss = nan_of<A>();
            r.den = A(0);
            r.coef = nan_of<A>();
            r.csc = A(0);
            return r;
        }
        const A wt = (a.w != nullptr) ? to_acc(a.w[t]) : A(1);
        const A xt = to_acc(xrow[t * cs]);
        const A nll = (st.m - xt) + L;
        // S - e_t without cancellation: s itself when x_t is the max, else 1 + (s - e_t)
        const A et = (xt == -inf) ? A(0) : exp_diff<true>(xt, st.m);
        const A SmE = (xt == st.m) ? st.s : A(1) + (st.s - et);
        r.den = wt;
        r.tgt = t;
        if constexpr (MODE == 0) {
            r.loss = wt * nll;
            r.coef = xdiv(scale * wt, S);
            r.csc = A(0);
            r.gt = -xdiv((scale * wt) * SmE, S);
        } else {
            const A om = (A)a.om, eoc = (A)a.eoc;
            r.loss = (om * wt) * nll + eoc * xfma(st.t, L, st.d);
            const A aa = xfma(om, wt, eoc * st.t);  // (1-eps) w_t + (eps/C) sum_c w_c
            r.coef = xdiv(scale * aa, S);
            r.csc = scale * eoc;
            r.gt = scale * (eoc * (xdiv(st.t * et, S) - wt) - xdiv((om * wt) * SmE, S));
        }
        return r;
    }
}

// Gradient of one pack (classes j0 .. j0+N-1), written to gp.
template <int MODE, typename T, typename A, int N>
__device__ __forceinline__ void grad_pack(const Args<T>& a, const RowResult<A>& r,
                                          const Pack<T, N>& xp, i64 j0, const T* tp, T* gp) {
    A q[N];
    if constexpr (MODE != 0) load_q<MODE>(q, a, j0, tp);
    Pack<T, N> o;
#pragma unroll
    for (int i = 0; i < N; ++i) {
        const A xi = to_acc(xp.v[i]);
        const A e = (xi == -inf_of<A>()) ? A(0) : exp_diff<ExactExp<T>::value>(xi, r.m);
        A g;
        if constexpr (MODE == 0) g = r.coef * e;
        else g = xfma(r.coef, e, -(r.csc * q[i]));
        if (j0 + i == r.tgt) g = r.gt;
        o.v[i] = from_acc<T>(g);
    }
    store_pack<T, N>(gp, o);
}

// One row handled by a team of G threads (this thread is number li). Sweep 1 folds the row
// into statistics (keeping the first NC packs of this thread in registers when BWD), the team
// reduces them, then sweep 2 writes the gradient. `valid` may be false for lanes that pad a
// warp (row >= M): they join the team reduction with empty statistics and touch no memory.
template <typename T, int VEC, int MODE, bool BWD, int NC, class Team>
__device__ __forceinline__ void process_row(const Args<T>& a, i64 row, bool valid, i64 base, i64 cs,
                                            int li, int G, const Team& team,
                                            typename AccOf<T>::type scale, double& lacc,
                                            double& dacc) {
    typedef typename AccOf<T>::type A;
    constexpr bool Q = MODE != 0;
    bool active = valid;
    if constexpr (!BWD && MODE != 2) {
        // forward only: an ignored row's loss is 0 whatever its logits; do not read them
        if (valid) active = (a.tidx[row] != a.ignore_index);
    }
    const i64 nvec = active ? a.C / VEC : 0;
    const T* xr = a.x + base;
    // targets share the logits' layout; without them tr is a dummy that is never dereferenced
    const T* tr = (MODE == 2) ? a.tprob + base : xr;

    Pack<T, VEC> cache[NC > 0 ? NC : 1];
    Stats<A> st = stats_empty<A>();
    A xv[VEC], qv[VEC];
#pragma unroll
    for (int i = 0; i < NC; ++i) {
        const i64 k = li + (i64)i * G;
        if (k < nvec) {
            cache[i] = load_pack<T, VEC>(xr + k * VEC * cs);
#pragma unroll
            for (int e = 0; e < VEC; ++e) xv[e] = to_acc(cache[i].v[e]);
            if constexpr (Q) load_q<MODE>(qv, a, k * VEC, tr + k * VEC * cs);
            fold<Q, ExactExp<T>::value>(st, xv, qv);
        }
    }
    for (i64 k = li + (i64)NC * G; k < nvec; k += G) {
        const Pack<T, VEC> p = load_pack<T, VEC>(xr + k * VEC * cs);
#pragma unroll
        for (int e = 0; e < VEC; ++e) xv[e] = to_acc(p.v[e]);
        if constexpr (Q) load_q<MODE>(qv, a, k * VEC, tr + k * VEC * cs);
        fold<Q, ExactExp<T>::value>(st, xv, qv);
    }

    st = team.template reduce<Q, A>(st);
    if (!valid) return;

    const RowResult<A> r = row_finish<MODE>(st, a, row, xr, cs, scale);
    if (li == 0) {
        lacc += (double)r.loss;
        dacc += (double)r.den;
        if (a.reduction == 0) a.out[row] = from_acc<T>(r.loss);
    }
    if constexpr (BWD) {
        T* gr = a.grad + base;
#pragma unroll
        for (int i = 0; i < NC; ++i) {
            const i64 k = li + (i64)i * G;
            if (k < nvec) grad_pack<MODE>(a, r, cache[i], k * VEC, tr + k * VEC * cs, gr + k * VEC * cs);
        }
        for (i64 k = li + (i64)NC * G; k < nvec; k += G) {
            const Pack<T, VEC> p = load_pack<T, VEC>(xr + k * VEC * cs);
            grad_pack<MODE>(a, r, p, k * VEC, tr + k * VEC * cs, gr + k * VEC * cs);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic grid-wide sums (last block finishes)
// ---------------------------------------------------------------------------------------------
// Sum (a, b) over the block; every thread must call it; all threads get the totals.
__device__ __forceinline__ void block_sum2(double& a, double& b, double* sh /* 64 */) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    for (int off = 16; off > 0; off >>= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, off);
        b += __shfl_xor_sync(0xffffffffu, b, off);
    }
    __syncthreads();  // sh is free (previous readers are done)
    if (lane == 0) {
        sh[warp] = a;
        sh[32 + warp] = b;
    }
    __syncthreads();
    a = (lane < nwarps) ? sh[lane] : 0.0;
    b = (lane < nwarps) ? sh[32 + lane] : 0.0;
    for (int off = 16; off > 0; off >>= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, off);
        b += __shfl_xor_sync(0xffffffffu, b, off);
    }
}

// Grid-wide sum of (a, b) over a 1-D grid. Returns true in the one block that finishes last;
// there every thread holds the grand totals, added in a fixed order (deterministic).
// red.partials holds 2 * gridDim.x doubles; *red.counter is 0 on entry and is reset to 0 by the
// last block, ready for the next launch on the stream.
__device__ __forceinline__ bool grid_sum2(double& a, double& b, const Reduce& red, double* sh,
                                          bool* sh_flag) {
    double* const partials = red.partials;
    block_sum2(a, b, sh);
    if (threadIdx.x == 0) {
        partials[2 * (i64)blockIdx.x] = a;
        partials[2 * (i64)blockIdx.x + 1] = b;
        __threadfence();  // publish the partials before taking a ticket
        const unsigned int ticket = atomicAdd(red.counter, 1u);
        *sh_flag = (ticket == gridDim.x - 1);
    }
    __syncthreads();
    if (!*sh_flag) return false;  // block-uniform
    __threadfence();              // see every other block's partials
    a = 0.0;
    b = 0.0;
    for (i64 i = threadIdx.x; i < (i64)gridDim.x; i += blockDim.x) {
        a += __ldcg(partials + 2 * i);  // .cg: bypass L1, read what the other SMs wrote
        b += __ldcg(partials + 2 * i + 1);
    }
    block_sum2(a, b, sh);
    if (threadIdx.x == 0) *red.counter = 0u;
    return true;
}

// 'sum' / 'mean' of the per-row losses; red.den, when given, is the precomputed denominator.
template <typename T>
__device__ __forceinline__ void reduce_loss(const Args<T>& a, const Reduce& red, double lacc,
                                            double dacc, double* sh, bool* sh_flag) {
    if (a.reduction == 0) return;  // grid-uniform
    if (grid_sum2(lacc, dacc, red, sh, sh_flag) && threadIdx.x == 0) {
        const double den = (red.den != nullptr) ? *red.den : dacc;
        a.out[0] = from_double<T>(a.reduction == 2 ? xdiv(lacc, den) : lacc);  // all ignored: 0/0 = NaN
    }
}

template <typename A>
__device__ __forceinline__ A grad_scale(const Reduce& red) {
    return (red.den != nullptr) ? (A)xdiv(1.0, *red.den) : (A)red.scale;
}

// ---------------------------------------------------------------------------------------------
// Row kernels. Parameters: the problem's arrays (grad null when !BWD), its shape (D: the class
// stride, read by xent_strided only) and options, the reduction (den: the fused index 'mean''s
// denominator from xent_weight_sum, else null; scale: the gradient scale when den is null);
// xent_group also takes its lanes per row.
// ---------------------------------------------------------------------------------------------

// Small C: G lanes per row (G a power of two <= 32), 32/G rows per warp, 256 threads per block,
// grid-stride over rows. Launch with blockDim.x == 256.
template <typename T, int VEC, int MODE, bool BWD>
__global__ void __launch_bounds__(256, 2) xent_group(const Tensors<T> tensors, const Shape shape,
                                                     const Options options, const Reduce red,
                                                     const int lanes) {
    typedef typename AccOf<T>::type A;
    __shared__ double sh_sum[64];
    __shared__ bool sh_flag;
    const Args<T> a{tensors, shape, options};
    const A scale = grad_scale<A>(red);
    const int G = lanes;
    const int log2g = __ffs(G) - 1;  // shifts: integer division would be a subroutine call
    const int lane = threadIdx.x & 31;
    const int li = lane & (G - 1);
    const i64 rows_per_warp = 32 >> log2g;
    const i64 warps_per_block = blockDim.x >> 5;
    const i64 warp_id = (i64)blockIdx.x * warps_per_block + (threadIdx.x >> 5);
    const i64 warp_stride = (i64)gridDim.x * warps_per_block;
    double lacc = 0.0, dacc = 0.0;
    const TeamGroup team{G};
    // the loop bound depends on the warp only, so all 32 lanes run the same iterations and
    // meet in the shuffles
    for (i64 first = warp_id * rows_per_warp; first < a.M; first += warp_stride * rows_per_warp) {
        const i64 row = first + (lane >> log2g);
        const bool valid = row < a.M;
        process_row<T, VEC, MODE, BWD, BWD ? 4 : 0>(a, row, valid, row * a.C, 1, li, G, team, scale,
                                                    lacc, dacc);
    }
    reduce_loss<T>(a, red, lacc, dacc, sh_sum, &sh_flag);
}

// Large C: one block per row (blockDim.x a power of two in [64, 512]), grid-stride over rows.
template <typename T, int VEC, int MODE, bool BWD>
__global__ void __launch_bounds__(512, 1) xent_block(const Tensors<T> tensors, const Shape shape,
                                                     const Options options, const Reduce red) {
    typedef typename AccOf<T>::type A;
    __shared__ Stats<A> sh_stats[32];
    __shared__ double sh_sum[64];
    __shared__ bool sh_flag;
    const Args<T> a{tensors, shape, options};
    const A scale = grad_scale<A>(red);
    double lacc = 0.0, dacc = 0.0;
    const TeamBlock<A> team{sh_stats};
    for (i64 row = blockIdx.x; row < a.M; row += gridDim.x) {  // block-uniform
        process_row<T, VEC, MODE, BWD, BWD ? 4 : 0>(a, row, true, row * a.C, 1, (int)threadIdx.x,
                                                    (int)blockDim.x, team, scale, lacc, dacc);
    }
    reduce_loss<T>(a, red, lacc, dacc, sh_sum, &sh_flag);
}

// K-dim (N, C, D) with classes at stride D = shape.D: one thread per row r = n*D + s, whose
// class c sits at n*C*D + c*D + s; consecutive threads read consecutive addresses. Up to 16
// elements per thread stay in registers for the gradient sweep.
template <typename T, int MODE, bool BWD>
__global__ void __launch_bounds__(256, 2) xent_strided(const Tensors<T> tensors, const Shape shape,
                                                       const Options options, const Reduce red) {
    typedef typename AccOf<T>::type A;
    __shared__ double sh_sum[64];
    __shared__ bool sh_flag;
    const Args<T> a{tensors, shape, options};
    const A scale = grad_scale<A>(red);
    const i64 D = a.D;
    double lacc = 0.0, dacc = 0.0;
    const TeamSolo team;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    // row = n*D + s without a 64-bit integer division (a subroutine call in SASS): a double
    // estimate, exact to +-1 for row < 2^52, then an integer correction
    const double inv_d = xdiv(1.0, (double)D);
    for (i64 row = (i64)blockIdx.x * blockDim.x + threadIdx.x; row < a.M; row += stride) {
        i64 n = (i64)((double)row * inv_d);
        i64 s = row - n * D;
        while (s < 0) {
            s += D;
            --n;
        }
        while (s >= D) {
            s -= D;
            ++n;
        }
        process_row<T, 1, MODE, BWD, BWD ? 16 : 0>(a, row, true, n * a.C * D + s, D, 0, 1, team,
                                                   scale, lacc, dacc);
    }
    reduce_loss<T>(a, red, lacc, dacc, sh_sum, &sh_flag);
}

// ---------------------------------------------------------------------------------------------
// Split rows (huge C, few rows): block b handles chunk b % splits of row b / splits.
// 1. xent_split_stats: partial statistics of every chunk -> ws[(row*splits + chunk)*4 ..]
// 2. xent_split_finish: one warp per row merges its chunks, computes the loss (and the 'sum' /
//    'mean' reduction) and, for BWD, the row's gradient coefficients -> rowinfo, rowtgt
// 3. xent_split_grad: every chunk writes its gradient (re-reading the logits, mostly from L2)
// ---------------------------------------------------------------------------------------------
// The row, chunk and packs [k0, k1) of this block of xent_split_stats / xent_split_grad.
struct SplitBlock {
    i64 row, part, k0, k1;
};
template <int VEC, typename A>
__device__ __forceinline__ SplitBlock split_block(const Split<A>& sp, i64 C) {
    SplitBlock b;
    // 32-bit division: the grid and splits are < 2^31
    b.row = (i64)(blockIdx.x / (unsigned int)sp.splits);
    b.part = (i64)blockIdx.x - b.row * sp.splits;
    const i64 nvec = C / VEC;
    b.k0 = b.part * sp.chunk;
    b.k1 = (b.k0 + sp.chunk < nvec) ? b.k0 + sp.chunk : nvec;
    return b;
}

template <typename T, int VEC, int MODE>
__global__ void __launch_bounds__(256, 2) xent_split_stats(const Tensors<T> tensors,
                                                           const Shape shape, const Options options,
                                                           const Split<typename AccOf<T>::type> sp) {
    typedef typename AccOf<T>::type A;
    constexpr bool Q = MODE != 0;
    __shared__ Stats<A> sh_stats[32];
    const Args<T> a{tensors, shape, options};
    const SplitBlock b = split_block<VEC>(sp, a.C);
    const T* xr = a.x + b.row * a.C;
    const T* tr = (MODE == 2) ? a.tprob + b.row * a.C : xr;  // dummy unless MODE == 2
    Stats<A> st = stats_empty<A>();
    A xv[VEC], qv[VEC];
    for (i64 k = b.k0 + threadIdx.x; k < b.k1; k += blockDim.x) {
        const Pack<T, VEC> p = load_pack<T, VEC>(xr + k * VEC);
#pragma unroll
        for (int e = 0; e < VEC; ++e) xv[e] = to_acc(p.v[e]);
        if constexpr (Q) load_q<MODE>(qv, a, k * VEC, tr + k * VEC);
        fold<Q, ExactExp<T>::value>(st, xv, qv);
    }
    st = block_allreduce<Q>(st, sh_stats);
    if (threadIdx.x == 0) {
        A* o = sp.ws + 4 * (b.row * sp.splits + b.part);
        o[0] = st.m;
        o[1] = st.s;
        o[2] = st.d;
        o[3] = st.t;
    }
}

// One warp per row (blockDim.x == 256), grid-stride.
template <typename T, int MODE, bool BWD>
__global__ void __launch_bounds__(256, 2) xent_split_finish(const Tensors<T> tensors,
                                                            const Shape shape, const Options options,
                                                            const Reduce red,
                                                            const Split<typename AccOf<T>::type> sp) {
    typedef typename AccOf<T>::type A;
    constexpr bool Q = MODE != 0;
    __shared__ double sh_sum[64];
    __shared__ bool sh_flag;
    const Args<T> a{tensors, shape, options};
    const A scale = grad_scale<A>(red);
    const i64 splits = sp.splits;
    const int lane = threadIdx.x & 31;
    const i64 warps_per_block = blockDim.x >> 5;
    const i64 warp_stride = (i64)gridDim.x * warps_per_block;
    double lacc = 0.0, dacc = 0.0;
    for (i64 row = (i64)blockIdx.x * warps_per_block + (threadIdx.x >> 5); row < a.M; row += warp_stride) {
        Stats<A> st = stats_empty<A>();
        for (i64 k = lane; k < splits; k += 32) {
            const A* p = sp.ws + 4 * (row * splits + k);
            Stats<A> part;
            part.m = p[0];
            part.s = p[1];
            part.d = p[2];
            part.t = p[3];
            st = merge<Q>(st, part);
        }
        st = warp_allreduce<Q>(st, 32);
        const RowResult<A> r = row_finish<MODE>(st, a, row, a.x + row * a.C, 1, scale);
        if (lane == 0) {
            lacc += (double)r.loss;
            dacc += (double)r.den;
            if (a.reduction == 0) a.out[row] = from_acc<T>(r.loss);
            if constexpr (BWD) {
                sp.rowinfo[4 * row] = r.m;
                sp.rowinfo[4 * row + 1] = r.coef;
                sp.rowinfo[4 * row + 2] = r.csc;
                sp.rowinfo[4 * row + 3] = r.gt;
                sp.rowtgt[row] = r.tgt;
            }
        }
    }
    reduce_loss<T>(a, red, lacc, dacc, sh_sum, &sh_flag);
}

template <typename T, int VEC, int MODE>
__global__ void __launch_bounds__(256, 2) xent_split_grad(const Tensors<T> tensors,
                                                          const Shape shape, const Options options,
                                                          const Split<typename AccOf<T>::type> sp) {
    typedef typename AccOf<T>::type A;
    const Args<T> a{tensors, shape, options};
    const SplitBlock b = split_block<VEC>(sp, a.C);
    RowResult<A> r;
    r.m = sp.rowinfo[4 * b.row];
    r.coef = sp.rowinfo[4 * b.row + 1];
    r.csc = sp.rowinfo[4 * b.row + 2];
    r.gt = sp.rowinfo[4 * b.row + 3];
    r.tgt = sp.rowtgt[b.row];
    r.loss = A(0);
    r.den = A(0);
    const T* xr = a.x + b.row * a.C;
    const T* tr = (MODE == 2) ? a.tprob + b.row * a.C : xr;  // dummy unless MODE == 2
    T* gr = a.grad + b.row * a.C;
    for (i64 k = b.k0 + threadIdx.x; k < b.k1; k += blockDim.x) {
        const Pack<T, VEC> p = load_pack<T, VEC>(xr + k * VEC);
        grad_pack<MODE>(a, r, p, k * VEC, tr + k * VEC, gr + k * VEC);
    }
}

// ---------------------------------------------------------------------------------------------
// sum_n w_{y_n} over non-ignored rows -> *red.den (the fused 'mean' needs it before it starts).
// Reads only the index targets and the weights. blockDim.x == 256, grid-stride.
// ---------------------------------------------------------------------------------------------
template <typename T>
__global__ void __launch_bounds__(256, 2) xent_weight_sum(const Tensors<T> tensors, const Shape shape,
                                                          const Options options, const Reduce red) {
    __shared__ double sh_sum[64];
    __shared__ bool sh_flag;
    const i64* const tidx = tensors.tidx;
    const T* const w = tensors.w;
    double acc = 0.0, unused = 0.0;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < shape.M; i += stride) {
        const i64 t = tidx[i];
        if (t != options.ignore_index && t >= 0 && t < shape.C)
            acc += (w != nullptr) ? (double)to_acc(w[t]) : 1.0;
    }
    if (grid_sum2(acc, unused, red, sh_sum, &sh_flag) && threadIdx.x == 0) *red.den = acc;
}
