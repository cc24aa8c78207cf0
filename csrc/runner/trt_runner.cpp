// sfc_trt_classify: head -> SFC -> tail with the TensorRT engines of an export folder.
//
// UNVERIFIED BUILD: written against the documented TensorRT 10/11 C++ API (IRuntime,
// ICudaEngine, IExecutionContext::setInputShape/setTensorAddress/enqueueV3); TensorRT was not
// available where it was written, and CMake builds it only where TENSORRT_ROOT is found.
//
//   sfc_trt_classify --export DIR --input video.bin --shape N,3,T,H,W
//                    [--precision fp16|fp32] [--sfc portable|custom] [--plugin libsfc_trt_plugins.so]
//
// The video is raw little-endian float32; it is converted to the engine's input type (fp16
// engines take fp16 I/O). The custom-op SFC engine needs the plugin library, loaded here with
// dlopen (its static registrar adds sfc::TopKTemporalPool to TensorRT's registry).
#include <NvInfer.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check_cuda(cudaError_t code, const char* what) {
  if (code != cudaSuccess) throw Error(std::string(what) + ": " + cudaGetErrorString(code));
}

class Logger : public nvinfer1::ILogger {
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", msg);
  }
};

int64_t volume(const nvinfer1::Dims& d) {
  int64_t v = 1;
  for (int i = 0; i < d.nbDims; ++i) v *= d.d[i];
  return v;
}

size_t element_size(nvinfer1::DataType t) {
  switch (t) {
    case nvinfer1::DataType::kFLOAT: return 4;
    case nvinfer1::DataType::kHALF: return 2;
    default: throw Error("engine I/O type other than float32/float16 is not supported here");
  }
}

// A device buffer holding one tensor, with its dims and type.
struct DeviceTensor {
  nvinfer1::Dims dims{};
  nvinfer1::DataType type = nvinfer1::DataType::kFLOAT;
  void* ptr = nullptr;
  DeviceTensor() = default;
  DeviceTensor(const nvinfer1::Dims& d, nvinfer1::DataType t) : dims(d), type(t) {
    check_cuda(cudaMalloc(&ptr, static_cast<size_t>(volume(d)) * element_size(t)), "cudaMalloc");
  }
  DeviceTensor(DeviceTensor&& o) noexcept : dims(o.dims), type(o.type), ptr(o.ptr) { o.ptr = nullptr; }
  DeviceTensor& operator=(DeviceTensor&& o) noexcept {
    std::swap(dims, o.dims);
    std::swap(type, o.type);
    std::swap(ptr, o.ptr);
    return *this;
  }
  ~DeviceTensor() {
    if (ptr) cudaFree(ptr);
  }
};

// One engine with its execution context; run() binds one input and returns every output.
class Engine {
 public:
  Engine(nvinfer1::IRuntime& runtime, const std::string& path) : path_(path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot open " + path + "; export with --format onnx,tensorrt");
    std::vector<char> blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    engine_.reset(runtime.deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine_) throw Error("cannot deserialize " + path + " (other TensorRT version or GPU?)");
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw Error("cannot create an execution context for " + path);
  }

  std::vector<std::pair<std::string, DeviceTensor>> run(const DeviceTensor& x, cudaStream_t stream) {
    std::vector<std::pair<std::string, DeviceTensor>> outputs;
    for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      if (engine_->getTensorIOMode(name) != nvinfer1::TensorIOMode::kINPUT) continue;
      if (engine_->getTensorDataType(name) != x.type) throw Error(path_ + ": input type mismatch");
      if (!context_->setInputShape(name, x.dims)) throw Error(path_ + ": shape outside the profile");
      context_->setTensorAddress(name, x.ptr);
    }
    for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      if (engine_->getTensorIOMode(name) != nvinfer1::TensorIOMode::kOUTPUT) continue;
      DeviceTensor out(context_->getTensorShape(name), engine_->getTensorDataType(name));
      context_->setTensorAddress(name, out.ptr);
      outputs.emplace_back(name, std::move(out));
    }
    if (!context_->enqueueV3(stream)) throw Error(path_ + ": enqueueV3 failed");
    return outputs;
  }

 private:
  std::string path_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
};

DeviceTensor take(std::vector<std::pair<std::string, DeviceTensor>>& outs, const std::string& name) {
  for (auto& [n, t] : outs) {
    if (n == name) return std::move(t);
  }
  throw Error("engine has no output named " + name);
}

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) shape.push_back(std::stoll(item));
  return shape;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string dir, input, precision = "fp16", sfc = "portable", plugin, shape_text;
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string arg = argv[i], value = argv[i + 1];
      if (arg == "--export") dir = value;
      else if (arg == "--input") input = value;
      else if (arg == "--shape") shape_text = value;
      else if (arg == "--precision") precision = value;
      else if (arg == "--sfc") sfc = value;
      else if (arg == "--plugin") plugin = value;
      else throw Error("unknown option " + arg);
    }
    if (dir.empty() || input.empty() || shape_text.empty()) {
      throw Error("usage: sfc_trt_classify --export DIR --input video.bin --shape N,3,T,H,W "
                  "[--precision fp16|fp32] [--sfc portable|custom] [--plugin lib.so]");
    }
    if (sfc == "custom") {
      if (plugin.empty()) throw Error("--sfc custom needs --plugin libsfc_trt_plugins.so");
      if (!dlopen(plugin.c_str(), RTLD_NOW | RTLD_GLOBAL)) throw Error(std::string("dlopen: ") + dlerror());
    }
    const std::vector<int64_t> shape = parse_shape(shape_text);
    if (shape.size() != 5) throw Error("--shape must be N,3,T,H,W");
    nvinfer1::Dims dims{};
    dims.nbDims = 5;
    int64_t count = 1;
    for (int i = 0; i < 5; ++i) count *= (dims.d[i] = shape[i]);
    std::ifstream in(input, std::ios::binary);
    std::vector<float> host(static_cast<size_t>(count));
    if (!in.read(reinterpret_cast<char*>(host.data()), count * 4)) throw Error(input + " is shorter than --shape");

    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
    const std::string sfc_stem = sfc == "custom" ? "sfc.custom" : "sfc";
    Engine head(*runtime, dir + "/head." + precision + ".engine");
    Engine sfc_engine(*runtime, dir + "/" + sfc_stem + "." + precision + ".engine");
    Engine tail(*runtime, dir + "/tail." + precision + ".engine");

    const bool half = precision == "fp16";
    DeviceTensor video(dims, half ? nvinfer1::DataType::kHALF : nvinfer1::DataType::kFLOAT);
    if (half) {
      std::vector<__half> h(host.size());
      for (size_t i = 0; i < host.size(); ++i) h[i] = __float2half(host[i]);
      check_cuda(cudaMemcpy(video.ptr, h.data(), h.size() * 2, cudaMemcpyHostToDevice), "upload");
    } else {
      check_cuda(cudaMemcpy(video.ptr, host.data(), host.size() * 4, cudaMemcpyHostToDevice), "upload");
    }
    cudaStream_t stream;
    check_cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
    auto head_out = head.run(video, stream);
    DeviceTensor f_head = take(head_out, "f_head");
    auto sfc_out = sfc_engine.run(f_head, stream);
    DeviceTensor f_sfc = take(sfc_out, "f_sfc");
    auto tail_out = tail.run(f_sfc, stream);
    DeviceTensor logits = take(tail_out, "logits");
    check_cuda(cudaStreamSynchronize(stream), "inference");

    const int64_t n = logits.dims.d[0], classes = logits.dims.d[1];
    std::vector<float> result(static_cast<size_t>(n * classes));
    if (logits.type == nvinfer1::DataType::kHALF) {
      std::vector<__half> h(result.size());
      check_cuda(cudaMemcpy(h.data(), logits.ptr, h.size() * 2, cudaMemcpyDeviceToHost), "download");
      for (size_t i = 0; i < h.size(); ++i) result[i] = __half2float(h[i]);
    } else {
      check_cuda(cudaMemcpy(result.data(), logits.ptr, result.size() * 4, cudaMemcpyDeviceToHost), "download");
    }
    for (int64_t row = 0; row < n; ++row) {
      int64_t best = 0;
      for (int64_t c = 1; c < classes; ++c) best = result[row * classes + c] > result[row * classes + best] ? c : best;
      std::printf("row %lld: class %lld\n", static_cast<long long>(row), static_cast<long long>(best));
    }
    cudaStreamDestroy(stream);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
