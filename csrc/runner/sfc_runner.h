// sfc::Classifier: head -> SFC -> tail from an sfc-deploy export folder, in C++.
//
// The public API is plain C++ (no torch headers), so a service embeds it with one include and
// its own translation units compile in a second instead of the ~30 s a libtorch header costs.
// All libtorch code lives in sfc_runner.cpp (libsfc_runner.so).
//
// Artifacts are found by the exporter's naming rule (sfc_deploy/export/exporter.py:_file_name):
//   <part>.<precision>.ts    TorchScript (torch::jit::load)
//   <part>.<precision>.pt2   AOTInductor package (torch::inductor::AOTIModelPackageLoader)
// for part in head, sfc, tail. The TorchScript SFC part has the time axis it was traced with
// (manifest.json: input.frames); the AOTInductor one accepts any time in the exported range.
#ifndef SFC_RUNNER_H_
#define SFC_RUNNER_H_

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sfc {

// Thrown for every user-facing failure: a missing file, a wrong shape, a load error. The
// message says what was received and what was expected.
class RunnerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class ArtifactFormat { kTorchScript, kAOTInductor };

// Parses "torchscript"/"ts" or "aoti"/"pt2"; throws RunnerError otherwise.
ArtifactFormat parse_format(const std::string& name);

// A dense float32 tensor on the host: row-major data and its shape.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// Reads a video tensor written by Python: a ".pt" file from torch.save(tensor) (any float
// dtype, converted to float32), or a raw little-endian float32 ".bin" whose shape is given.
HostTensor read_tensor(const std::string& path, const std::vector<int64_t>& shape_for_bin = {});

// Writes float32 data as raw little-endian bytes (temp file, then rename: never half-written).
void write_raw(const std::string& path, const std::vector<float>& data);

struct ClassifierOptions {
  std::string export_dir;
  ArtifactFormat format = ArtifactFormat::kTorchScript;
  std::string precision = "fp32";  // only fp32 runs on the CPU; fp16 artifacts need CUDA
  int threads = 0;                 // 0: libtorch's default
};

struct Prediction {
  std::vector<int64_t> logits_shape;  // (batch, classes)
  std::vector<float> logits;          // row-major
  std::vector<int64_t> top1;          // argmax per batch row
};

// Loads the three parts once; classify() may be called many times (not concurrently).
class Classifier {
 public:
  explicit Classifier(const ClassifierOptions& options);
  ~Classifier();
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;

  // video: (batch, 3, time, H, W) float32, preprocessed as manifest.json's "preprocess" says.
  Prediction classify(const HostTensor& video);

  // The file each part was loaded from, for logs.
  const std::vector<std::string>& files() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sfc

#endif  // SFC_RUNNER_H_
