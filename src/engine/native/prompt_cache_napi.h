// N-API side of the prompt cache (prompt_cache.h): turns task results and counters into JS values and
// JS arguments into tasks and imported entries. slot_loop.cpp's SlotLoop methods are thin forwards here.
#pragma once

#include <napi.h>

#include <cstring>
#include <memory>
#include <string>

#include "prompt_cache.h"

namespace bora {

inline const char* cacheTierName(int32_t tier) {
    static const char* names[kCacheTiers] = {"none", "slot", "copy", "host", "disk"};
    return tier >= 0 && tier < kCacheTiers ? names[tier] : "none";
}

/** cacheTask(kind: "snapshot"|"slotSave"|"slotRestore"|"slotErase", slot, path, byteBudget) arguments -> a task. */
inline std::unique_ptr<CacheTask> cacheTaskFromJs(const Napi::CallbackInfo& info, uint32_t id, int32_t slotCount) {
    Napi::Env env = info.Env();
    if (info.Length() < 4 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsString() || !info[3].IsNumber()) {
        throw Napi::TypeError::New(env, "cacheTask(kind, slot, path, byteBudget) expected");
    }
    auto task = std::make_unique<CacheTask>();
    task->id = id;
    const std::string kind = info[0].As<Napi::String>().Utf8Value();
    if (kind == "snapshot") task->kind = CacheTask::Snapshot;
    else if (kind == "slotSave") task->kind = CacheTask::SlotSave;
    else if (kind == "slotRestore") task->kind = CacheTask::SlotRestore;
    else if (kind == "slotErase") task->kind = CacheTask::SlotErase;
    else throw Napi::RangeError::New(env, "unknown cache task " + kind);
    task->slot = info[1].As<Napi::Number>().Int32Value();
    if (task->kind != CacheTask::Snapshot && (task->slot < 0 || task->slot >= slotCount)) throw Napi::RangeError::New(env, "no such slot");
    task->path = info[2].As<Napi::String>().Utf8Value();
    const double budget = info[3].As<Napi::Number>().DoubleValue();
    task->byteBudget = budget > 0 ? static_cast<size_t>(budget) : 0;
    return task;
}

inline Napi::Value cacheTaskToJs(Napi::Env env, const CacheTask& task) {
    auto result = Napi::Object::New(env);
    if (!task.error.empty()) result.Set("error", Napi::String::New(env, task.error));
    result.Set("tokens", Napi::Number::New(env, static_cast<double>(task.tokens)));
    result.Set("bytes", Napi::Number::New(env, static_cast<double>(task.bytes)));
    result.Set("ms", Napi::Number::New(env, task.ms));
    auto entries = Napi::Array::New(env, task.entries.size());
    for (size_t i = 0; i < task.entries.size(); i++) {
        const auto& entry = task.entries[i];
        auto object = Napi::Object::New(env);
        auto tokens = Napi::Uint32Array::New(env, entry.tokens.size());
        for (size_t k = 0; k < entry.tokens.size(); k++) tokens[k] = static_cast<uint32_t>(entry.tokens[k]);
        object.Set("tokens", tokens);
        // Null: the entry's file is on disk already.
        if (entry.state.empty()) object.Set("state", env.Null());
        else object.Set("state", Napi::Buffer<uint8_t>::Copy(env, entry.state.data(), entry.state.size()));
        object.Set("hits", Napi::Number::New(env, entry.hits));
        entries.Set(static_cast<uint32_t>(i), object);
    }
    result.Set("entries", entries);
    return result;
}

/** cacheImport(tokens: Uint32Array, state: Uint8Array, hits) -> whether the entry was kept. */
inline Napi::Value cacheImportFromJs(const Napi::CallbackInfo& info, PromptCache& cache, int32_t nVocab) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsNumber()) {
        throw Napi::TypeError::New(env, "cacheImport(tokens: Uint32Array, state: Uint8Array, hits: number) expected");
    }
    const auto tokensIn = info[0].As<Napi::Uint32Array>();
    const auto stateIn = info[1].As<Napi::Uint8Array>();
    std::vector<llama_token> tokens(tokensIn.ElementLength());
    for (size_t i = 0; i < tokens.size(); i++) {
        if (tokensIn[i] >= static_cast<uint32_t>(nVocab)) return Napi::Boolean::New(env, false);
        tokens[i] = static_cast<llama_token>(tokensIn[i]);
    }
    std::vector<uint8_t> state(stateIn.ByteLength());
    if (!state.empty()) std::memcpy(state.data(), stateIn.Data(), state.size());
    const uint32_t hits = info[2].As<Napi::Number>().Uint32Value();
    return Napi::Boolean::New(env, !tokens.empty() && !state.empty() && cache.importEntry(std::move(tokens), std::move(state), hits));
}

inline Napi::Value cacheStatsToJs(Napi::Env env, PromptCache& cache) {
    auto& s = cache.stats;
    auto result = Napi::Object::New(env);
    auto hits = Napi::Object::New(env);
    auto tokens = Napi::Object::New(env);
    for (int32_t tier = 1; tier < kCacheTiers; tier++) {
        hits.Set(cacheTierName(tier), Napi::Number::New(env, static_cast<double>(s.hits[tier].load())));
        tokens.Set(cacheTierName(tier), Napi::Number::New(env, static_cast<double>(s.tokens[tier].load())));
    }
    result.Set("hits", hits);
    result.Set("tokens", tokens);
    result.Set("misses", Napi::Number::New(env, static_cast<double>(s.misses.load())));
    result.Set("restoreSeconds", Napi::Number::New(env, static_cast<double>(s.restoreNs.load()) / 1e9));
    result.Set("restores", Napi::Number::New(env, static_cast<double>(s.restores.load())));
    result.Set("saves", Napi::Number::New(env, static_cast<double>(s.saves.load())));
    result.Set("evictions", Napi::Number::New(env, static_cast<double>(s.evictions.load())));
    result.Set("savedStateBytes", Napi::Number::New(env, static_cast<double>(s.stateBytes.load())));
    result.Set("savedTokens", Napi::Number::New(env, static_cast<double>(s.savedTokens.load())));
    result.Set("hostBytes", Napi::Number::New(env, static_cast<double>(cache.hostBytes())));
    result.Set("hostEntries", Napi::Number::New(env, static_cast<double>(cache.hostEntries())));
    result.Set("changes", Napi::Number::New(env, static_cast<double>(cache.changeCount())));
    return result;
}

}  // namespace bora
