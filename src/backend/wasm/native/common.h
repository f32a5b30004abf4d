// Shared definitions of the edgetrain wasm kernels (see ../README.md for the build and the thread model).
//
// Every kernel is plain C over pointers into the one shared linear memory; the JS side (../kernels_*.ts)
// passes byte addresses of storages and scalar attributes to an exported entry, which splits the work into
// tasks and runs them on the calling thread alone or on the worker pool (threads.c).
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <wasm_simd128.h>

#define EXPORT __attribute__((visibility("default")))
#define INLINE static inline __attribute__((always_inline))

typedef v128_t v4;

// a * b + c. Relaxed SIMD's madd is a fused multiply-add where the machine has one (x86 FMA3, every aarch64)
// and an unfused one elsewhere; the plain-SIMD build spells it as mul + add.
#ifdef __wasm_relaxed_simd__
#define FMA(a, b, c) ((v4)__builtin_wasm_relaxed_madd_f32x4((__f32x4)(a), (__f32x4)(b), (__f32x4)(c)))
#else
#define FMA(a, b, c) wasm_f32x4_add(wasm_f32x4_mul(a, b), c)
#endif

#define LD(p) wasm_v128_load(p)
#define ST(p, v) wasm_v128_store(p, v)
#define SPLAT(x) wasm_f32x4_splat(x)
#define ZERO wasm_f32x4_splat(0.0f)

INLINE int imin(int a, int b) { return a < b ? a : b; }
INLINE int imax(int a, int b) { return a > b ? a : b; }
INLINE int cdiv(int a, int b) { return (a + b - 1) / b; }

INLINE float hsum(v4 v) {
  v4 s = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  s = wasm_f32x4_add(s, wasm_i32x4_shuffle(s, s, 1, 0, 3, 2));
  return wasm_f32x4_extract_lane(s, 0);
}

// ---- threads.c ------------------------------------------------------------------------------------------

// A task of a parallel kernel: task index t (< ntasks), the thread id running it (0 = the caller).
typedef void (*task_fn)(int t, int tid);

// Run fn(t, tid) for every t < ntasks, on up to `threads` threads (the caller takes part and returns when
// every task is done). threads <= 1 or ntasks <= 1 runs them inline.
void parallel_for(task_fn fn, int ntasks, int threads);

// Threads configured with set_threads (1 + workers).
int pool_threads(void);

// Scratch of `tid`: a private area of scratch_bytes() bytes, 64-byte aligned (GEMM packing, padded planes).
float* scratch(int tid);
int scratch_bytes(void);

// Host-provided scratch storage that lives until the current kernel returns (a "workspace" storage in the
// ledger); callable on the calling thread only, before the work is split.
__attribute__((import_module("env"), import_name("ws_alloc"))) void* ws_alloc(int bytes);

// Tasks worth splitting `work` units into so that each is at least `grain` units, at most `max_tasks`.
int split_count(double work, double grain, int max_tasks);
