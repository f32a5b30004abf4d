// Shared parts of the depthwise convolutions (depthwise.c: layout, packing, forward; depthwise_grad.c: the
// gradients): four channels per SIMD vector in a zero-padded interleaved block, P[y][x][lane].
#pragma once
#include "common.h"
#include "conv.h"

#define LANES 4

typedef struct {
  int hp, wp;   // padded block: rows, columns
  int block;    // floats of the padded block: hp * wp * 4
  int row;      // floats of one interleaved row: max(ow, w) * 4 (rounded up to 8 positions)
  int plane;    // floats of one interleaved plane: max(oh * ow, h * w) * 4
  int floats;   // scratch a task needs
} Layout;

typedef struct {
  const Conv* c;
  Layout l;
  const float *x, *w, *bias, *dy;
  float *y, *dx, *dw;
  const Conv* fwd; // the original convolution, when c is the geometry of an input gradient's dy block
  float* buf;      // per-thread buffers, when scratch is too small
  int groups4;     // channel groups of 4
  int per;         // units per task
} DwState;

// The current kernel's state (one depthwise kernel runs at a time).
extern DwState dw_;

// Per-thread buffer of dw_.l.floats floats.
float* dw_buffer(int tid);
// Interleave `len` elements of four rows (NULL: zeros) into dst[i][lane], and the inverse (`add` accumulates).
void dw_interleave(const float* const* src, int len, float* dst);
void dw_deinterleave(const float* src, int len, float* const* dst, int add);
void dw_zero(float* p, int floats);
// The interior of the padded block of four h x w planes; `tmp` holds l->plane floats.
void dw_pack_block(const Conv* c, const Layout* l, const float* const* planes, float* p, float* tmp);
// Every output of one unit from its packed block, transposed into the four NCHW planes `outs`.
void dw_conv_unit(const Conv* c, const Layout* l, float* p, const v4* wt, v4 bias, float* const* outs, int add);
// Set dw_ up for `c` (the geometry of the packed block); returns the task count for `units` units.
int dw_setup(const Conv* c, int channels, int units, double flops_per_unit);
