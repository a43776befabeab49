// One slot's sampler: llama-server's sampler chain (common_sampler_init's order) plus a grammar applied by
// rejection sampling, as common_sampler_sample does, and logprobs from the raw logits. No N-API: the loop
// core (slot_loop_core.h) owns one per slot and calls it on the loop thread.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "llama.h"

namespace bora::slotloop {

constexpr int32_t kMaxTopLogprobs = 20;

struct SamplingParams {
    float temperature = 0.0f;
    float topP = 1.0f;
    int32_t topK = 0;
    float minP = 0.0f;
    uint32_t seed = 0;
    float repeatPenalty = 1.0f;
    float presencePenalty = 0.0f;
    float frequencyPenalty = 0.0f;
    int32_t penaltyLastN = 64;
    bool ignoreEos = false;
    std::vector<llama_logit_bias> logitBias;  // the request's own biases (OpenAI's logit_bias)
};

class SlotSampler {
   public:
    SlotSampler() = default;
    SlotSampler(const SlotSampler&) = delete;
    SlotSampler& operator=(const SlotSampler&) = delete;
    ~SlotSampler() { free(); }

    // The chain common_sampler_init builds for llama-server, in its order (logit bias, penalties, top-k,
    // top-p, min-p, temperature, dist; the samplers this API cannot turn on are no-ops there), so the same
    // seed and settings give llama-server's tokens. Samplers at their "off" value are left out: each of them
    // returns at once there without touching the candidates. Returns an error, or "".
    std::string build(const SamplingParams& s, const std::string& grammarText, const std::vector<llama_token>& prompt,
                      const llama_vocab* vocab, int32_t nVocab, const std::vector<llama_logit_bias>& noEndBias) {
        free();
        vocab_ = vocab;
        auto params = llama_sampler_chain_default_params();
        params.no_perf = true;
        chain_ = llama_sampler_chain_init(params);
        std::vector<llama_logit_bias> bias = s.logitBias;
        if (s.ignoreEos) bias.insert(bias.end(), noEndBias.begin(), noEndBias.end());
        if (!bias.empty()) llama_sampler_chain_add(chain_, llama_sampler_init_logit_bias(nVocab, static_cast<int32_t>(bias.size()), bias.data()));
        const bool penalties = s.penaltyLastN != 0 && (s.repeatPenalty != 1.0f || s.presencePenalty != 0.0f || s.frequencyPenalty != 0.0f);
        if (penalties) {
            llama_sampler_chain_add(chain_, llama_sampler_init_penalties(nVocab, s.penaltyLastN, s.repeatPenalty, s.frequencyPenalty, s.presencePenalty));
        }
        plainGreedy_ = s.temperature <= 0.0f && !penalties && bias.empty() && grammarText.empty();
        if (s.temperature <= 0.0f) {
            // llama-server's temperature 0 keeps only the highest logit (the first of equal ones): greedy.
            llama_sampler_chain_add(chain_, llama_sampler_init_greedy());
        } else {
            if (s.topK > 0) llama_sampler_chain_add(chain_, llama_sampler_init_top_k(s.topK));
            if (s.topP < 1.0f) llama_sampler_chain_add(chain_, llama_sampler_init_top_p(s.topP, 0));
            if (s.minP > 0.0f) llama_sampler_chain_add(chain_, llama_sampler_init_min_p(s.minP, 0));
            llama_sampler_chain_add(chain_, llama_sampler_init_temp(s.temperature));
            llama_sampler_chain_add(chain_, llama_sampler_init_dist(s.seed));
        }
        if (penalties) {
            // As llama-server's init_sampler: the prompt is in the penalty window (only its last n count).
            const size_t window = static_cast<size_t>(s.penaltyLastN);
            for (size_t i = prompt.size() > window ? prompt.size() - window : 0; i < prompt.size(); i++) llama_sampler_accept(chain_, prompt[i]);
        }
        if (!grammarText.empty()) {
            grammar_ = llama_sampler_init_grammar(vocab, grammarText.c_str(), "root");
            if (grammar_ == nullptr) return "the grammar could not be parsed";
        }
        return "";
    }

    bool hasGrammar() const { return grammar_ != nullptr; }

    // The next token from a slot's logits (LLAMA_TOKEN_NULL: no token can follow), accepted into the chain
    // and the grammar. `candidates` is the loop's scratch of n_vocab entries. May throw (a grammar that
    // cannot accept, an allocation): the caller ends that slot only.
    llama_token sample(const float* logits, std::vector<llama_token_data>& candidates, bool ignoreEos) {
        llama_token id = LLAMA_TOKEN_NULL;
        if (plainGreedy_) {
            // The chain would only pick the maximum: skip copying the vocabulary into candidates.
            id = static_cast<llama_token>(std::max_element(logits, logits + candidates.size()) - logits);
        } else {
            id = applyChain(logits, candidates, false, ignoreEos);
        }
        if (grammar_ != nullptr) {
            // Rejection sampling (common_sampler): check the token against the grammar; only when it is not
            // allowed, apply the grammar to the whole vocabulary and sample again.
            llama_token_data single{id, 1.0f, 0.0f};
            llama_token_data_array one{&single, 1, -1, false};
            if (id != LLAMA_TOKEN_NULL) llama_sampler_apply(grammar_, &one);
            if (id == LLAMA_TOKEN_NULL || single.logit == -INFINITY) id = applyChain(logits, candidates, true, ignoreEos);
        }
        if (id == LLAMA_TOKEN_NULL) return id;
        if (grammar_ != nullptr) llama_sampler_accept(grammar_, id);
        llama_sampler_accept(chain_, id);
        return id;
    }

    void free() {
        if (chain_ != nullptr) llama_sampler_free(chain_);
        if (grammar_ != nullptr) llama_sampler_free(grammar_);
        chain_ = nullptr;
        grammar_ = nullptr;
    }

   private:
    llama_token applyChain(const float* logits, std::vector<llama_token_data>& candidates, bool withGrammar, bool ignoreEos) {
        for (size_t t = 0; t < candidates.size(); t++) candidates[t] = {static_cast<llama_token>(t), logits[t], 0.0f};
        llama_token_data_array cur{candidates.data(), candidates.size(), -1, false};
        if (withGrammar) {
            llama_sampler_apply(grammar_, &cur);
            // Every token the grammar allows may be banned (ignore_eos at the grammar's end): the chain would
            // then pick some -inf token the grammar refuses, and accepting it throws.
            if (!anyAllowed(cur, ignoreEos)) return LLAMA_TOKEN_NULL;
        }
        llama_sampler_apply(chain_, &cur);
        return cur.selected >= 0 && cur.data[cur.selected].logit != -INFINITY ? cur.data[cur.selected].id : LLAMA_TOKEN_NULL;
    }

    bool anyAllowed(const llama_token_data_array& cur, bool ignoreEos) const {
        for (size_t i = 0; i < cur.size; i++) {
            if (cur.data[i].logit == -INFINITY) continue;
            if (ignoreEos && llama_vocab_is_eog(vocab_, cur.data[i].id)) continue;
            return true;
        }
        return false;
    }

    llama_sampler* chain_ = nullptr;
    llama_sampler* grammar_ = nullptr;
    const llama_vocab* vocab_ = nullptr;
    bool plainGreedy_ = false;  // temperature 0 and nothing else in the chain: argmax of the logits
};

// A token's logprob and the `top` most likely tokens, from the log-softmax of the raw logits (before
// penalties, temperature and truncation), as OpenAI and llama-server's n_probs report them.
struct TokenLogprobs {
    float logprob = 0.0f;
    std::vector<llama_token> topIds;
    std::vector<float> topLogprobs;
};

inline TokenLogprobs logprobsOf(const float* logits, int32_t nVocab, llama_token id, int32_t top) {
    TokenLogprobs out;
    float maxLogit = -INFINITY;
    for (int32_t t = 0; t < nVocab; t++) maxLogit = std::max(maxLogit, logits[t]);
    double sum = 0.0;
    for (int32_t t = 0; t < nVocab; t++) sum += std::exp(static_cast<double>(logits[t] - maxLogit));
    const double logSum = static_cast<double>(maxLogit) + std::log(sum);
    out.logprob = static_cast<float>(static_cast<double>(logits[id]) - logSum);
    const int32_t n = std::min(top, std::min(kMaxTopLogprobs, nVocab));
    if (n <= 0) return out;
    std::vector<llama_token> best;
    best.reserve(static_cast<size_t>(n) + 1);
    for (int32_t t = 0; t < nVocab; t++) {
        if (static_cast<int32_t>(best.size()) == n && logits[t] <= logits[best.back()]) continue;
        auto at = std::upper_bound(best.begin(), best.end(), t, [&](llama_token a, llama_token b) { return logits[a] > logits[b]; });
        best.insert(at, t);
        if (static_cast<int32_t>(best.size()) > n) best.pop_back();
    }
    for (llama_token t : best) {
        out.topIds.push_back(t);
        out.topLogprobs.push_back(static_cast<float>(static_cast<double>(logits[t]) - logSum));
    }
    return out;
}

}  // namespace bora::slotloop
