// Per-frame descriptor for the keyframe selector (egovlm.descriptor documents the maths).
//
// Written by hand because no library computes these three numbers in one pass over the
// frame: OpenCV needs cvtColor + resize(INTER_AREA) + pyrDown + Laplacian + meanStdDev,
// five passes and four temporary images per camera frame. Here one pass reads the RGB
// bytes once, with integer arithmetic so the numpy reference matches exactly.
//
// Arrays are borrowed from numpy (no copies) and the GIL is released while computing,
// so the ingest thread never stalls the question path.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

namespace nb = nanobind;

using RGBFrame = nb::ndarray<const uint8_t, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using Thumb = nb::ndarray<float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using ConstThumb = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using ThumbBank = nb::ndarray<const float, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using Out1D = nb::ndarray<float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

namespace {

inline int32_t luma(const uint8_t* p) {
  // BT.601 weights in 8-bit fixed point; 77 + 150 + 29 == 256.
  return (77 * p[0] + 150 * p[1] + 29 * p[2] + 128) >> 8;
}

// Fills `thumb` (gh x gw) with the mean luma of each cell and returns the variance of the
// 4-neighbour Laplacian of the 2x2-binned luma (the blur measure).
double describe(const uint8_t* rgb, size_t h, size_t w, float* thumb, size_t gh, size_t gw) {
  std::vector<int64_t> cell_sum(gh * gw, 0);
  // Cell of each row, and first column of each cell, from the boundaries floor(i * W / gw),
  // exactly as the reference partitions the frame (x * gw / W is not the inverse of that floor).
  std::vector<int32_t> row_cell(h);
  for (size_t c = 0; c < gh; ++c)
    for (size_t y = (c * h) / gh; y < ((c + 1) * h) / gh; ++y) row_cell[y] = static_cast<int32_t>(c);

  const size_t hh = h / 2, hw = w / 2;
  // Binned luma: each value is the SUM of a 2x2 block (0..1020), kept as an integer.
  std::vector<int32_t> binned(hh * hw, 0);
  std::vector<int32_t> row_luma(w);

  std::vector<size_t> col_start(gw + 1);
  for (size_t c = 0; c <= gw; ++c) col_start[c] = (c * w) / gw;

  for (size_t y = 0; y < h; ++y) {
    const uint8_t* row = rgb + y * w * 3;
    int32_t* rl = row_luma.data();
    for (size_t x = 0; x < w; ++x) rl[x] = luma(row + 3 * x);  // contiguous: vectorises
    int64_t* cells = cell_sum.data() + row_cell[y] * gw;
    for (size_t c = 0; c < gw; ++c) {
      int32_t s = 0;  // a cell row is at most w values of 255: fits int32 up to 8M pixels wide
      for (size_t x = col_start[c]; x < col_start[c + 1]; ++x) s += rl[x];
      cells[c] += s;
    }
    const size_t by = y / 2;
    if (by < hh) {
      int32_t* brow = binned.data() + by * hw;
      for (size_t bx = 0; bx < hw; ++bx) brow[bx] += rl[2 * bx] + rl[2 * bx + 1];
    }
  }

  for (size_t cy = 0; cy < gh; ++cy) {
    const size_t y0 = (cy * h) / gh, y1 = ((cy + 1) * h) / gh;
    for (size_t cx = 0; cx < gw; ++cx) {
      const size_t x0 = (cx * w) / gw, x1 = ((cx + 1) * w) / gw;
      const double n = static_cast<double>((y1 - y0) * (x1 - x0));
      thumb[cy * gw + cx] = static_cast<float>(static_cast<double>(cell_sum[cy * gw + cx]) / n);
    }
  }

  if (hh < 3 || hw < 3) return 0.0;
  int64_t s1 = 0;
  double s2 = 0.0;  // sum of squares can exceed int64 on 8K frames; double is exact up to 2^53
  int64_t s2_int = 0;
  for (size_t y = 1; y + 1 < hh; ++y) {
    const int32_t* up = binned.data() + (y - 1) * hw;
    const int32_t* mid = binned.data() + y * hw;
    const int32_t* dn = binned.data() + (y + 1) * hw;
    int64_t row_s2 = 0;
    for (size_t x = 1; x + 1 < hw; ++x) {
      const int64_t lap = up[x] + dn[x] + mid[x - 1] + mid[x + 1] - 4 * mid[x];
      s1 += lap;
      row_s2 += lap * lap;
    }
    s2_int += row_s2;
    if (s2_int > (int64_t{1} << 52)) { s2 += static_cast<double>(s2_int); s2_int = 0; }
  }
  s2 += static_cast<double>(s2_int);
  const double n = static_cast<double>((hh - 2) * (hw - 2));
  const double mean = static_cast<double>(s1) / n;
  // Binned values are 4x the mean luma, so the Laplacian is 4x too: divide the variance by 16.
  return (s2 / n - mean * mean) / 16.0;
}

}  // namespace

NB_MODULE(_native, m) {
  m.doc() = "egovlm native kernels (per-frame descriptor for keyframe selection)";

  m.def(
      "describe",
      [](RGBFrame frame, Thumb thumb) {
        if (frame.shape(2) != 3) throw std::invalid_argument("frame must be HxWx3 RGB uint8");
        const size_t h = frame.shape(0), w = frame.shape(1);
        const size_t gh = thumb.shape(0), gw = thumb.shape(1);
        if (gh == 0 || gw == 0 || gh > h || gw > w)
          throw std::invalid_argument("thumbnail grid must be non-empty and no larger than the frame");
        const uint8_t* data = frame.data();
        float* out = thumb.data();
        nb::gil_scoped_release release;
        return describe(data, h, w, out, gh, gw);
      },
      nb::arg("frame"), nb::arg("thumb"),
      "Fill `thumb` with cell-mean luma of `frame`; return the Laplacian variance (sharpness).");

  m.def(
      "mean_abs_diff_many",
      [](ConstThumb thumb, ThumbBank bank, Out1D out) {
        const size_t k = bank.shape(0), gh = thumb.shape(0), gw = thumb.shape(1);
        if (bank.shape(1) != gh || bank.shape(2) != gw || out.shape(0) != k)
          throw std::invalid_argument("bank must be K x gh x gw and out must have K entries");
        const float* a = thumb.data();
        const float* b = bank.data();
        float* o = out.data();
        const size_t n = gh * gw;
        nb::gil_scoped_release release;
        for (size_t i = 0; i < k; ++i) {
          double s = 0.0;
          const float* bi = b + i * n;
          for (size_t j = 0; j < n; ++j) s += static_cast<double>(a[j] > bi[j] ? a[j] - bi[j] : bi[j] - a[j]);
          o[i] = static_cast<float>(s / static_cast<double>(n));
        }
      },
      nb::arg("thumb"), nb::arg("bank"), nb::arg("out"),
      "Mean absolute difference between `thumb` and each of the K thumbnails in `bank`.");
}
