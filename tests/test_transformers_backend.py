"""TransformersBackend against real (tiny, random-weight) checkpoints saved and loaded back.

The checkpoints are untied Llama models with a wide weight init, so that greedy output
depends on the whole context and on positions (a tied, default-init random model only
repeats its last input character, which would hide KV-cache or position-id mistakes).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import char_tokenizer  # noqa: E402

from ttc.backends.errors import BadInputError, CheckpointError  # noqa: E402
from ttc.backends.transformers_backend import TransformersBackend, checkpoint_digest  # noqa: E402
from ttc.backends.types import SamplingParams  # noqa: E402

PROMPTS = ["hello", "a much longer prompt, here", "x", "12+7="]


def build(path: Path, *, seed: int = 0, ctx: int = 128) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = char_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=ctx,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False, initializer_range=0.3,
    )
    model = LlamaForCausalLM(cfg)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls run faster on one thread, and the CPUs here are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("ckpt") / "tiny-a")


@pytest.fixture(scope="module")
def backend(ckpt) -> TransformersBackend:
    b = TransformersBackend(ckpt, device="cpu")
    yield b
    b.close()


def greedy(max_tokens=12, **kw) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, **kw)


def ids_of(backend, text):
    return backend.tokenizer(text, add_special_tokens=True)["input_ids"]


# ---------------------------------------------------------------- greedy consistency


def test_greedy_same_alone_batched_and_with_n(backend):
    alone = [backend.generate([p], greedy())[0].completions[0] for p in PROMPTS]
    # Outputs must actually differ by prompt, or the checks below prove nothing.
    assert len({c.text for c in alone}) == len(PROMPTS)
    batched = backend.generate(PROMPTS, greedy())
    assert [g.completions[0].token_ids for g in batched] == [c.token_ids for c in alone]
    assert [g.completions[0].text for g in batched] == [c.text for c in alone]
    many = backend.generate(PROMPTS, greedy(n=3))
    for g, a in zip(many, alone):
        assert len(g.completions) == 3
        for c in g.completions:
            assert c.token_ids == a.token_ids and c.text == a.text


def test_greedy_matches_hf_generate(backend):
    for prompt in PROMPTS[:2]:
        mine = backend.generate([prompt], greedy(max_tokens=16))[0].completions[0]
        ids = torch.tensor([ids_of(backend, prompt)])
        with torch.inference_mode():
            out = backend.model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16,
                pad_token_id=backend.tokenizer.pad_token_id,
            )
        assert mine.token_ids == out[0, ids.shape[1]:].tolist()


def test_greedy_logprobs_match_a_full_forward_pass(backend):
    prompt = PROMPTS[1]
    c = backend.generate([prompt, "x"], greedy(max_tokens=12, logprobs=True))[0].completions[0]
    assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens == len(c.token_ids)
    assert all(lp <= 0 for lp in c.logprobs)
    full = torch.tensor([ids_of(backend, prompt) + c.token_ids])
    with torch.inference_mode():
        lp = torch.log_softmax(backend.model(full).logits[0].float(), -1)
    plen = len(ids_of(backend, prompt))
    expected = [lp[plen - 1 + i, t].item() for i, t in enumerate(c.token_ids)]
    assert c.logprobs == pytest.approx(expected, abs=1e-4)


def test_logprobs_absent_unless_asked(backend):
    c = backend.generate(["hi"], greedy(max_tokens=3))[0].completions[0]
    assert c.logprobs is None


def test_sampled_logprobs_are_nonpositive(backend):
    gens = backend.generate(PROMPTS[:2], SamplingParams(max_tokens=10, n=3, seed=3, logprobs=True))
    for g in gens:
        for c in g.completions:
            assert len(c.logprobs) == c.completion_tokens
            assert all(lp <= 0 for lp in c.logprobs)


# ---------------------------------------------------------------- sampling and counts


def test_seeded_sampling_is_reproducible(backend):
    params = SamplingParams(temperature=1.0, max_tokens=8, n=3, seed=7)
    a = backend.generate(PROMPTS[:2], params)
    b = backend.generate(PROMPTS[:2], params)
    assert [[c.token_ids for c in g.completions] for g in a] == [[c.token_ids for c in g.completions] for g in b]
    # The n samples of one prompt are not copies of each other.
    assert len({tuple(c.token_ids) for c in a[0].completions}) > 1
    other = backend.generate(PROMPTS[:2], params.model_copy(update={"seed": 8}))
    assert [[c.token_ids for c in g.completions] for g in other] != [[c.token_ids for c in g.completions] for g in a]


def test_token_counts_are_exact_and_eos_counts(backend):
    eos = backend.tokenizer.eos_token_id
    prompt = "hello"
    plen = len(ids_of(backend, prompt))
    assert backend.count_tokens(prompt) == plen
    g = backend.generate([prompt], SamplingParams(temperature=1.0, max_tokens=30, n=8, seed=1))[0]
    assert g.prompt_tokens == plen and g.usage.prompt_tokens == plen
    assert g.usage.calls == 1
    assert g.usage.completion_tokens == sum(len(c.token_ids) for c in g.completions)
    saw_eos = False
    for c in g.completions:
        assert c.completion_tokens == len(c.token_ids)
        if c.token_ids[-1] == eos:
            saw_eos = True
            assert c.finish_reason == "stop"
            assert c.text == backend.tokenizer.decode(c.token_ids[:-1], skip_special_tokens=True)
            assert eos not in c.token_ids[:-1]
        else:
            assert c.finish_reason == "length" and c.completion_tokens == 30
            assert eos not in c.token_ids
        assert "</s>" not in c.text
    assert saw_eos, "seed 1 was chosen so that some sample ends with eos"


def test_prompt_counted_once_however_large_n(backend):
    for n in (1, 5):
        gens = backend.generate(PROMPTS, greedy(max_tokens=4, n=n))
        for p, g in zip(PROMPTS, gens):
            assert g.usage.prompt_tokens == g.prompt_tokens == backend.count_tokens(p)
            assert g.usage.completion_tokens == sum(c.completion_tokens for c in g.completions)
            assert len(g.completions) == n
            assert g.model == backend.name


def test_max_tokens_gives_length(backend):
    for c in (g.completions[0] for g in backend.generate(PROMPTS, greedy(max_tokens=5))):
        if c.finish_reason == "length":
            assert c.completion_tokens == 5 and len(c.token_ids) == 5
        else:  # greedy hit eos first
            assert c.token_ids[-1] == backend.tokenizer.eos_token_id and c.completion_tokens <= 5


def test_ignore_eos_generates_exactly_max_tokens(backend):
    eos = backend.tokenizer.eos_token_id
    params = SamplingParams(temperature=1.0, max_tokens=30, n=8, seed=1, ignore_eos=True)
    g = backend.generate(["hello"], params)[0]
    assert all(c.completion_tokens == 30 == len(c.token_ids) for c in g.completions)
    assert all(c.finish_reason == "length" for c in g.completions)
    assert any(eos in c.token_ids for c in g.completions)
    assert g.usage.completion_tokens == 8 * 30


# ---------------------------------------------------------------- stop strings


def _pick_stop(text: str, avoid: list[str]) -> str:
    for k in range(3, len(text) - 2):
        s = text[k : k + 2]
        if text.find(s) == k and not any(s in a for a in avoid):
            return s
    pytest.skip("no usable stop string in this model's output")


def test_stop_string_cuts_text_and_others_continue(backend):
    texts = [g.completions[0].text for g in backend.generate(PROMPTS[:2], greedy(max_tokens=16))]
    assert len(texts[0]) == 16  # one character per token: no eos, no special token
    stop = _pick_stop(texts[0], [texts[1]])
    gens = backend.generate(PROMPTS[:2], greedy(max_tokens=16, n=2, stop=(stop, "\x07never\x07")))
    for c in gens[0].completions:
        cut = texts[0].find(stop)
        assert c.text == texts[0][:cut]
        assert c.finish_reason == "stop"
        # The tokens of the stop string were generated and are billed (char tokenizer).
        assert c.completion_tokens == cut + len(stop) == len(c.token_ids)
    for c in gens[1].completions:
        assert c.text == texts[1] and c.finish_reason == "length" and c.completion_tokens == 16
    assert gens[0].usage.completion_tokens == 2 * (texts[0].find(stop) + len(stop))


def test_stop_string_never_generated_changes_nothing(backend):
    plain = backend.generate(PROMPTS[:2], greedy(max_tokens=12))
    stopped = backend.generate(PROMPTS[:2], greedy(max_tokens=12, stop=("\x07\x07",)))
    assert [g.completions[0].model_dump() for g in plain] == [g.completions[0].model_dump() for g in stopped]


# ---------------------------------------------------------------- context limit


@pytest.fixture(scope="module")
def short_ctx(ckpt, tmp_path_factory) -> TransformersBackend:
    """The same weights with a 16-token context (RoPE has no learned positions)."""
    path = tmp_path_factory.mktemp("short") / "tiny-ctx16"
    shutil.copytree(ckpt, path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["max_position_embeddings"] = 16
    (path / "config.json").write_text(json.dumps(cfg))
    return TransformersBackend(path, device="cpu")


def test_context_caps_generation(short_ctx):
    assert short_ctx.info.max_context == 16
    prompt = "abcdefghi"  # 9 chars + BOS = 10 tokens
    assert short_ctx.count_tokens(prompt) == 10
    gens = short_ctx.generate([prompt, "abcdefghijklmn"], greedy(max_tokens=50, ignore_eos=True))
    assert [g.completions[0].completion_tokens for g in gens] == [6, 1]
    assert all(g.completions[0].finish_reason == "length" for g in gens)


def test_prompt_longer_than_context_is_bad_input(short_ctx):
    with pytest.raises(BadInputError):
        short_ctx.generate(["abcdefghijklmnopqrstuvwxyz"], greedy(max_tokens=2))
    with pytest.raises(BadInputError):
        short_ctx.generate(["abcdefghijklmno"], greedy(max_tokens=2))  # 16 tokens: no room left
    with pytest.raises(BadInputError):
        short_ctx.count_tokens("abcdefghijklmnopqrstuvwxyz")
    with pytest.raises(BadInputError):
        short_ctx.stream("abcdefghijklmnopqrstuvwxyz", greedy(max_tokens=2))


# ---------------------------------------------------------------- streaming


def test_stream_deltas_concatenate_to_greedy_text(backend):
    prompt = PROMPTS[1]
    full = backend.generate([prompt], greedy(max_tokens=16))[0]
    stream = backend.stream(prompt, greedy(max_tokens=16))
    assert stream.generation is None
    deltas = list(stream)
    assert len(deltas) > 1 and all(deltas)
    assert "".join(deltas) == full.completions[0].text
    g = stream.generation
    assert g is not None
    assert g.usage.prompt_tokens == full.usage.prompt_tokens
    assert g.usage.completion_tokens == full.usage.completion_tokens
    assert g.completions[0].token_ids == full.completions[0].token_ids
    assert g.completions[0].finish_reason == full.completions[0].finish_reason
    with pytest.raises(StopIteration):
        next(stream)


def test_stream_never_emits_a_partial_stop_string(backend):
    prompt = PROMPTS[0]
    texts = [g.completions[0].text for g in backend.generate(PROMPTS[:2], greedy(max_tokens=16))]
    stop = _pick_stop(texts[0], [])
    # A second stop string that starts like text the model does write, but never completes:
    # its first character is held back, then released.
    teaser = texts[0][1] + "\x07\x07"
    params = greedy(max_tokens=16, stop=(stop, teaser))
    expected = backend.generate([prompt], params)[0]
    stream = backend.stream(prompt, params)
    emitted = ""
    for d in stream:
        emitted += d
        assert expected.completions[0].text.startswith(emitted)
        assert stop not in emitted
    assert emitted == expected.completions[0].text == texts[0][: texts[0].find(stop)]
    assert stream.generation.completions[0].finish_reason == "stop"
    assert stream.generation.usage.completion_tokens == expected.usage.completion_tokens


def test_stream_close_bills_what_was_generated(backend):
    stream = backend.stream(PROMPTS[1], greedy(max_tokens=40, ignore_eos=True))
    got = [next(stream) for _ in range(3)]
    stream.close()
    g = stream.generation
    assert g is not None
    c = g.completions[0]
    assert 3 <= c.completion_tokens < 40
    assert c.completion_tokens == len(c.token_ids) == g.usage.completion_tokens
    assert g.usage.prompt_tokens == backend.count_tokens(PROMPTS[1])
    assert c.finish_reason == "stop"
    assert c.text.startswith("".join(got))
    with pytest.raises(StopIteration):
        next(stream)
    stream.close()  # twice is harmless
    assert stream.generation is g


def test_stream_needs_n_of_one_and_generate_needs_a_list(backend):
    with pytest.raises(BadInputError):
        backend.stream("hi", greedy(n=2))
    with pytest.raises(BadInputError):
        backend.generate("hi", greedy())
    assert backend.generate([], greedy()) == []


# ---------------------------------------------------------------- loading and ModelInfo


def test_missing_path_is_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError) as e:
        TransformersBackend(tmp_path / "nope", device="cpu")
    assert e.value.exit_code == 2


def test_directory_without_config_is_checkpoint_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(CheckpointError) as e:
        TransformersBackend(tmp_path, device="cpu")
    assert e.value.exit_code == 2
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CheckpointError):
        TransformersBackend(f, device="cpu")


def test_corrupt_config_is_checkpoint_error(ckpt, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    (bad / "config.json").write_text("{ this is not json")
    with pytest.raises(CheckpointError) as e:
        TransformersBackend(bad, device="cpu")
    assert e.value.exit_code == 2
    assert isinstance(e.value, BadInputError)


def test_model_info(backend, ckpt):
    info = backend.info
    assert info.name == backend.name == "tiny-a"
    assert info.path == str(ckpt)
    assert (info.layers, info.hidden_size, info.intermediate_size) == (2, 64, 128)
    assert (info.attention_heads, info.kv_heads, info.head_dim) == (4, 2, 16)
    assert info.vocab_size == len(backend.tokenizer)
    assert info.max_context == 128
    assert info.dtype_bytes == 4  # float32 on CPU
    assert info.kv_dim == 32
    assert info.kv_bytes_per_token == 2 * 2 * 32 * 4
    total = sum(p.numel() for p in backend.model.parameters())
    assert info.parameters == total
    embed = backend.model.get_input_embeddings().weight.numel()
    assert info.non_embedding_parameters == total - embed  # untied: the output head counts
    assert info.checkpoint_digest == checkpoint_digest(ckpt)
    assert len(info.checkpoint_digest) == 64


def test_digest_stable_across_loads_and_differs_by_weights(backend, ckpt, tmp_path):
    again = TransformersBackend(ckpt, name="other-name", device="cpu")
    assert again.info.checkpoint_digest == backend.info.checkpoint_digest
    assert again.name == "other-name"
    other = TransformersBackend(build(tmp_path / "tiny-b", seed=1), device="cpu")
    assert other.info.checkpoint_digest != backend.info.checkpoint_digest


def test_tied_embeddings_count_the_output_projection(tmp_path):
    """cost.py: N is every per-token matmul's parameters; a tied output head counts."""
    from _tiny import make_checkpoint

    b = TransformersBackend(make_checkpoint(tmp_path / "tied"), device="cpu")
    total = sum(p.numel() for p in b.model.parameters())
    assert b.info.parameters == total
    # The input lookup is free, but the (shared) output projection is a real matmul.
    assert b.info.non_embedding_parameters == total


def test_learned_positions_survive_left_padding(tmp_path):
    """RoPE is blind to a uniform position shift; GPT-2's learned positions are not.

    Batched greedy output equal to the prompt alone and to HF generate proves that
    left-padded rows get positions counted from their first real token.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = char_tokenizer()
    cfg = GPT2Config(
        vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64, initializer_range=0.3,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    path = tmp_path / "gpt2-tiny"
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    b = TransformersBackend(path, device="cpu")
    prompts = ["hello", "a much longer prompt, here"]
    alone = [b.generate([p], greedy(max_tokens=10))[0].completions[0].token_ids for p in prompts]
    batched = [g.completions[1].token_ids for g in b.generate(prompts, greedy(max_tokens=10, n=2))]
    assert batched == alone
    ids = torch.tensor([ids_of(b, prompts[0])])
    with torch.inference_mode():
        out = b.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10,
                               pad_token_id=tok.pad_token_id)
    assert alone[0] == out[0, ids.shape[1]:].tolist()


# ---------------------------------------------------------------- stop-string detection


def test_stop_string_split_by_special_tokens_is_found(backend):
    """Special tokens decode to nothing, so "a<s><s>b" reads "ab" and must hit stop "ab"."""
    from ttc.backends.transformers_backend import _Decoder

    tok = backend.tokenizer
    a, b = tok.convert_tokens_to_ids(["a", "b"])
    d = _Decoder(backend, [ids_of(backend, "hi")], greedy(stop=("ab",)))
    d.tokens[0] = [tok.convert_tokens_to_ids("x"), a, tok.bos_token_id, tok.pad_token_id, b]
    assert d._hits_stop(0)
    d.tokens[0] = [a, tok.bos_token_id, tok.pad_token_id, a]
    assert not d._hits_stop(0)


def _byte_level_checkpoint(path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    t = Tokenizer(models.BPE(vocab, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    t.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_multibyte_stop_string_with_a_byte_level_tokenizer(tmp_path):
    """One character of three UTF-8 bytes spans three byte tokens; the stop check must see them all."""
    from ttc.backends.transformers_backend import _Decoder

    b = TransformersBackend(_byte_level_checkpoint(tmp_path / "bytes"), device="cpu")
    ids = b.tokenizer("ok。", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2 + 3 and b.tokenizer.decode(ids) == "ok。"
    d = _Decoder(b, [b.tokenizer("hi")["input_ids"]], greedy(stop=("。",)))
    d.tokens[0] = ids
    assert d._hits_stop(0)
    d.stop_hit[0] = True
    assert d.text(0) == "ok"


def test_bad_device_or_dtype_is_bad_input(ckpt):
    for kw in ({"device": "gpu"}, {"device": "cuda:x"}, {"device": "cpu", "dtype": "float99"},
               {"device": "cpu", "dtype": "nn"}):
        with pytest.raises(BadInputError) as e:
            TransformersBackend(ckpt, **kw)
        assert e.value.exit_code == 2
    if not torch.cuda.is_available():
        with pytest.raises(BadInputError):
            TransformersBackend(ckpt, device="cuda")
    half = TransformersBackend(ckpt, device="cpu", dtype="bfloat16")
    assert half.info.dtype_bytes == 2 and half.model.dtype == torch.bfloat16


def test_stream_closed_before_reading_bills_the_prefill(backend):
    stream = backend.stream("hello", greedy(max_tokens=5))
    stream.close()
    g = stream.generation
    assert g.usage.prompt_tokens == backend.count_tokens("hello")
    assert g.usage.completion_tokens == 0 and g.completions[0].text == ""
    assert list(stream) == []


def test_qwen2_checkpoint_keeps_its_character_tokenizer(tmp_path):
    """transformers 5's AutoTokenizer swaps in Qwen2's byte-level pre-tokenizer for any
    qwen2 checkpoint, dropping the spaces of a character tokenizer; the backend must not."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ttc.backends.transformers_backend import load_tokenizer
    from ttc.tasks.tokenizer import build_tokenizer

    tok = build_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    expected = tok("45 26\n3").input_ids
    assert load_tokenizer(tmp_path)("45 26\n3").input_ids == expected
    backend = TransformersBackend(tmp_path, device="cpu")
    assert backend.count_tokens("45 26\n3") == len(expected) == 8
