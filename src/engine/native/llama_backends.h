// Shared by the two addons (batch_embed.cpp, slot_loop.cpp): finding the libllama this process loaded,
// registering ggml's backends when node-llama-cpp has not (a standalone test of an addon), systemInfo().
#pragma once

#include <napi.h>

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "cpu_threadpool.h"
#include "ggml-backend.h"
#include "llama.h"

namespace bora {

// Directory of the libllama that is actually loaded in this process (node-llama-cpp's bins dir).
inline std::string loadedLlamaLibraryDir() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&llama_model_load_from_file), &info) == 0 || info.dli_fname == nullptr) return "";
    std::string file(info.dli_fname);
    const auto slash = file.find_last_of('/');
    return slash == std::string::npos ? std::string(".") : file.substr(0, slash);
}

// Used only when node-llama-cpp has not initialised llama.cpp in this process (it installs its own
// logger): keep warnings and errors, drop llama.cpp's verbose info/debug output.
inline void quietLog(enum ggml_log_level level, const char* text, void* /*userData*/) {
    static enum ggml_log_level lastLevel = GGML_LOG_LEVEL_INFO;
    if (level != GGML_LOG_LEVEL_CONT) lastLevel = level;
    if (lastLevel == GGML_LOG_LEVEL_WARN || lastLevel == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
        fflush(stderr);
    }
}

// node-llama-cpp's getLlama() registers the ggml backends of the binding it chose (the CPU variants are
// separate shared objects loaded at run time); only when nobody did, load them from the directory of
// the libllama this addon is linked to.
inline void ensureBackendsLoaded() {
    if (ggml_backend_dev_count() > 0) return;
    llama_log_set(quietLog, nullptr);
    llama_backend_init();
    const std::string dir = loadedLlamaLibraryDir();
    if (!dir.empty()) ggml_backend_load_all_from_path(dir.c_str());
    if (ggml_backend_dev_count() == 0) ggml_backend_load_all();
}

// The addons' `systemInfo()`: which backends are registered and which libllama serves them.
inline Napi::Value systemInfo(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto result = Napi::Object::New(env);
    result.Set("backendDevices", Napi::Number::New(env, static_cast<double>(ggml_backend_dev_count())));
    result.Set("llamaLibraryDir", Napi::String::New(env, loadedLlamaLibraryDir()));
    result.Set("llamaSystemInfo", Napi::String::New(env, llama_print_system_info()));
    return result;
}

}  // namespace bora
