// TensorRT IPluginV3 plugin for TopKTemporalPool (name "TopKTemporalPool", namespace "sfc",
// version "1"; fields k: int32, axis: int32 == 2). The ONNX custom node of SPEC.md section 4
// (domain sfc, op_type TopKTemporalPool, attrs k, axis, plugin_namespace, plugin_version) maps
// onto it through the ONNX parser's plugin fallback.
//
// UNVERIFIED BUILD: written against the documented TensorRT 10 C++ API (NvInferRuntime.h,
// NvInferPluginBase.h: IPluginV3, IPluginV3OneCore/OneBuild/OneRuntime, IPluginCreatorV3One).
// The environment it was written in has no TensorRT headers or libraries, so this file and
// the .cpp have never been compiled; CMake only builds them where NvInfer.h is found.
#ifndef SFC_TOPK_TEMPORAL_POOL_PLUGIN_H_
#define SFC_TOPK_TEMPORAL_POOL_PLUGIN_H_

#include <NvInfer.h>
#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sfc {
namespace trt {

constexpr char const* kTopKPluginName = "TopKTemporalPool";
constexpr char const* kTopKPluginVersion = "1";
constexpr char const* kTopKPluginNamespace = "sfc";
constexpr int32_t kTopKAxis = 2;  // the T axis of (N, C, T, H, W); the only axis supported

class TopKTemporalPoolPlugin final : public nvinfer1::IPluginV3,
                                     public nvinfer1::IPluginV3OneCore,
                                     public nvinfer1::IPluginV3OneBuild,
                                     public nvinfer1::IPluginV3OneRuntime {
 public:
  explicit TopKTemporalPoolPlugin(int32_t k);
  ~TopKTemporalPoolPlugin() override = default;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(
      nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override;
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* out,
                          int32_t nbOutputs) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                 int32_t nbInputs, int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                             nvinfer1::DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                          nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs,
                          nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* outputs,
                          int32_t nbOutputs) const noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
                  nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs,
                  void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

 private:
  int32_t mK;
  int32_t mAxis{kTopKAxis};
  std::vector<nvinfer1::PluginField> mFieldsToSerialize;
  nvinfer1::PluginFieldCollection mFieldCollection{};
};

class TopKTemporalPoolPluginCreator final : public nvinfer1::IPluginCreatorV3One {
 public:
  TopKTemporalPoolPluginCreator();
  ~TopKTemporalPoolPluginCreator() override = default;

  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
  nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;

 private:
  std::vector<nvinfer1::PluginField> mFields;
  nvinfer1::PluginFieldCollection mFieldCollection{};
};

}  // namespace trt
}  // namespace sfc

#endif  // SFC_TOPK_TEMPORAL_POOL_PLUGIN_H_
