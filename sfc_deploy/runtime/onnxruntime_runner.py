"""ONNX Runtime runner: execution providers chosen from what is installed."""

from __future__ import annotations

import torch

from sfc_deploy.errors import BackendUnavailableError
from sfc_deploy.runtime.base import Runner

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def available_providers() -> list[str]:
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [p for p in PREFERRED_PROVIDERS if p in have]


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX artifact; the custom-op graph runs through onnxruntime-extensions."""

    name = "onnxruntime"

    def __init__(self, artifact, path, *, threads: int | None = None, providers: list[str] | None = None,
                 optimization: str = "all", fold_time: bool = True, shrink_arena: bool = False) -> None:
        super().__init__(artifact, path)
        self.threads = threads
        self.providers = providers
        self.optimization = optimization
        self.fold_time = fold_time  # run unit-time-kernel 3D convs on ORT's fast 2D path (ort_fold.py)
        # give the arena back after every run: several sessions in a row (head, SFC, tail) then peak
        # at the largest one instead of the sum of all (the bench turns it on for both strategies)
        self.shrink_arena = shrink_arena
        self.run_options = None
        self.session = None

    def activate(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[self.optimization]
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        model: str | bytes = str(self.path)
        if self.artifact.variant == "custom":
            from sfc_deploy.runtime.ort_custom_op import load_custom_graph

            model, library = load_custom_graph(str(self.path))
            opts.register_custom_ops_library(library)
        elif self.fold_time and self.optimization != "none":
            import onnx

            from sfc_deploy.runtime.ort_fold import fold_time

            model = fold_time(onnx.load(str(self.path))).SerializeToString()
        if self.shrink_arena:
            self.run_options = ort.RunOptions()
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        providers = self.providers or available_providers()
        try:
            self.session = ort.InferenceSession(model, sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types; NOT_IMPLEMENTED for fp16 on CPU
            first = str(exc).strip().splitlines()[0][:300]
            raise BackendUnavailableError(
                f"ONNX Runtime ({', '.join(providers)}) cannot run {self.path.name}: {first}"
            ) from exc

    def deactivate(self) -> None:
        self.session = None

    def _infer_impl(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        arrays = {k: v.detach().cpu().contiguous().numpy() for k, v in feed.items()}
        outputs = self.session.run(self.output_names, arrays, self.run_options)
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, outputs)}
