// Host driver for tests/test_cuda_host_logic.py: runs the host+device (TFSORT_HD) row
// functions of tfsort/cuda/isotonic_rows.h on the CPU, thread by thread for the
// block-parallel phases, so the logic the CUDA kernels run is checked without a GPU.
//
//   driver pav              self-check: block-parallel PAV (every chunk count, every
//                           thread run in turn) against the serial CPU PAV of isotonic.h
//   driver seg              self-check: block-parallel segmented VJPs against the serial
//                           block routines of isotonic.h, every mode and chunk count
//   driver soft < cases     fused soft rank / sort forward (serial and block-parallel)
//                           and gradients; stdin: "rank kl desc eps chunks n" then n values
//                           and n cotangents per case; stdout: one line per result array
//   driver iso < cases      plain isotonic forward and gradients; stdin: "kl inc chunks n"
//                           then y, w, g (n values each)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "tfsort/cuda/isotonic_rows.h"

namespace ir = tfsort::isotonic_rows;
namespace iso = tfsort::isotonic;
using std::vector;

template <typename T>
struct HostCvt {
  static double Load(T v) { return static_cast<double>(v); }
  static T Store(double v) { return static_cast<T>(v); }
  static bool Finite(T v) { return std::isfinite(static_cast<double>(v)); }
  static T NaN() { return static_cast<T>(NAN); }
};
using Cvt = HostCvt<double>;

struct Par {
  vector<double> a, b;
  vector<int32_t> cnt, slot, end_of, start_of;
  explicit Par(int n) : a(n), b(n), cnt(n), slot(n), end_of(n), start_of(n) {}
  ir::ParPav<double> view() {
    return {a.data(), b.data(), cnt.data(), slot.data(), end_of.data(), start_of.data()};
  }
};

// The block kernel's BlockPav, one emulated thread after another per phase.
template <bool kKL>
void BlockPavHost(const double* y, const double* w, int n, int chunks, double* sol,
                  int32_t* seg) {
  Par p(n);
  auto s = p.view();
  for (int t = 0; t < chunks; ++t) ir::ParPavChunk<double, kKL>(y, w, n, t, chunks, s);
  for (int g = 1; g < chunks; g *= 2) {
    const int pairs = ir::ParPavPairs(chunks, g);
    // Pairs of one level are independent: run them in reverse to catch order bugs.
    for (int j = pairs - 1; j >= 0; --j) ir::ParPavMergePair<double, kKL>(n, j, g, chunks, s);
  }
  vector<int32_t> count(chunks), last(chunks);
  for (int t = chunks - 1; t >= 0; --t)
    ir::ParPavCountStarts<double>(n, t, chunks, s, count.data(), last.data());
  ir::ParPavScan(chunks, count.data(), last.data());
  for (int t = chunks - 1; t >= 0; --t)
    ir::ParPavEmit<double, kKL>(n, t, chunks, s, count.data(), last.data(), sol, seg);
}

int SelfCheckPav() {
  std::mt19937_64 rng(1234);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_int_distribution<int> small(0, 4);
  const int sizes[] = {1, 2, 3, 5, 16, 17, 100, 255, 256, 1000, 4099};
  const int chunk_counts[] = {1, 2, 3, 5, 16, 64, 256, 300};
  long cases = 0, seg_mismatch = 0;
  double max_err = 0;
  for (int n : sizes) {
    for (int kind = 0; kind < 7; ++kind) {
      vector<double> y(n), w(n);
      for (int i = 0; i < n; ++i) {
        switch (kind) {
          case 0: y[i] = normal(rng); break;
          case 1: y[i] = small(rng); break;                    // many ties
          case 2: y[i] = i; break;                             // increasing: pools all
          case 3: y[i] = -i; break;                            // decreasing: no pooling
          case 4: y[i] = 3.0; break;                           // constant
          case 5: y[i] = (i % 7) - 0.01 * i; break;            // sawtooth
          default: y[i] = normal(rng) + (i < n / 2 ? -5 : 5);  // big violation mid-row
        }
        w[i] = kind == 1 ? small(rng) : 0.5 * normal(rng);
      }
      for (int kl = 0; kl < 2; ++kl) {
        vector<double> ref(n), sol(n), pa(n), pb(n);
        vector<int32_t> rseg(n), seg(n), pc(n), st(n);
        iso::PavScratch<double> ps{pa.data(), pb.data(), pc.data(), st.data()};
        if (kl) {
          iso::PavKL<double>(y.data(), w.data(), n, ref.data(), rseg.data(), ps);
        } else {
          iso::PavL2<double>(y.data(), n, ref.data(), rseg.data(), ps);
        }
        for (int chunks : chunk_counts) {
          std::fill(sol.begin(), sol.end(), -999.0);
          std::fill(seg.begin(), seg.end(), -999);
          if (kl) {
            BlockPavHost<true>(y.data(), w.data(), n, chunks, sol.data(), seg.data());
          } else {
            BlockPavHost<false>(y.data(), nullptr, n, chunks, sol.data(), seg.data());
          }
          ++cases;
          bool bad = false;
          for (int i = 0; i < n; ++i) {
            const double e = std::fabs(sol[i] - ref[i]) / (1.0 + std::fabs(ref[i]));
            max_err = std::max(max_err, e);
            if (seg[i] != rseg[i]) bad = true;
          }
          if (bad) {
            ++seg_mismatch;
            std::fprintf(stderr, "segments differ: n=%d kind=%d kl=%d chunks=%d\n", n, kind,
                         kl, chunks);
          }
        }
      }
    }
  }
  std::printf("cases %ld seg_mismatch %ld max_err %.3g\n", cases, seg_mismatch, max_err);
  return 0;
}


// Block-parallel segmented VJPs (SegChunk / SegJoin / SegEmit), one emulated thread at a
// time, against the serial isotonic.h routines on the same blocks.
void SegHost(int n, int chunks, int mode, const vector<int32_t>& seg, const vector<double>& x,
             const vector<double>& u, vector<double>* res) {
  vector<int32_t> start(n), last(chunks, -7), open(chunks, -7), cnt(n);
  for (int i = 0; i < n; ++i) start[i] = i == 0 || seg[i] != seg[i - 1];
  vector<double> m(n), z(n), zg(n), sum(n), w(n);
  ir::SegStats<double> s{m.data(), z.data(), zg.data(), sum.data(), w.data(), cnt.data()};
  const bool soft = mode == ir::kSegSpread || mode == ir::kSegGather || mode == ir::kSegKLRank;
  const double* xp = soft ? x.data() : nullptr;
  for (int t = chunks - 1; t >= 0; --t)
    ir::SegChunk<double>(n, t, chunks, start.data(), xp, u.data(), s, last.data());
  ir::SegJoin<double>(n, chunks, start.data(), s, last.data(), open.data());
  res->assign(n, -999.0);
  for (int t = chunks - 1; t >= 0; --t)
    ir::SegEmit<double>(n, t, chunks, mode, start.data(), xp, u.data(), s, open.data(),
                        res->data());
}

int SelfCheckSeg() {
  std::mt19937_64 rng(99);
  std::normal_distribution<double> normal(0.0, 1.0);
  const int sizes[] = {1, 2, 3, 16, 17, 100, 257, 1000, 4099};
  const int chunk_counts[] = {1, 2, 3, 5, 16, 64, 256, 300};
  long cases = 0;
  double max_err = 0;
  for (int n : sizes) {
    for (int kind = 0; kind < 4; ++kind) {
      // Block structures: random short runs, one block, singletons, a few long runs.
      vector<int32_t> seg(n);
      int id = 0;
      for (int i = 0; i < n; ++i) {
        bool brk = false;
        if (i > 0) {
          switch (kind) {
            case 0: brk = rng() % 3 == 0; break;
            case 1: brk = false; break;
            case 2: brk = true; break;
            default: brk = rng() % 97 == 0; break;
          }
        }
        id += brk;
        seg[i] = id;
      }
      vector<double> x(n), u(n);
      for (int i = 0; i < n; ++i) {
        x[i] = 3 * normal(rng);
        u[i] = normal(rng);
      }
      for (int mode = 0; mode < 5; ++mode) {
        vector<double> ref(u), p(n);
        switch (mode) {
          case ir::kSegMean: iso::BlockMean(seg.data(), n, ref.data()); break;
          case ir::kSegSpread:
            iso::BlockSoftmaxSpread(seg.data(), n, x.data(), u.data(), ref.data());
            break;
          case ir::kSegGather:
            iso::BlockSoftmaxGather(seg.data(), n, x.data(), u.data(), ref.data(), p.data());
            break;
          case ir::kSegCenter: {
            vector<double> b(u);
            iso::BlockMean(seg.data(), n, b.data());
            for (int i = 0; i < n; ++i) ref[i] = u[i] - b[i];
            break;
          }
          default: iso::KLRankVjp(seg.data(), n, x.data(), ref.data(), p.data()); break;
        }
        double scale = 1e-300;
        for (double r : ref) scale = std::max(scale, std::fabs(r));
        for (int chunks : chunk_counts) {
          vector<double> res;
          SegHost(n, chunks, mode, seg, x, u, &res);
          ++cases;
          for (int i = 0; i < n; ++i) {
            const double e = std::fabs(res[i] - ref[i]) / scale;
            if (!(e <= max_err)) max_err = e;  // NaN-safe
          }
        }
      }
    }
  }
  std::printf("cases %ld max_err %.3g\n", cases, max_err);
  return 0;
}

template <typename V>
void Print(const char* name, const V& v) {
  std::printf("%s", name);
  for (auto x : v) std::printf(" %.17g", static_cast<double>(x));
  std::printf("\n");
}

// Stable descending argsort of sign * x by the GPU's keys (what cub's stable sort yields).
vector<int32_t> Argsort(const vector<double>& x, int sign) {
  const int n = static_cast<int>(x.size());
  vector<uint64_t> key(n);
  for (int i = 0; i < n; ++i) key[i] = ir::AscendingKey(sign > 0 ? -x[i] : x[i]);
  vector<int32_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(),
                   [&](int32_t a, int32_t b) { return key[a] < key[b]; });
  return perm;
}

template <bool kRank>
void SoftCase(bool kl, bool desc, double eps, int chunks, const vector<double>& x,
              const vector<double>& g) {
  const int n = static_cast<int>(x.size());
  const int sign = ir::SoftSign(kRank, desc);
  const vector<int32_t> perm = Argsort(x, sign);
  vector<double> s(n), y(n), d(n), v(n), pa(n), pb(n), out(n);
  vector<int32_t> pc(n), st(n), seg(n), aux(n);
  ir::SoftScratch<double> b{s.data(), y.data(), d.data(), v.data()};
  iso::PavScratch<double> ps{pa.data(), pb.data(), pc.data(), st.data()};
  // Serial (one thread per row).
  const bool ok = ir::SoftRow<double, double, kRank, Cvt>(
      x.data(), perm.data(), n, kl, desc, eps, out.data(), aux.data(), seg.data(), b, ps);
  Print("serial", out);
  Print("aux", aux);
  // Block-parallel (SoftBlockKernel's steps).
  vector<double> out2(n, -999.0);
  vector<int32_t> aux2(n, -999), seg2(n);
  if (ok) {
    for (int i = 0; i < n; ++i) ir::SoftPrep<double, kRank>(i, n, kl, sign, eps, x[perm[i]], b);
    const double* py = ir::SoftPavY<double, kRank>(kl, b);
    const double* pw = ir::SoftPavW<double, kRank>(kl, b);
    std::fill(v.begin(), v.end(), -999.0);
    if (kl) {
      BlockPavHost<true>(py, pw, n, chunks, v.data(), seg2.data());
    } else {
      BlockPavHost<false>(py, pw, n, chunks, v.data(), seg2.data());
    }
    for (int i = 0; i < n; ++i) {
      out2[kRank ? perm[i] : i] = ir::SoftValue<double, kRank>(i, kl, sign, b);
      aux2[i] = ir::PackAuxAt(perm.data(), seg2.data(), i);
    }
  } else {
    out2 = out;
    aux2 = aux;
  }
  Print("parallel", out2);
  Print("aux_parallel", aux2);
  // Gradients from the packed aux (as SoftGradKernel): plain and, for sort, adjoint.
  for (int adjoint = 0; adjoint < 2; ++adjoint) {
    vector<double> o(n), u(n), s2(n), p(n);
    vector<int32_t> pr(n), sr(n);
    if (ir::UnpackAux(aux.data(), n, pr.data(), sr.data()) != 1) {
      std::fill(o.begin(), o.end(), NAN);
    } else {
      ir::SoftGradRow<double, double, kRank, Cvt>(g.data(), x.data(), pr.data(), sr.data(), n,
                                                  kl, desc, adjoint, eps, o.data(), u.data(),
                                                  s2.data(), p.data());
    }
    Print(adjoint ? "grad_adjoint" : "grad", o);
    // Block-parallel (SoftGradBlockKernel's steps; run starts from the aux sign bits).
    if (ir::UnpackAux(aux.data(), n, pr.data(), sr.data()) == 1) {
      vector<int32_t> seg_runs(n);
      for (int i = 0; i < n; ++i) {
        const bool start = i == 0 || (static_cast<uint32_t>(aux[i]) & ir::kBlockStart) != 0;
        seg_runs[i] = start ? i : seg_runs[i - 1];
      }
      vector<double> us(n), xs(n), res(n);
      for (int i = 0; i < n; ++i)
        ir::SoftGradPrep<double, double, Cvt>(i, kRank, kl, adjoint, sign, eps, g.data(),
                                              x.data(), pr.data(), us.data(), xs.data());
      SegHost(n, chunks, ir::SoftGradMode(kRank, kl, adjoint), seg_runs, xs, us, &res);
      for (int i = 0; i < n; ++i)
        ir::SoftGradStore<double, double, Cvt>(i, kRank, adjoint, sign, eps, pr.data(),
                                               res.data(), o.data());
    }
    Print(adjoint ? "grad_adjoint_parallel" : "grad_parallel", o);
  }
}

void IsoCase(bool kl, bool inc, int chunks, const vector<double>& y, const vector<double>& w,
             const vector<double>& g) {
  const int n = static_cast<int>(y.size());
  vector<double> yb(n), wb(n), sol(n), pa(n), pb(n), out(n);
  vector<int32_t> pc(n), st(n), sb(n), seg(n);
  ir::RowScratch<double> b{yb.data(), wb.data(), sol.data(), sb.data(),
                           {pa.data(), pb.data(), pc.data(), st.data()}};
  if (kl) {
    ir::IsotonicRow<double, double, true, Cvt>(y.data(), w.data(), n, inc, out.data(),
                                               seg.data(), b);
  } else {
    ir::IsotonicRow<double, double, false, Cvt>(y.data(), nullptr, n, inc, out.data(),
                                                seg.data(), b);
  }
  Print("serial", out);
  Print("seg", seg);
  // Block-parallel (IsotonicBlockKernel's steps), when the row is finite.
  vector<double> out2(out), v(n);
  vector<int32_t> seg2(seg), sv(n);
  if (seg[0] >= 0) {
    for (int i = 0; i < n; ++i) {
      const int j = inc ? n - 1 - i : i;
      yb[i] = y[j];
      wb[i] = w[j];
    }
    if (kl) {
      BlockPavHost<true>(yb.data(), wb.data(), n, chunks, v.data(), sv.data());
    } else {
      BlockPavHost<false>(yb.data(), nullptr, n, chunks, v.data(), sv.data());
    }
    const int blocks = sv[n - 1] + 1;
    for (int i = 0; i < n; ++i) {
      const int j = inc ? n - 1 - i : i;
      out2[j] = v[i];
      seg2[j] = inc ? blocks - 1 - sv[i] : sv[i];
    }
  }
  Print("parallel", out2);
  Print("seg_parallel", seg2);
  vector<double> o(n), buf(n);
  ir::IsotonicL2GradRow<double, double, Cvt>(g.data(), seg.data(), n, o.data(), buf.data());
  Print("l2grad", o);
  if (seg[0] >= 0) {
    vector<double> gv(g), res;
    SegHost(n, chunks, ir::kSegMean, seg, gv, gv, &res);
    Print("l2grad_parallel", res);
  } else {
    Print("l2grad_parallel", o);
  }
  for (int adjoint = 0; adjoint < 2; ++adjoint) {
    vector<double> gy(n), gw(n), gb(n), xb(n), ob(n), pb2(n);
    ir::IsotonicKLGradRow<double, double, Cvt>(g.data(), y.data(), w.data(), seg.data(), n,
                                               adjoint, gy.data(), gw.data(), gb.data(),
                                               xb.data(), ob.data(), pb2.data());
    Print(adjoint ? "klgrad_y_adjoint" : "klgrad_y", gy);
    Print(adjoint ? "klgrad_w_adjoint" : "klgrad_w", gw);
    if (seg[0] >= 0) {
      const int mode = adjoint ? ir::kSegGather : ir::kSegSpread;
      SegHost(n, chunks, mode, seg, y, g, &gy);
      SegHost(n, chunks, mode, seg, w, g, &gw);
      for (auto& v : gw) v = -v;
    }
    Print(adjoint ? "klgrad_y_adjoint_parallel" : "klgrad_y_parallel", gy);
    Print(adjoint ? "klgrad_w_adjoint_parallel" : "klgrad_w_parallel", gw);
  }
}

vector<double> ReadVec(int n) {
  vector<double> v(n);
  for (auto& x : v) {
    char buf[64];
    if (std::scanf("%63s", buf) != 1) std::exit(2);
    x = std::strtod(buf, nullptr);  // accepts nan / inf
  }
  return v;
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "pav") return SelfCheckPav();
  if (mode == "seg") return SelfCheckSeg();
  if (mode == "soft") {
    int rank, kl, desc, chunks, n;
    double eps;
    while (std::scanf("%d %d %d %lf %d %d", &rank, &kl, &desc, &eps, &chunks, &n) == 6) {
      const vector<double> x = ReadVec(n), g = ReadVec(n);
      if (rank) {
        SoftCase<true>(kl, desc, eps, chunks, x, g);
      } else {
        SoftCase<false>(kl, desc, eps, chunks, x, g);
      }
      std::printf("end\n");
    }
    return 0;
  }
  if (mode == "iso") {
    int kl, inc, chunks, n;
    while (std::scanf("%d %d %d %d", &kl, &inc, &chunks, &n) == 4) {
      const vector<double> y = ReadVec(n), w = ReadVec(n), g = ReadVec(n);
      IsoCase(kl, inc, chunks, y, w, g);
      std::printf("end\n");
    }
    return 0;
  }
  std::fprintf(stderr, "usage: driver pav|soft|iso\n");
  return 2;
}
