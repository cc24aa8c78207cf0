// sfc_classify: classify one video tensor with an sfc-deploy export folder.
//
//   sfc_classify --export DIR --input video.pt [--format torchscript|aoti] [--threads N]
//                [--shape N,3,T,H,W (for a raw .bin input)] [--out logits.bin]
//
// Prints one line per batch row: "row <i>: class <argmax>" and the logits; --out also writes
// the logits as raw float32. Exit 0 on success, 2 with a one-line message on bad input.
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "sfc_runner.h"

namespace {

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v <= 0) {
      throw sfc::RunnerError("--shape '" + text + "' is not a list of positive ints like 1,3,16,64,64");
    }
    shape.push_back(v);
  }
  return shape;
}

void usage() {
  std::fprintf(stderr,
               "usage: sfc_classify --export DIR --input FILE.pt|FILE.bin [--format torchscript|aoti]\n"
               "                    [--shape N,3,T,H,W] [--threads N] [--out LOGITS.bin]\n");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    sfc::ClassifierOptions options;
    std::string input, out;
    std::vector<int64_t> shape;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "-h" || arg == "--help") {
        usage();
        return 0;
      }
      if (i + 1 >= argc) throw sfc::RunnerError("option " + arg + " needs a value");
      const std::string value = argv[++i];
      if (arg == "--export") options.export_dir = value;
      else if (arg == "--input") input = value;
      else if (arg == "--format") options.format = sfc::parse_format(value);
      else if (arg == "--threads") options.threads = std::atoi(value.c_str());
      else if (arg == "--shape") shape = parse_shape(value);
      else if (arg == "--out") out = value;
      else throw sfc::RunnerError("unknown option " + arg + "; see --help");
    }
    if (options.export_dir.empty() || input.empty()) {
      usage();
      throw sfc::RunnerError("--export and --input are required");
    }
    sfc::Classifier classifier(options);
    const sfc::HostTensor video = sfc::read_tensor(input, shape);
    const sfc::Prediction p = classifier.classify(video);
    const int64_t classes = p.logits_shape.at(1);
    for (size_t row = 0; row < p.top1.size(); ++row) {
      std::printf("row %zu: class %lld logits", row, static_cast<long long>(p.top1[row]));
      for (int64_t c = 0; c < classes; ++c) std::printf(" %.6g", p.logits[row * classes + c]);
      std::printf("\n");
    }
    if (!out.empty()) sfc::write_raw(out, p.logits);
    return 0;
  } catch (const sfc::RunnerError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
