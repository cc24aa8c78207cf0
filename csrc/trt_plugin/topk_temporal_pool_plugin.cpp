// TensorRT IPluginV3 plugin for TopKTemporalPool; the arithmetic is the CUDA kernel's C entry
// point (csrc/topk_kernel), which is tested on its own without TensorRT.
//
// UNVERIFIED BUILD: written against the documented TensorRT 10 C++ API; never compiled in the
// environment it was written in (no TensorRT headers there). See the header.
//
// Registration, two routes (pick one per process, registering the same creator twice fails):
//   * static: a registrar object below registers the creator (namespace "sfc") when the library is loaded,
//     which is what sfc_deploy.export.tensorrt_plugin.load_plugin_library relies on
//     (ctypes.CDLL with RTLD_GLOBAL after `import tensorrt`);
//   * dynamic: getCreators()/setLoggerFinder() are the entry points of
//     IPluginRegistry::loadLibrary, `trtexec --dynamicPlugins` and version-compatible engines;
//     build with -DSFC_TRT_NO_STATIC_REGISTRATION for that route.
#include "topk_temporal_pool_plugin.h"

#include <cstring>
#include <exception>
#include <iostream>
#include <mutex>
#include <sstream>

#include "topk_temporal_pool.h"

namespace sfc {
namespace trt {
namespace {

using nvinfer1::DataType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;

std::mutex gLoggerMutex;
nvinfer1::ILoggerFinder* gLoggerFinder = nullptr;

// Reports through TensorRT's logger when the library was loaded by TensorRT (setLoggerFinder),
// else on stderr. Messages name the plugin, what was received and what is expected.
void logError(std::string const& message) noexcept {
  try {
    std::string const text = std::string("[sfc::TopKTemporalPool] ") + message;
    nvinfer1::ILogger* logger = nullptr;
    {
      std::lock_guard<std::mutex> lock(gLoggerMutex);
      if (gLoggerFinder != nullptr) logger = gLoggerFinder->findLogger();
    }
    if (logger != nullptr) {
      logger->log(nvinfer1::ILogger::Severity::kERROR, text.c_str());
    } else {
      std::cerr << text << std::endl;
    }
  } catch (...) {
  }
}

bool readIntField(PluginField const& field, int64_t* value) {
  if (field.data == nullptr || field.length != 1) return false;
  if (field.type == PluginFieldType::kINT32) {
    *value = *static_cast<int32_t const*>(field.data);
    return true;
  }
  if (field.type == PluginFieldType::kINT64) {
    *value = *static_cast<int64_t const*>(field.data);
    return true;
  }
  return false;
}

int sfcDtype(DataType type) {
  switch (type) {
    case DataType::kFLOAT:
      return SFC_TOPK_DTYPE_FLOAT32;
    case DataType::kHALF:
      return SFC_TOPK_DTYPE_FLOAT16;
    default:
      return -1;
  }
}

}  // namespace

// --- plugin ----------------------------------------------------------------------------------

TopKTemporalPoolPlugin::TopKTemporalPoolPlugin(int32_t k) : mK(k) {}

nvinfer1::IPluginCapability* TopKTemporalPoolPlugin::getCapabilityInterface(
    nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE:
      return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD:
      return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME:
      return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* TopKTemporalPoolPlugin::clone() noexcept {
  try {
    return new TopKTemporalPoolPlugin(mK);
  } catch (std::exception const& e) {
    logError(std::string("clone failed: ") + e.what());
  }
  return nullptr;
}

char const* TopKTemporalPoolPlugin::getPluginName() const noexcept { return kTopKPluginName; }
char const* TopKTemporalPoolPlugin::getPluginVersion() const noexcept { return kTopKPluginVersion; }
char const* TopKTemporalPoolPlugin::getPluginNamespace() const noexcept {
  return kTopKPluginNamespace;
}

int32_t TopKTemporalPoolPlugin::getNbOutputs() const noexcept { return 1; }

int32_t TopKTemporalPoolPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in,
                                                int32_t nbInputs,
                                                nvinfer1::DynamicPluginTensorDesc const* out,
                                                int32_t nbOutputs) noexcept {
  (void)out;
  if (nbInputs != 1 || nbOutputs != 1) {
    logError("expects 1 input and 1 output, got " + std::to_string(nbInputs) + " and " +
             std::to_string(nbOutputs));
    return -1;
  }
  if (in[0].desc.dims.nbDims != 5) {
    logError("expects a 5-D (N, C, T, H, W) input, got rank " +
             std::to_string(in[0].desc.dims.nbDims));
    return -1;
  }
  // min is the smallest T of the optimization profile; every T must hold k steps.
  if (in[0].min.nbDims == 5 && in[0].min.d[kTopKAxis] >= 0 && in[0].min.d[kTopKAxis] < mK) {
    logError("k=" + std::to_string(mK) + " exceeds the smallest T=" +
             std::to_string(in[0].min.d[kTopKAxis]) + " of the optimization profile");
    return -1;
  }
  return 0;
}

bool TopKTemporalPoolPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
    int32_t nbOutputs) noexcept {
  if (nbInputs != 1 || nbOutputs != 1 || pos < 0 || pos > 1) return false;
  nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
  if (desc.format != nvinfer1::TensorFormat::kLINEAR) return false;
  if (pos == 0) return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
  return desc.type == inOut[0].desc.type;  // output dtype == input dtype
}

int32_t TopKTemporalPoolPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                                   DataType const* inputTypes,
                                                   int32_t nbInputs) const noexcept {
  if (nbInputs != 1 || nbOutputs != 1) return -1;
  if (inputTypes[0] != DataType::kFLOAT && inputTypes[0] != DataType::kHALF) {
    logError("supports float32 and float16 inputs only");
    return -1;
  }
  outputTypes[0] = inputTypes[0];
  return 0;
}

int32_t TopKTemporalPoolPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs,
                                                int32_t nbInputs,
                                                nvinfer1::DimsExprs const* shapeInputs,
                                                int32_t nbShapeInputs,
                                                nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                                                nvinfer1::IExprBuilder& exprBuilder) noexcept {
  (void)shapeInputs;
  if (nbInputs != 1 || nbOutputs != 1 || nbShapeInputs != 0) {
    logError("expects 1 input, 1 output and no shape inputs");
    return -1;
  }
  if (inputs[0].nbDims != 5) {
    logError("expects a 5-D (N, C, T, H, W) input, got rank " + std::to_string(inputs[0].nbDims));
    return -1;
  }
  nvinfer1::IDimensionExpr const* t = inputs[0].d[kTopKAxis];
  if (t->isConstant() && t->getConstantValue() < mK) {
    logError("k=" + std::to_string(mK) + " exceeds T=" + std::to_string(t->getConstantValue()));
    return -1;
  }
  outputs[0].nbDims = 5;
  for (int32_t i = 0; i < 5; ++i) outputs[0].d[i] = inputs[0].d[i];
  outputs[0].d[kTopKAxis] = exprBuilder.constant(mK);
  return 0;
}

size_t TopKTemporalPoolPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const*, int32_t,
                                                nvinfer1::DynamicPluginTensorDesc const*,
                                                int32_t) const noexcept {
  return 0;  // the kernel keeps no per-element storage
}

int32_t TopKTemporalPoolPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in,
                                              int32_t nbInputs,
                                              nvinfer1::PluginTensorDesc const* out,
                                              int32_t nbOutputs) noexcept {
  (void)out;
  if (nbInputs != 1 || nbOutputs != 1 || in[0].dims.nbDims != 5) return -1;
  if (in[0].dims.d[kTopKAxis] < mK) {
    logError("k=" + std::to_string(mK) + " exceeds T=" + std::to_string(in[0].dims.d[kTopKAxis]));
    return -1;
  }
  return 0;
}

int32_t TopKTemporalPoolPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
                                        nvinfer1::PluginTensorDesc const* outputDesc,
                                        void const* const* inputs, void* const* outputs,
                                        void* workspace, cudaStream_t stream) noexcept {
  (void)outputDesc;
  (void)workspace;
  nvinfer1::Dims const& d = inputDesc[0].dims;
  int const dtype = sfcDtype(inputDesc[0].type);
  if (dtype < 0 || d.nbDims != 5) {
    logError("enqueue got an unsupported input (dtype or rank)");
    return -1;
  }
  int const code = sfc_topk_temporal_pool_launch(inputs[0], outputs[0], dtype, d.d[0], d.d[1],
                                                 d.d[2], d.d[3] * d.d[4], mK,
                                                 static_cast<void*>(stream));
  if (code != 0) {
    logError(std::string("kernel launch failed: ") + sfc_topk_error_string(code));
    return -1;
  }
  return 0;
}

nvinfer1::IPluginV3* TopKTemporalPoolPlugin::attachToContext(
    nvinfer1::IPluginResourceContext* context) noexcept {
  (void)context;  // no per-context resources
  return clone();
}

nvinfer1::PluginFieldCollection const* TopKTemporalPoolPlugin::getFieldsToSerialize() noexcept {
  mFieldsToSerialize.clear();
  mFieldsToSerialize.emplace_back("k", &mK, PluginFieldType::kINT32, 1);
  mFieldsToSerialize.emplace_back("axis", &mAxis, PluginFieldType::kINT32, 1);
  mFieldCollection.nbFields = static_cast<int32_t>(mFieldsToSerialize.size());
  mFieldCollection.fields = mFieldsToSerialize.data();
  return &mFieldCollection;
}

// --- creator ---------------------------------------------------------------------------------

TopKTemporalPoolPluginCreator::TopKTemporalPoolPluginCreator() {
  mFields.emplace_back("k", nullptr, PluginFieldType::kINT32, 1);
  mFields.emplace_back("axis", nullptr, PluginFieldType::kINT32, 1);
  mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
  mFieldCollection.fields = mFields.data();
}

char const* TopKTemporalPoolPluginCreator::getPluginName() const noexcept {
  return kTopKPluginName;
}
char const* TopKTemporalPoolPluginCreator::getPluginVersion() const noexcept {
  return kTopKPluginVersion;
}
char const* TopKTemporalPoolPluginCreator::getPluginNamespace() const noexcept {
  return kTopKPluginNamespace;
}
nvinfer1::PluginFieldCollection const* TopKTemporalPoolPluginCreator::getFieldNames() noexcept {
  return &mFieldCollection;
}

// Same parsing for both phases: at kRUNTIME fc is what getFieldsToSerialize() wrote.
nvinfer1::IPluginV3* TopKTemporalPoolPluginCreator::createPlugin(
    char const* name, nvinfer1::PluginFieldCollection const* fc,
    nvinfer1::TensorRTPhase phase) noexcept {
  (void)name;
  (void)phase;
  try {
    int64_t k = -1;
    int64_t axis = kTopKAxis;
    bool haveK = false;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
      PluginField const& field = fc->fields[i];
      if (field.name == nullptr) continue;
      if (std::strcmp(field.name, "k") == 0) {
        if (!readIntField(field, &k)) {
          logError("field 'k' must be one int32 (or int64) value");
          return nullptr;
        }
        haveK = true;
      } else if (std::strcmp(field.name, "axis") == 0) {
        if (!readIntField(field, &axis)) {
          logError("field 'axis' must be one int32 (or int64) value");
          return nullptr;
        }
      }
      // Other fields (e.g. ONNX attributes the parser passes through) are ignored.
    }
    if (!haveK) {
      logError("missing required field 'k' (int32, number of time steps to keep)");
      return nullptr;
    }
    if (k < 1 || k > INT32_MAX) {
      logError("k must be >= 1, got " + std::to_string(k));
      return nullptr;
    }
    if (axis != kTopKAxis && axis != kTopKAxis - 5) {  // 2, or -3 counted from the end of rank 5
      logError("axis must be 2 (the T axis of N, C, T, H, W), got " + std::to_string(axis));
      return nullptr;
    }
    return new TopKTemporalPoolPlugin(static_cast<int32_t>(k));
  } catch (std::exception const& e) {
    logError(std::string("createPlugin failed: ") + e.what());
  }
  return nullptr;
}

#ifndef SFC_TRT_NO_STATIC_REGISTRATION
namespace {
// Registers the creator when the library is loaded. Not REGISTER_TENSORRT_PLUGIN: its
// PluginRegistrar passes the namespace "" to registerCreator, and whether the registry keys a
// creator on that argument or on getPluginNamespace() is not documented. Passing "sfc" here
// makes both readings agree with the ONNX node's plugin_namespace and with
// getCreator("TopKTemporalPool", "1", "sfc").
struct StaticRegistration {
  StaticRegistration() {
    if (!getPluginRegistry()->registerCreator(creator, kTopKPluginNamespace)) {
      logError("registerCreator failed: sfc::TopKTemporalPool v1 is already registered "
               "(library loaded twice, or by both getCreators() and static registration?)");
    }
  }
  TopKTemporalPoolPluginCreator creator;
};
StaticRegistration gStaticRegistration;
}  // namespace
#endif

}  // namespace trt
}  // namespace sfc

// --- plugin-library entry points (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins) ---

extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  std::lock_guard<std::mutex> lock(sfc::trt::gLoggerMutex);
  sfc::trt::gLoggerFinder = finder;
}

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static sfc::trt::TopKTemporalPoolPluginCreator creator;
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
  nbCreators = 1;
  return creators;
}
