// A persistent ggml CPU threadpool attached to one llama_context (both addons use it). No N-API.
#pragma once

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <thread>
#include <vector>

#include "ggml-backend.h"
#include "llama.h"
#include "thread_governor.h"

namespace bora {

// A persistent CPU threadpool for one context, as llama.cpp's own tools attach one: its threads live as
// long as the context instead of being started and joined inside every llama_decode (the default when
// none is attached). `poll` is ggml's polling level after a graph: 0 sleeps at once, 50 (llama.cpp's
// default) spins a while for the next one. The thread that runs the decodes computes too (ggml's thread 0)
// at its own priority; the pool's helper threads are created by a short-lived thread at `helperNice`
// (Linux: nice is per thread and inherited at creation), and their ids are kept for the thread governor.
// On a build with OpenMP the pool only carries the thread count (OpenMP's team does the work) and this
// changes nothing. Without a CPU backend (or its entry points) nothing is attached.
class CpuThreadpool {
   public:
    CpuThreadpool() = default;
    CpuThreadpool(const CpuThreadpool&) = delete;
    CpuThreadpool& operator=(const CpuThreadpool&) = delete;
    ~CpuThreadpool() { release(); }

    bool attach(llama_context* ctx, int32_t threads, uint32_t poll, int32_t helperNice = 0) {
        release();
        ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
        if (cpu == nullptr) return false;
        ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu);
        auto* create = reinterpret_cast<ggml_threadpool_t (*)(ggml_threadpool_params*)>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new"));
        freePool = reinterpret_cast<void (*)(ggml_threadpool_t)>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free"));
        if (create == nullptr || freePool == nullptr) return false;
        ggml_threadpool_params params = ggml_threadpool_params_default(threads);
        params.poll = poll;
        const auto before = processThreads();
        std::thread creator([&] {
#if defined(__linux__)
            if (helperNice > 0) setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), helperNice);
#endif
            pool = create(&params);
        });
        creator.join();
        if (pool == nullptr) return false;
        helpers_.clear();
        const auto after = processThreads();
        std::set_difference(after.begin(), after.end(), before.begin(), before.end(), std::back_inserter(helpers_));
        llama_attach_threadpool(ctx, pool, pool);
        attachedTo = ctx;
        return true;
    }

    // Call before llama_free of the context it is attached to.
    void release() {
        if (pool == nullptr) return;
        if (attachedTo != nullptr) llama_detach_threadpool(attachedTo);
        freePool(pool);
        pool = nullptr;
        helpers_.clear();
        attachedTo = nullptr;
    }

    // The helper threads' ids (Linux), in creation order (ggml's thread numbers 1..n-1).
    const std::vector<ThreadId>& helpers() const { return helpers_; }

   private:
    std::vector<ThreadId> helpers_;
    ggml_threadpool_t pool = nullptr;
    llama_context* attachedTo = nullptr;
    void (*freePool)(ggml_threadpool_t) = nullptr;
};

}  // namespace bora
