// How many threads the slot loop decodes with, step by step, following the machine's load (Linux).
//
// ggml's threads meet at a barrier after every operation: when another program (a compile, a test run, the
// app's backend) takes a core, the descheduled helper holds up every step, and a decode on 2 threads beside
// two busy processes fell to 3% of its idle speed. The loop's own thread keeps the priority it was given
// (LLM_NICE, default 0: a fair share against every other program); the helpers run at nice 19, so anything
// else (an embedding, the HTTP thread, another program) takes their core first; and this governor watches
// how long the helpers wait for a core while a decode runs (the kernel's schedstat run delay, sampled around
// decodes only): past a quarter of the decoding time, the next decodes run on one thread fewer, which then
// runs without waiting for anyone. A second or so later it tries one more again, and keeps it when the
// helpers get their core.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#if defined(__linux__)
#include <dirent.h>
#include <sys/types.h>
#endif

namespace bora {

#if defined(__linux__)
using ThreadId = pid_t;

// Thread ids of this process, ascending.
inline std::vector<ThreadId> processThreads() {
    std::vector<ThreadId> out;
    DIR* dir = opendir("/proc/self/task");
    if (dir == nullptr) return out;
    while (dirent* entry = readdir(dir)) {
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
        out.push_back(static_cast<ThreadId>(std::strtol(entry->d_name, nullptr, 10)));
    }
    closedir(dir);
    std::sort(out.begin(), out.end());
    return out;
}

// Nanoseconds a thread of this process has spent runnable but waiting for a CPU; -1 when unknown.
inline int64_t runDelayNs(ThreadId tid) {
    char path[64];
    std::snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", static_cast<int>(tid));
    FILE* file = std::fopen(path, "r");
    if (file == nullptr) return -1;
    unsigned long long onCpu = 0, waiting = 0;
    const int read = std::fscanf(file, "%llu %llu", &onCpu, &waiting);
    std::fclose(file);
    return read == 2 ? static_cast<int64_t>(waiting) : -1;
}
#else
using ThreadId = int;
inline std::vector<ThreadId> processThreads() { return {}; }
inline int64_t runDelayNs(ThreadId) { return -1; }
#endif

class ThreadGovernor {
   public:
    using Clock = std::chrono::steady_clock;
    static constexpr double kBackOffAbove = 0.25;   // helpers waiting this share of the decoding time: one thread fewer
    // A judgement needs this much decoding time sampled (time between decodes never counts: a helper that spins
    // or sleeps there is not held up by anyone).
    static constexpr auto kJudgeAfter = std::chrono::milliseconds(100);
    // At most one sampled decode per this much time (each sample reads the helpers' schedstat twice).
    static constexpr auto kSampleEvery = std::chrono::milliseconds(10);
    static constexpr auto kFirstRetry = std::chrono::seconds(1);
    static constexpr auto kLongestRetry = std::chrono::seconds(8);

    // `helpers`: the pool's threads besides the decoding one, in the order ggml numbers them (creation order).
    void start(int32_t maxThreads, std::vector<ThreadId> helpers) {
        max_ = std::max(1, maxThreads);
        active_ = max_;
        helpers_ = std::move(helpers);
        enabled_ = max_ > 1 && static_cast<int32_t>(helpers_.size()) >= max_ - 1 && runDelayNs(helpers_.front()) >= 0;
    }

    bool enabled() const { return enabled_; }
    int32_t active() const { return active_; }
    int32_t changes() const { return changes_; }

    // Around each decode (the loop thread): the threads for this decode, then what it cost. Only some decodes
    // are sampled (kSampleEvery), so the schedstat reads stay well under 1% of even a tiny model's step.
    int32_t beforeDecode() {
        if (!enabled_) return active_;
        const auto now = Clock::now();
        if (active_ < max_ && now >= nextProbe_ && !probing_) {
            // Try one thread more; the next judgement keeps it or backs off again.
            active_++;
            changes_++;
            probing_ = true;
            resetWindow();
        }
        sampling_ = active_ > 1 && now - lastSample_ >= kSampleEvery;
        if (sampling_) {
            sampleStart_ = now;
            sampleDelayStart_ = activeHelpersDelay();
        }
        return active_;
    }

    void afterDecode() {
        if (!enabled_ || !sampling_) return;
        sampling_ = false;
        const auto now = Clock::now();
        lastSample_ = now;
        sampledTime_ += now - sampleStart_;
        sampledDelayNs_ += std::max<int64_t>(0, activeHelpersDelay() - sampleDelayStart_);
        if (sampledTime_ < kJudgeAfter) return;
        const double decodingNs = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(sampledTime_).count());
        const double waited = static_cast<double>(sampledDelayNs_) / (decodingNs * static_cast<double>(active_ - 1));
        if (waited > kBackOffAbove) {
            active_--;
            changes_++;
            // A probe that failed waits twice as long before the next one.
            retryAfter_ = probing_ ? std::min<Clock::duration>(retryAfter_ * 2, kLongestRetry) : Clock::duration(kFirstRetry);
            nextProbe_ = now + retryAfter_;
        } else if (active_ == max_) {
            retryAfter_ = kFirstRetry;
        } else {
            nextProbe_ = now + retryAfter_;
        }
        probing_ = false;
        resetWindow();
    }

   private:
    void resetWindow() {
        sampledTime_ = Clock::duration::zero();
        sampledDelayNs_ = 0;
    }

    int64_t activeHelpersDelay() const {
        int64_t sum = 0;
        for (int32_t i = 0; i < active_ - 1 && i < static_cast<int32_t>(helpers_.size()); i++) sum += std::max<int64_t>(0, runDelayNs(helpers_[static_cast<size_t>(i)]));
        return sum;
    }

    int32_t max_ = 1;
    int32_t active_ = 1;
    std::vector<ThreadId> helpers_;
    bool enabled_ = false;
    bool probing_ = false;
    bool sampling_ = false;
    Clock::time_point lastSample_{};
    Clock::time_point sampleStart_{};
    int64_t sampleDelayStart_ = 0;
    Clock::duration sampledTime_ = Clock::duration::zero();
    int64_t sampledDelayNs_ = 0;
    Clock::time_point nextProbe_{};
    Clock::duration retryAfter_ = kFirstRetry;
    int32_t changes_ = 0;
};

}  // namespace bora
