import torch

from rlhfv.models.text_lm import tiny_text_lm
from rlhfv.rollout import completion_ends, generate, sequence_logprobs
from rlhfv.types import Prompt

PROMPTS = [Prompt("What colour is the circle?"), Prompt("How many shapes are there in this image?")]


def test_rollout_is_prompt_major_with_masks_that_end_at_eos():
    policy = tiny_text_lm(seed=1)
    torch.manual_seed(0)
    r = generate(policy, PROMPTS, group_size=3, max_new_tokens=7, labels=["red", "2"])
    n, t = r.completion_ids.shape
    assert n == 6 and t <= 7 and len(r.texts) == 6 and r.complete.shape == (6,)
    assert r.prompt_batch["input_ids"].shape[0] == 6
    # rows b·G + k repeat prompt b
    assert torch.equal(r.prompt_batch["input_ids"][0], r.prompt_batch["input_ids"][2])
    assert not torch.equal(r.prompt_batch["input_ids"][2], r.prompt_batch["input_ids"][3])
    for ids, mask, done in zip(r.completion_ids, r.completion_mask, r.complete, strict=True):
        length = int(mask.sum())
        assert torch.equal(mask[:length], torch.ones(length, dtype=mask.dtype))  # contiguous from the start
        eos = (ids[:length] == policy.eos_token_id).nonzero().flatten().tolist()
        if done:
            assert eos == [length - 1]  # ends with its one EOS
        else:
            assert eos == [] and length == 7  # cut by the length limit


def test_a_completion_cut_by_the_length_limit_is_incomplete():
    policy = tiny_text_lm(seed=2)
    eos, pad = policy.eos_token_id, policy.pad_token_id
    ids = torch.tensor([[5, 6, eos, 9], [5, 6, 7, 8]])
    ids, mask, complete = completion_ends(ids, policy, (), max_new_tokens=4)
    assert complete.tolist() == [True, False]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert ids[0, 3].item() == pad


def test_stop_strings_end_a_completion_and_count_as_complete():
    policy = tiny_text_lm(seed=3)
    tok = policy.tokenizer
    ids = torch.tensor([tok("red. Then more words", add_special_tokens=False)["input_ids"]])
    ids, mask, complete = completion_ends(ids, policy, (".",), max_new_tokens=ids.shape[1])
    kept = tok.decode(ids[0][mask[0].bool()].tolist())
    assert complete.tolist() == [True]
    assert kept.rstrip().endswith(".") and "Then" not in kept


def test_greedy_rollout_matches_the_model_generate_and_is_deterministic():
    policy = tiny_text_lm(seed=4)
    a = generate(policy, PROMPTS, group_size=2, max_new_tokens=5, greedy=True)
    b = generate(policy, PROMPTS, group_size=2, max_new_tokens=5, greedy=True)
    assert a.texts == b.texts and a.texts[0] == a.texts[1]


def test_sequence_logprobs_match_a_full_forward_pass_and_are_zero_where_masked():
    policy = tiny_text_lm(seed=5)
    torch.manual_seed(0)
    r = generate(policy, PROMPTS, group_size=2, max_new_tokens=6, temperature=0.7)
    lp = sequence_logprobs(policy, r.prompt_batch, r.completion_ids, r.completion_mask, temperature=0.7)
    # reference: whole-sequence logits, explicit log_softmax
    ids = torch.cat([r.prompt_batch["input_ids"], r.completion_ids], 1)
    att = torch.cat([r.prompt_batch["attention_mask"], r.completion_mask], 1)
    logits = (
        policy.module(input_ids=ids, attention_mask=att).logits[:, -r.completion_ids.shape[1] - 1 : -1] / 0.7
    )
    ref = torch.log_softmax(logits, -1).gather(-1, r.completion_ids[..., None])[..., 0] * r.completion_mask
    assert torch.allclose(lp, ref, atol=1e-5)
    assert (lp[r.completion_mask == 0] == 0).all()
    assert (lp[r.completion_mask == 1] < 0).all()


def test_sharing_each_prompt_across_its_group_gives_the_same_logprobs_and_gradients():
    policy = tiny_text_lm(seed=6)
    torch.manual_seed(1)
    prompts = [Prompt("Red?"), Prompt("How many shapes are there in this image, counting all of them?")]
    r = generate(policy, prompts, group_size=3, max_new_tokens=6)
    assert (r.prompt_batch["attention_mask"] == 0).any()  # left padding is part of the check
    grads = []
    for g in (1, 3):
        policy.module.zero_grad()
        lp = sequence_logprobs(policy, r.prompt_batch, r.completion_ids, r.completion_mask, 0.9, group_size=g)
        (lp * torch.linspace(-1, 1, lp.numel()).view_as(lp)).sum().backward()
        grads.append((lp.detach(), [p.grad.clone() for p in policy.module.parameters()]))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads[0][1], grads[1][1], strict=True))


def test_prompts_with_a_reading_are_answered_in_two_passes_and_keep_the_reading_rollout():
    import pytest

    from rlhfv.types import READING_SLOT

    policy = tiny_text_lm(seed=1)
    question = Prompt("How many shapes are there?")
    judged = [Prompt(f"Judge these. Mine: {READING_SLOT} End.", reading=question) for _ in range(2)]
    greedy = generate(policy, judged, group_size=2, max_new_tokens=4, greedy=True)
    alone = generate(policy, [question], group_size=1, max_new_tokens=32, greedy=True)
    assert greedy.reading is not None and greedy.reading.texts == alone.texts * 4  # one reading, reused
    filled = generate(
        policy, [Prompt(f"Judge these. Mine: {alone.texts[0].strip()} End.")], 1, 4, greedy=True
    )
    assert greedy.texts == filled.texts * 4  # the second pass saw the slot filled in
    torch.manual_seed(0)
    sampled = generate(policy, judged[:1], group_size=3, max_new_tokens=4)
    reading = sampled.reading
    assert reading.completion_ids.shape[0] == 3 and len(set(reading.texts)) > 1  # each row reads on its own
    logprobs = sequence_logprobs(
        policy, reading.select(slice(0, 3)), reading.completion_ids, reading.completion_mask
    )
    assert (logprobs[reading.completion_mask == 0] == 0).all() and (
        logprobs[reading.completion_mask == 1] < 0
    ).all()
    with pytest.raises(ValueError, match="no Prompt.reading"):
        generate(policy, [judged[0], question], group_size=1, max_new_tokens=2)


def test_the_sampler_draws_from_the_distribution_sequence_logprobs_computes():
    """Image placeholders are suppressed in both; a checkpoint's own sampling settings in neither."""
    from PIL import Image

    from rlhfv.models.hf_vlm import tiny_qwen2_vl

    policy = tiny_qwen2_vl(seed=0)
    assert policy.suppressed_tokens  # the image placeholders
    gen = policy.module.generation_config
    gen.repetition_penalty, gen.no_repeat_ngram_size, gen.suppress_tokens = 1.3, 2, [7, 8, 9]
    prompts = [Prompt("What colour is it?", [Image.new("RGB", (64, 64), (200, 30, 30))])]
    torch.manual_seed(0)
    r = generate(policy, prompts, group_size=4, max_new_tokens=10, temperature=0.7)
    with torch.no_grad():
        lp = sequence_logprobs(policy, r.prompt_batch, r.completion_ids, r.completion_mask, temperature=0.7)
    m = r.completion_mask.bool()
    assert m.sum() > 8 and r.sampler_logprobs is not None
    torch.testing.assert_close(r.sampler_logprobs[m], lp[m], rtol=0, atol=1e-5)
    plain = sequence_logprobs(policy.module, r.prompt_batch, r.completion_ids, r.completion_mask, 0.7)
    assert (plain - lp)[m].abs().max() > 1e-3  # without the suppression the distributions differ
    assert gen.repetition_penalty == 1.3  # the model's own config is left as it was


def test_a_shared_prompt_prefix_is_encoded_once_and_changes_no_token():
    """Judge prompts share ~170 tokens of instructions: encoded once, the greedy completions and
    the sampled log-probabilities are those of encoding every row whole."""
    from rlhfv.grm.prompts import pointwise_prompt
    from rlhfv.rollout import shared_prefix_batch

    policy = tiny_text_lm(seed=0)
    prompts = [
        pointwise_prompt("What is 3 + 4?", ["3 + 4 = 7.", "3 + 4 = 8."]),
        pointwise_prompt(
            "How many letters are in the word 'cat'?", ["It has 4 letters.", "It has 3 letters."]
        ),
        pointwise_prompt("Which number is larger, 12 or 21?", ["21.", "12."]),
    ]
    batch = policy.encoder(prompts)
    rearranged, cache = shared_prefix_batch(policy, batch)
    n_shared = cache.get_seq_length()
    assert (
        n_shared >= 32
        and (rearranged["input_ids"][:, :n_shared] == rearranged["input_ids"][:1, :n_shared]).all()
    )
    assert (
        rearranged["attention_mask"].sum(1).tolist() == batch["attention_mask"].sum(1).tolist()
    )  # no token lost
    whole = generate(policy, prompts, 2, 10, greedy=True, share_prefix=False)
    shared = generate(policy, prompts, 2, 10, greedy=True, share_prefix=True)
    assert shared.texts == whole.texts
    torch.manual_seed(3)
    a = generate(policy, prompts, 2, 6, temperature=1.0, share_prefix=False)
    torch.manual_seed(3)
    b = generate(policy, prompts, 2, 6, temperature=1.0, share_prefix=True)
    assert a.texts == b.texts
    assert torch.allclose(a.sampler_logprobs, b.sampler_logprobs, atol=1e-4)
    assert torch.equal(
        b.prompt_batch["input_ids"], batch["input_ids"].repeat_interleave(2, 0)
    )  # consumers see plain rows


def test_prompts_without_a_long_common_prefix_are_not_rearranged():
    from rlhfv.rollout import shared_prefix_batch

    policy = tiny_text_lm(seed=0)
    assert shared_prefix_batch(policy, policy.encoder([Prompt("a b c"), Prompt("d e f")])) is None
    assert shared_prefix_batch(policy, policy.encoder([Prompt("one prompt " * 40)])) is None


def test_sharing_prompts_falls_back_to_the_plain_path_while_the_layers_are_checkpointed():
    # A checkpointed layer in training keeps no KV cache, so the shared prompt cache would be empty.
    policy = tiny_text_lm(seed=6, gradient_checkpointing=True)
    plain = tiny_text_lm(seed=6)
    torch.manual_seed(1)
    prompts = [Prompt("Red?"), Prompt("How many shapes are there in this image, counting all of them?")]
    r = generate(policy, prompts, group_size=3, max_new_tokens=6)
    results = []
    for model, g in ((plain, 3), (policy, 3)):
        model.module.train().zero_grad()
        lp = sequence_logprobs(model, r.prompt_batch, r.completion_ids, r.completion_mask, 0.9, group_size=g)
        (lp * torch.linspace(-1, 1, lp.numel()).view_as(lp)).sum().backward()
        results.append((lp.detach(), [p.grad.clone() for p in model.module.parameters()]))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(results[0][1], results[1][1], strict=True))


class _LogitTable(torch.nn.Module):
    """A stand-in policy whose logits [N, L, V] are a learned table lookup, stored in bf16 as a bf16
    model's are, so that the float32 copy made for the log-softmax is visible by its dtype."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, input_ids, attention_mask, use_cache=False, logits_to_keep=0):
        from types import SimpleNamespace

        logits = self.table.to(torch.bfloat16)[input_ids]  # [N, L, V]
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


def test_chunked_logprobs_equal_the_whole_batch_and_keep_no_float32_logits_for_backward():
    torch.manual_seed(0)
    vocab, n, p, t = 53, 6, 4, 7
    module = _LogitTable(vocab)
    batch = {"input_ids": torch.randint(vocab, (n, p)), "attention_mask": torch.ones(n, p, dtype=torch.long)}
    ids, mask = torch.randint(vocab, (n, t)), (torch.rand(n, t) > 0.2).long()
    runs = []
    for rows in (None, 1, 4):  # None: one chunk here (small); 4 leaves a last chunk of 2 rows
        saved: list[torch.Tensor] = []
        module.zero_grad()
        with torch.autograd.graph.saved_tensors_hooks(lambda x, keep=saved: keep.append(x) or x, lambda x: x):
            lp = sequence_logprobs(module, batch, ids, mask, 0.7, suppressed_tokens=[3, 11], chunk_rows=rows)
        (lp * torch.linspace(-1, 1, lp.numel()).view_as(lp)).sum().backward()
        big_float32 = [x for x in saved if x.dtype == torch.float32 and x.dim() == 3 and x.shape[-1] == vocab]
        distinct = {x.data_ptr(): x.shape[0] for x in big_float32}  # a tensor may be saved by two ops
        runs.append((lp.detach(), module.table.grad.clone(), sum(distinct.values())))
    (lp_all, grad_all, kept_all), *chunked = runs
    assert kept_all == n  # unchunked: backward keeps the float32 logits of every row
    for lp_c, grad_c, kept in chunked:
        assert torch.equal(lp_c, lp_all)
        assert torch.allclose(grad_c, grad_all, atol=1e-6, rtol=0)
        assert kept == 0  # chunked: each chunk's float32 copy is recomputed in backward
    with torch.no_grad():  # no autograd: chunks are computed directly
        assert torch.equal(
            sequence_logprobs(module, batch, ids, mask, 0.7, suppressed_tokens=[3, 11], chunk_rows=2), lp_all
        )
