"""Checks for episode 3: embedding lookup, output head, cross-entropy, greedy choice and the sampling distribution."""

import math

import torch

from ..probing import dtype_of, noncontiguous, randint, randn
from ..registry import Episode, case
from .ep02 import inputs as floats

EPISODE = Episode("ep03", "Journey of a Token into the LLM Architecture", video="https://youtu.be/rkEYwH4UGa4",
                  module="ep03_token_journey")


def exact_halvings(gen, c):
    """``(*lead, vocab)`` logits ``-k·ln 2`` whose softmax is exactly 1/2, 1/4, …, 2^-(vocab-1), 2^-(vocab-1)
    (each row in a random order): the mass above each token is exact, so top-p can be checked at an exact tie
    (e.g. top_p = 0.75 = 1/2 + 1/4) with any correct softmax."""
    halvings = torch.tensor([*range(c.vocab - 1), c.vocab - 2], dtype=torch.float64)
    rows = torch.stack([halvings[torch.randperm(c.vocab, generator=gen)] for _ in range(math.prod(c.lead))])
    return (-math.log(2.0) * rows).to(dtype_of(c)).reshape(*c.lead, c.vocab)


def logits_for(gen, c):
    """``(*lead, vocab)`` logits: random (``c.scale``), plus ``c.offset``, or small integers when ``c.ties``."""
    shape = (*c.lead, c.vocab)
    if c.params.get("exact_tie"):
        return exact_halvings(gen, c)
    if c.params.get("ties"):
        x = randint(gen, 4, *shape).to(dtype_of(c))  # few distinct values: many exact ties
        return noncontiguous(x) if c.params.get("noncontiguous") else x
    return floats(gen, c, *shape) + c.params.get("offset", 0.0)


# --- embed_tokens -------------------------------------------------------------------------------------

embed = EPISODE.exercise("embed_tokens")


def embedding_inputs(gen, c):
    return randint(gen, c.vocab, c.b, c.t), floats(gen, c, c.vocab, c.dim)


@embed.check(case(b=2, t=5, vocab=11, dim=4), case(b=1, t=1, vocab=7, dim=3),
             case(b=3, t=2, vocab=6, dim=8, dtype="float64"))
def lookup(impl, c, gen):
    """the rows of the table for random ids"""
    return impl.embed_tokens(*embedding_inputs(gen, c))


@embed.check(case(b=2, t=6, vocab=9, dim=5, noncontiguous=True), case(b=4, t=3, vocab=30, dim=2, dtype="bfloat16"),
             hidden=True)
def hidden_lookup(impl, c, gen):
    """non-contiguous table; bfloat16 table"""
    return impl.embed_tokens(*embedding_inputs(gen, c))


@embed.misconception("scaled_by_sqrt_dim", "DeepSeek's embedding is a plain lookup: return table[token_ids] without "
                     "multiplying by √dim (that scaling is from the original Transformer).")
def _(token_ids, table):
    return table[token_ids] * math.sqrt(table.shape[-1])


@embed.misconception("one_based", "Token ids start at 0: id i is row i of the table (table[token_ids]), not row i - 1.")
def _(token_ids, table):
    return table[token_ids - 1]


# --- lm_head --------------------------------------------------------------------------------------------

head = EPISODE.exercise("lm_head")


def head_inputs(gen, c):
    return floats(gen, c, c.b, c.t, c.dim), randn(gen, c.vocab, c.dim, dtype=dtype_of(c), scale=1 / math.sqrt(c.dim))


@head.check(case(b=2, t=5, dim=4, vocab=9), case(b=1, t=1, dim=3, vocab=7),
            case(b=3, t=2, dim=6, vocab=5, dtype="float64"))
def logits_everywhere(impl, c, gen):
    """logits (b, t, vocab) for every position"""
    return impl.lm_head(*head_inputs(gen, c))


@head.check(case(b=3, t=4, dim=5, vocab=13, noncontiguous=True), case(b=2, t=3, dim=8, vocab=6, scale=50.0),
            hidden=True)
def hidden_logits(impl, c, gen):
    """non-contiguous and large hidden states"""
    return impl.lm_head(*head_inputs(gen, c))


@head.misconception("returns_probabilities", "lm_head returns logits, the raw scores h @ weight.T; the softmax comes "
                    "later (in the loss, or when sampling).")
def _(h, weight):
    return torch.softmax(h @ weight.T, dim=-1)


@head.misconception("last_position_only", "Return the logits of every position, (b, t, vocab): training predicts "
                    "the next token at each position. Only generation keeps the last one.")
def _(h, weight):
    return h[:, -1] @ weight.T


# --- cross_entropy -----------------------------------------------------------------------------------------

ce = EPISODE.exercise("cross_entropy")


def ce_inputs(gen, c):
    return logits_for(gen, c), randint(gen, c.vocab, *c.lead)


@ce.check(case(lead=[2, 3], vocab=7), case(lead=[1, 1], vocab=5), case(lead=[3, 2], vocab=6, dtype="float64"),
          case(lead=[4], vocab=9))
def random_logits(impl, c, gen):
    """mean loss over (b, t) positions, and over (N,) rows"""
    return impl.cross_entropy(*ce_inputs(gen, c))


@ce.check(case(lead=[2, 3], vocab=8, scale=300.0), case(lead=[3, 2], vocab=5, offset=5000.0),
          case(lead=[3, 4], vocab=6, scale=1000.0, dtype="float64"))
def large_logits(impl, c, gen):
    """logits in the hundreds and thousands: no overflow, no log(0)"""
    return impl.cross_entropy(*ce_inputs(gen, c))


@ce.check(case(lead=[3, 4], vocab=10, noncontiguous=True), case(lead=[2, 5], vocab=4, scale=2e4),
          case(lead=[5], vocab=3, offset=-3000.0, dtype="float64"), hidden=True)
def hidden_logits_ce(impl, c, gen):
    """non-contiguous; huge positive and negative logits"""
    return impl.cross_entropy(*ce_inputs(gen, c))


def _log_softmax(logits, dim):
    return logits - torch.logsumexp(logits, dim=dim, keepdim=True)


def _nll(log_probs, targets):
    return -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@ce.misconception("naive_log_softmax", "log(exp(x) / sum(exp(x))) overflows (inf/inf) or underflows (log 0) for "
                  "large logits. Use log_z = max + log(sum(exp(x - max))) and loss = log_z - x[target].")
def _(logits, targets):
    p = torch.exp(logits) / torch.exp(logits).sum(dim=-1, keepdim=True)
    return _nll(torch.log(p), targets).mean()


@ce.misconception("log_of_softmax", "torch.log(torch.softmax(...)) underflows: an unlikely target's probability "
                  "rounds to 0 and log(0) = -inf. Stay in log space: loss = logsumexp(logits) - logits[target] (or "
                  "torch.log_softmax).")
def _(logits, targets):
    return _nll(torch.log(torch.softmax(logits, dim=-1)), targets).mean()


@ce.misconception("sum_not_mean", "F.cross_entropy averages over the positions (reduction='mean'); you summed.")
def _(logits, targets):
    return _nll(_log_softmax(logits, -1), targets).sum()


@ce.misconception("class_axis_1", "F.cross_entropy wants the classes at dim 1, but here the vocabulary is the *last* "
                  "axis of (b, t, vocab): normalise over dim=-1.")
def _(logits, targets):
    return _nll(_log_softmax(logits, 1 if logits.dim() > 2 else 0), targets).mean()


# --- greedy_next_token ------------------------------------------------------------------------------------

greedy = EPISODE.exercise("greedy_next_token")


@greedy.check(case(lead=[3], vocab=7), case(lead=[1], vocab=1), case(lead=[2], vocab=9, dtype="float64"))
def random_logits_greedy(impl, c, gen):
    """the id of the largest logit in every row"""
    return impl.greedy_next_token(logits_for(gen, c))


@greedy.check(case(lead=[6], vocab=5, ties=True))
def tied_logits(impl, c, gen):
    """equal maxima: the lowest id wins"""
    return impl.greedy_next_token(logits_for(gen, c))


@greedy.check(case(lead=[2, 3], vocab=6, noncontiguous=True), case(lead=[4], vocab=8, ties=True, noncontiguous=True),
              case(lead=[3], vocab=50, offset=1e4), hidden=True)
def hidden_greedy(impl, c, gen):
    """(b, t, vocab) leading dims; non-contiguous ties; large logits"""
    return impl.greedy_next_token(logits_for(gen, c))


@greedy.misconception("returns_values", "logits.max(dim=-1) returns (values, indices); the next token is the index: "
                      "logits.argmax(dim=-1).")
def _(logits):
    return logits.max(dim=-1).values


@greedy.misconception("wrong_axis", "Take the argmax over the vocabulary, the last axis (dim=-1), one id per row.")
def _(logits):
    return logits.argmax(dim=0)


@greedy.misconception("last_of_ties", "Among equal maxima pick the lowest id (what argmax returns), not the last one.")
def _(logits):
    return logits.shape[-1] - 1 - logits.flip(-1).argmax(dim=-1)


# --- sampling_distribution --------------------------------------------------------------------------------

sampling = EPISODE.exercise("sampling_distribution")

FILTERS = ("temperature", "top_k", "top_p")


def distribution(impl, c, gen):
    options = {k: c.params[k] for k in FILTERS if k in c.params}
    return impl.sampling_distribution(logits_for(gen, c), **options)


@sampling.check(case(lead=[3], vocab=8, temperature=0.7), case(lead=[2], vocab=5, temperature=1.5),
                case(lead=[1], vocab=6, dtype="float64"), case(lead=[2], vocab=1))
def temperature_only(impl, c, gen):
    """softmax(logits / temperature); a single-token vocabulary"""
    return distribution(impl, c, gen)


@sampling.check(case(lead=[3], vocab=9, top_k=3, scale=2.0), case(lead=[4], vocab=6, top_k=2, ties=True),
                case(lead=[2], vocab=5, top_k=7))
def top_k_only(impl, c, gen):
    """top-k: keep the k largest (ties with the k-th all kept; k ≥ vocab keeps all)"""
    return distribution(impl, c, gen)


@sampling.check(case(lead=[4], vocab=10, top_p=0.8, scale=2.0), case(lead=[3], vocab=6, top_p=0.5, temperature=0.5),
                case(lead=[3], vocab=7, top_p=0.3, temperature=3.0, scale=2.0), case(lead=[2], vocab=4, top_p=1.0),
                case(lead=[5], vocab=6, top_p=0.6, ties=True), case(lead=[5], vocab=4, top_p=0.75, exact_tie=True))
def top_p_only(impl, c, gen):
    """top-p: the most probable tokens until their mass reaches p (the crossing token and its ties included; a
    token whose more probable tokens already hold exactly p is dropped)"""
    return distribution(impl, c, gen)


@sampling.check(case(lead=[3], vocab=12, temperature=0.6, top_k=5, top_p=0.7, scale=2.0),
                case(lead=[4], vocab=8, temperature=2.5, top_k=4, top_p=0.6, scale=2.0))
def all_three(impl, c, gen):
    """temperature, then top-k, then top-p"""
    return distribution(impl, c, gen)


@sampling.check(case(lead=[2, 3], vocab=9, temperature=0.8, top_k=6, top_p=0.75, scale=2.0, noncontiguous=True),
                case(lead=[6], vocab=5, top_p=0.45, ties=True), case(lead=[4], vocab=7, top_k=3, top_p=0.9, ties=True),
                case(lead=[3], vocab=10, temperature=3.0, top_k=6, top_p=0.5, scale=3.0, dtype="float64"),
                case(lead=[2], vocab=8, temperature=0.9, top_p=0.85, scale=20.0, offset=1000.0),
                case(lead=[2], vocab=3, top_p=0.5, exact_tie=True), hidden=True)
def hidden_distributions(impl, c, gen):
    """(b, t, vocab) non-contiguous; ties; float64; large logits"""
    return distribution(impl, c, gen)


def _reference(logits, temperature=1.0, top_k=None, top_p=None):
    from solutions.ep03_token_journey import sampling_distribution

    return sampling_distribution(logits, temperature, top_k, top_p)


def _only(logits, kept):
    """``logits`` with everything outside ``kept`` set to -inf."""
    return logits.masked_fill(~kept, float("-inf"))


@sampling.misconception("temperature_multiplied", "Divide the logits by the temperature: a temperature below 1 "
                        "must sharpen the distribution, above 1 flatten it.")
def _(logits, temperature=1.0, top_k=None, top_p=None):
    return _reference(logits, 1.0 / temperature, top_k, top_p)


@sampling.misconception("temperature_last", "Apply the temperature first: top-p must measure the mass of the "
                        "temperature-scaled distribution, softmax(logits / temperature).")
def _(logits, temperature=1.0, top_k=None, top_p=None):
    kept = _reference(logits, 1.0, top_k, top_p) > 0
    return _reference(_only(logits, kept), temperature)


@sampling.misconception("top_p_before_top_k", "The order is temperature, then top-k, then top-p: top-p measures "
                        "the mass of the distribution renormalised over the top-k survivors.")
def _(logits, temperature=1.0, top_k=None, top_p=None):
    kept = _reference(logits, temperature, None, top_p) > 0
    return _reference(_only(logits, kept), temperature, top_k)


def _sorted_top_p(logits, temperature, top_k, top_p, rule, descending=True):
    """Top-p as a sort-based recipe decides it (for the variants below): ``rule(sorted probs) -> keep``."""
    probs = _reference(logits, temperature, top_k)
    if top_p is None:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=descending, stable=True)
    keep_sorted = rule(sorted_probs)
    kept = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return _reference(_only(logits, kept), temperature)


def _first(x):
    """True at the first position of the last axis."""
    return torch.arange(x.shape[-1]) == 0


@sampling.misconception("top_p_drops_crossing_token", "Keep the token that makes the cumulative mass reach top_p: "
                        "a token stays if the mass ranked *before* it is < top_p (exclusive cumsum).")
def _(logits, temperature=1.0, top_k=None, top_p=None):
    return _sorted_top_p(logits, temperature, top_k, top_p, lambda s: (s.cumsum(-1) <= top_p) | _first(s))


@sampling.misconception("top_p_breaks_ties", "Tokens exactly as probable as the last token top-p keeps are all "
                        "kept: a token stays when the mass of the tokens *strictly* more probable is < top_p, "
                        "whatever order the sort put the ties in.")
def _(logits, temperature=1.0, top_k=None, top_p=None):
    return _sorted_top_p(logits, temperature, top_k, top_p, lambda s: s.cumsum(-1) - s < top_p)


@sampling.misconception("top_p_ascending_ties", "Sorting ascending and dropping tokens while the cumulative mass "
                        "is <= 1 - top_p breaks ties arbitrarily. Keep every token whose strictly-more-probable mass "
                        "is < top_p, so tokens tied with the last kept one stay too.")
def _(logits, temperature=1.0, top_k=None, top_p=None):
    return _sorted_top_p(logits, temperature, top_k, top_p,
                         lambda s: (s.cumsum(-1) > 1 - top_p) | _first(s).flip(-1), descending=False)


@sampling.misconception("top_p_keeps_at_threshold", "A token stays only while the mass of the tokens more probable "
                        "than it is *strictly* below top_p (mass_before < top_p): when the tokens before it reach "
                        "top_p exactly, it is dropped.")
def _(logits, temperature=1.0, top_k=None, top_p=None):
    probs = _reference(logits, temperature, top_k)
    if top_p is None or top_p >= 1.0:
        return probs
    sorted_probs = probs.sort(dim=-1, descending=True).values
    n_kept = (sorted_probs.cumsum(dim=-1) - sorted_probs <= top_p).sum(dim=-1, keepdim=True)
    return _reference(_only(logits, probs >= sorted_probs.gather(-1, n_kept - 1)), temperature)


@sampling.misconception("top_k_breaks_ties", "Tokens tied with the k-th largest logit are all kept: compare with "
                        "the k-th value (z >= kth), do not keep exactly k indices from topk.")
def _(logits, temperature=1.0, top_k=None, top_p=None):
    if top_k is None or top_k >= logits.shape[-1]:
        return _reference(logits, temperature, None, top_p)
    index = logits.topk(top_k, dim=-1).indices
    kept = torch.zeros(logits.shape, dtype=torch.bool).scatter(-1, index, True)
    return _reference(_only(logits, kept), temperature, None, top_p)


@sampling.misconception("top_k_drops_kth", "Keep the tokens whose logit is at least the k-th largest (z >= kth); "
                        "with z > kth only k - 1 tokens survive.")
def _(logits, temperature=1.0, top_k=None, top_p=None):
    if top_k is None or top_k >= logits.shape[-1]:
        return _reference(logits, temperature, None, top_p)
    return _reference(_only(logits, logits > logits.topk(top_k, dim=-1).values[..., -1:]), temperature, None, top_p)


@sampling.misconception("not_renormalised", "After zeroing the tokens top-p removes, divide by the remaining mass "
                        "so that each row sums to 1 again.")
def _(logits, temperature=1.0, top_k=None, top_p=None):
    return _reference(logits, temperature, top_k) * (_reference(logits, temperature, top_k, top_p) > 0)
