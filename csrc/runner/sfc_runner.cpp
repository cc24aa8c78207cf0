// libsfc_runner.so: the only translation unit that includes libtorch (see sfc_runner.h).
#include "sfc_runner.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>
#include <sys/stat.h>

namespace sfc {
namespace {

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ")";
  return out.str();
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw RunnerError("cannot open " + path + " for reading; check the path");
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// One loaded part: a TorchScript module or an AOTInductor package, called with a list of
// tensors and returning the list of its outputs (the SFC part returns (f_sfc, attention)).
class Part {
 public:
  Part(const std::string& path, ArtifactFormat format) : format_(format) {
    try {
      if (format == ArtifactFormat::kTorchScript) {
        module_ = std::make_unique<torch::jit::Module>(torch::jit::load(path, torch::kCPU));
        module_->eval();
      } else {
        package_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path);
      }
    } catch (const std::exception& e) {
      throw RunnerError("cannot load " + path + ": " + first_line(e.what()));
    }
  }

  std::vector<at::Tensor> operator()(const at::Tensor& x) {
    if (format_ == ArtifactFormat::kAOTInductor) return package_->run({x});
    c10::IValue out = module_->forward({x});
    std::vector<at::Tensor> tensors;
    if (out.isTuple()) {
      for (const auto& v : out.toTupleRef().elements()) tensors.push_back(v.toTensor());
    } else if (out.isTensorList()) {
      for (const at::Tensor& t : out.toTensorVector()) tensors.push_back(t);
    } else {
      tensors.push_back(out.toTensor());
    }
    return tensors;
  }

 private:
  static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

  ArtifactFormat format_;
  std::unique_ptr<torch::jit::Module> module_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> package_;
};

// input.frames of manifest.json: the time length the TorchScript SFC part was traced with.
// A regex over the exporter's fixed layout rather than a JSON dependency; -1 when absent.
int64_t exported_frames(const std::string& manifest_path) {
  const std::vector<char> bytes = read_bytes(manifest_path);
  const std::string text(bytes.begin(), bytes.end());
  static const std::regex pattern("\"input\"\\s*:\\s*\\{[^}]*?\"frames\"\\s*:\\s*(\\d+)");
  std::smatch m;
  if (!std::regex_search(text, m, pattern)) return -1;
  return std::stoll(m[1].str());
}

}  // namespace

ArtifactFormat parse_format(const std::string& name) {
  if (name == "torchscript" || name == "ts") return ArtifactFormat::kTorchScript;
  if (name == "aoti" || name == "pt2") return ArtifactFormat::kAOTInductor;
  throw RunnerError("unknown format '" + name + "'; expected torchscript or aoti");
}

HostTensor read_tensor(const std::string& path, const std::vector<int64_t>& shape_for_bin) {
  if (!is_file(path)) throw RunnerError("input " + path + " does not exist; pass a .pt or .bin file");
  HostTensor out;
  if (ends_with(path, ".bin")) {
    if (shape_for_bin.empty()) {
      throw RunnerError("a raw .bin input needs its shape; pass --shape N,3,T,H,W");
    }
    int64_t count = 1;
    for (int64_t d : shape_for_bin) count *= d;
    std::vector<char> bytes = read_bytes(path);
    if (static_cast<int64_t>(bytes.size()) != count * 4) {
      throw RunnerError(path + " has " + std::to_string(bytes.size()) + " bytes, but shape " +
                        shape_string(shape_for_bin) + " of float32 needs " +
                        std::to_string(count * 4) + "; check --shape");
    }
    out.shape = shape_for_bin;
    out.data.resize(static_cast<size_t>(count));
    std::memcpy(out.data.data(), bytes.data(), bytes.size());
    return out;
  }
  if (!ends_with(path, ".pt")) {
    throw RunnerError("input " + path + " is neither .pt (torch.save) nor .bin (raw float32)");
  }
  c10::IValue value;
  try {
    value = torch::jit::pickle_load(read_bytes(path));
  } catch (const std::exception& e) {
    throw RunnerError(path + " is not a tensor saved by torch.save: " +
                      std::string(e.what()).substr(0, 200));
  }
  if (!value.isTensor()) throw RunnerError(path + " holds a " + value.tagKind() + ", expected one tensor");
  at::Tensor t = value.toTensor().to(at::kFloat).contiguous();
  out.shape.assign(t.sizes().begin(), t.sizes().end());
  out.data.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  return out;
}

void write_raw(const std::string& path, const std::vector<float>& data) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw RunnerError("cannot write " + tmp + "; check the folder exists and is writable");
    f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size() * 4));
    if (!f) throw RunnerError("writing " + tmp + " failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw RunnerError("cannot rename " + tmp + " to " + path);
}

struct Classifier::Impl {
  std::vector<std::string> files;
  int64_t static_time = -1;  // the traced SFC's time length; -1: any
  std::unique_ptr<Part> head, sfc, tail;
};

Classifier::Classifier(const ClassifierOptions& options) : impl_(std::make_unique<Impl>()) {
  if (options.precision != "fp32") {
    throw RunnerError("precision '" + options.precision +
                      "' is not runnable on the CPU; use fp32 (fp16 artifacts need a CUDA build)");
  }
  if (options.threads > 0) at::set_num_threads(options.threads);
  const std::string suffix = options.format == ArtifactFormat::kTorchScript ? ".ts" : ".pt2";
  const std::string dir = options.export_dir.empty() ? "." : options.export_dir;
  if (!is_file(dir + "/manifest.json")) {
    throw RunnerError(dir + " has no manifest.json; pass a folder written by `sfc-deploy export`");
  }
  if (options.format == ArtifactFormat::kTorchScript) {
    impl_->static_time = exported_frames(dir + "/manifest.json");
    if (impl_->static_time < 1) {
      throw RunnerError(dir + "/manifest.json has no input.frames; re-run sfc-deploy export");
    }
  }
  for (const char* part : {"head", "sfc", "tail"}) {
    const std::string path = dir + "/" + part + "." + options.precision + suffix;
    if (!is_file(path)) {
      throw RunnerError(path + " is missing; export with --format " +
                        std::string(options.format == ArtifactFormat::kTorchScript ? "torchscript" : "aoti"));
    }
    impl_->files.push_back(path);
  }
  impl_->head = std::make_unique<Part>(impl_->files[0], options.format);
  impl_->sfc = std::make_unique<Part>(impl_->files[1], options.format);
  impl_->tail = std::make_unique<Part>(impl_->files[2], options.format);
}

Classifier::~Classifier() = default;

const std::vector<std::string>& Classifier::files() const { return impl_->files; }

Prediction Classifier::classify(const HostTensor& video) {
  if (video.shape.size() != 5 || video.shape[1] != 3) {
    throw RunnerError("video has shape " + shape_string(video.shape) +
                      ", expected (batch, 3, time, H, W)");
  }
  int64_t count = 1;
  for (int64_t d : video.shape) count *= d;
  if (count != static_cast<int64_t>(video.data.size())) {
    throw RunnerError("video data has " + std::to_string(video.data.size()) + " values, shape " +
                      shape_string(video.shape) + " needs " + std::to_string(count));
  }
  if (impl_->static_time > 0 && video.shape[2] != impl_->static_time) {
    // A trace freezes TopK's k: another length would run, with the wrong compression ratio.
    throw RunnerError("video has " + std::to_string(video.shape[2]) +
                      " frames, but the TorchScript SFC part was traced for " +
                      std::to_string(impl_->static_time) +
                      " (manifest.json input.frames); resample the video or use --format aoti");
  }
  c10::InferenceMode guard;
  // from_blob does not copy; clone so libtorch owns the memory the graphs read.
  at::Tensor x = at::from_blob(const_cast<float*>(video.data.data()), video.shape, at::kFloat).clone();
  at::Tensor logits;
  try {
    at::Tensor f_head = (*impl_->head)(x).at(0);
    at::Tensor f_sfc = (*impl_->sfc)(f_head).at(0);  // output 1 is the attention map
    logits = (*impl_->tail)(f_sfc).at(0).to(at::kFloat).contiguous();
  } catch (const RunnerError&) {
    throw;
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw RunnerError("inference failed for video shape " + shape_string(video.shape) + ": " +
                      what.substr(0, what.find('\n')));
  }
  Prediction p;
  p.logits_shape.assign(logits.sizes().begin(), logits.sizes().end());
  p.logits.assign(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
  at::Tensor top = logits.argmax(1);
  for (int64_t i = 0; i < top.size(0); ++i) p.top1.push_back(top[i].item<int64_t>());
  return p;
}

}  // namespace sfc
