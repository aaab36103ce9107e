"""Each patch in patches/ is needed (the stock stack fails) and correct (independent check)."""
import copy
import subprocess
import sys

import numpy as np
import paddle
import pytest

import patches
from conftest import ROOT, tiny_bert_config

VERSION = patches.paddle_version()


def numpy_layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


# --- zlib_first ------------------------------------------------------------------------

GZIP_AFTER_PADDLE = "import paddle, gzip; print(len(gzip.decompress(gzip.compress(b'hello' * 1000))))"


@pytest.mark.skipif(VERSION >= (3, 3), reason="libpaddle >= 3.3 no longer exports its own zlib")
def test_zlib_first_import_keeps_gzip_working_after_paddle():
    with_patch = subprocess.run(
        [sys.executable, "-c", "import patches; " + GZIP_AFTER_PADDLE], cwd=ROOT, capture_output=True, text=True
    )
    assert with_patch.returncode == 0, with_patch.stderr[-500:]
    assert with_patch.stdout.strip().endswith("5000")
    if VERSION < (3, 0):  # the crash itself is documented for 2.6.x (Paddle issue #70538)
        without = subprocess.run([sys.executable, "-c", GZIP_AFTER_PADDLE], cwd="/", capture_output=True)
        assert without.returncode != 0


# --- quiet_imports -----------------------------------------------------------------------

STACK_IMPORTS = "import paddle, paddleslim, paddlenlp.transformers"
START_UP_NOISE = ("No ccache found", "Setuptools is replacing distutils", "module compiled against ABI version")


def test_quiet_imports_leave_stderr_empty_where_the_stock_imports_print_noise():
    quiet = subprocess.run([sys.executable, "-c", "import patches; " + STACK_IMPORTS], cwd=ROOT,
                           capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr[-500:]
    assert quiet.stderr == ""
    stock = subprocess.run([sys.executable, "-c", "import zlib; " + STACK_IMPORTS], cwd="/",
                           capture_output=True, text=True)
    assert stock.returncode == 0, stock.stderr[-500:]
    assert any(message in stock.stderr for message in START_UP_NOISE), stock.stderr  # both stacks print some


def test_quiet_imports_block_only_an_opencv_that_cannot_load():
    probe = ("import patches, sys, numpy, paddle; cv2 = sys.modules.get('cv2', 'absent'); "
             "print('blocked' if cv2 is None else 'absent' if cv2 == 'absent' else 'loaded', numpy.__version__[0])")
    state, numpy_major = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                                        text=True).stdout.split()
    # paddleslim's opencv-python 4.6.0.66 is built for numpy 1: it loads on the numpy-1 stack only.
    # Without the patch, paddle's failed import leaves no cv2 entry at all ("absent").
    assert state == ("blocked" if numpy_major == "2" else "loaded")


# --- super_layernorm_forward ------------------------------------------------------------

def _super_layernorm_outputs(batch):
    from paddleslim.nas.ofa.layers import SuperLayerNorm

    paddle.seed(1)
    layer = SuperLayerNorm(8)
    layer.weight.set_value(paddle.uniform([8], min=0.5, max=1.5))
    layer.bias.set_value(paddle.uniform([8]))
    x = np.random.RandomState(batch).randn(batch, 5, 6).astype("float32")  # narrower than 8: a subnet
    expected = numpy_layer_norm(x, layer.weight.numpy()[:6], layer.bias.numpy()[:6], layer._epsilon)
    return layer(paddle.to_tensor(x)), expected


@pytest.mark.parametrize("batch", [1, 2, 3, 4])
def test_super_layernorm_forward_matches_numpy_for_every_batch_size(batch):
    patches.apply(only=("super_layernorm_forward", "super_layernorm_init"))
    out, expected = _super_layernorm_outputs(batch)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_stock_super_layernorm_forward_is_wrong_at_batch_3():
    patches.apply(only=("super_layernorm_init",))  # constructing one needs it on paddle 3.3
    out, expected = _super_layernorm_outputs(3)  # stock: unpacks the batch dimension
    assert list(out.shape) != list(expected.shape)
    with pytest.raises(ValueError):
        _super_layernorm_outputs(2)


# --- super_embedding_init / super_layernorm_init ------------------------------------------

def _convert_tiny_bert():
    from paddlenlp.transformers import BertForSequenceClassification
    from paddleslim.nas.ofa.convert_super import Convert, supernet

    model = BertForSequenceClassification(tiny_bert_config())
    return Convert(supernet(expand_ratio=[0.5, 1.0])).convert(model)


@pytest.mark.skipif(VERSION < (3, 2), reason="paddle < 3.2 accepts the positional arguments")
def test_convert_fails_on_new_paddle_without_init_patches():
    patches.apply(only=("super_layernorm_forward",))
    with pytest.raises(TypeError):
        _convert_tiny_bert()


def test_convert_with_patches_builds_super_layers_like_the_original():
    from paddleslim.nas.ofa.layers import SuperEmbedding, SuperLayerNorm

    active = patches.apply()
    assert ("super_embedding_init" in active) == (VERSION >= (3, 2))
    assert ("super_layernorm_init" in active) == (VERSION >= (3, 3))
    model = _convert_tiny_bert()
    emb = model.bert.embeddings.word_embeddings.fn
    assert isinstance(emb, SuperEmbedding)
    assert emb.candidate_config == {"expand_ratio": [0.5, 1.0]}
    assert (emb.expand_ratio, emb.base_output_dim, emb.cur_config) == ([0.5, 1.0], 32, None)
    assert emb.weight.shape == [40, 32] and emb._padding_idx is None and emb._sparse is False
    norm = model.bert.encoder.layers[0].norm1
    assert isinstance(norm, SuperLayerNorm)
    assert norm.weight.shape == [32] and norm.cur_config is None and norm._epsilon == 1e-12


# --- bert_list_mask_forward --------------------------------------------------------------

def test_stock_bert_forward_rejects_a_list_mask(tiny_bert, tiny_batch):
    ids, types = tiny_batch
    with pytest.raises(AttributeError, match="ndim"):
        tiny_bert(ids, token_type_ids=types, attention_mask=[None, None])


def test_patched_forward_equals_stock_forward(tiny_bert, tiny_batch):
    ids, types = tiny_batch
    stock = tiny_bert(ids, token_type_ids=types).numpy()
    two_d = tiny_bert(ids, token_type_ids=types, attention_mask=(ids != 0).astype("int64")).numpy()
    patches.apply(only=("bert_list_mask_forward",))
    np.testing.assert_allclose(tiny_bert(ids, token_type_ids=types).numpy(), stock, atol=1e-6)
    np.testing.assert_allclose(
        tiny_bert(ids, token_type_ids=types, attention_mask=[None, None]).numpy(), stock, atol=1e-6
    )
    np.testing.assert_allclose(
        tiny_bert(ids, token_type_ids=types, attention_mask=(ids != 0).astype("int64")).numpy(), two_d, atol=1e-6
    )


def test_patched_forward_returns_every_hidden_state(tiny_bert, tiny_batch):
    ids, types = tiny_batch
    patches.apply(only=("bert_list_mask_forward",))
    logits, hidden = tiny_bert(ids, token_type_ids=types, output_hidden_states=True)
    assert len(hidden) == 1 + 3
    embeddings = tiny_bert.bert.embeddings(input_ids=ids, token_type_ids=types)
    np.testing.assert_allclose(hidden[0].numpy(), embeddings.numpy(), atol=1e-6)
    sequence, _ = tiny_bert.bert(ids, token_type_ids=types)
    np.testing.assert_allclose(hidden[-1].numpy(), sequence.numpy(), atol=1e-6)


def test_patched_forward_skips_layers_like_a_shallower_model(tiny_bert, tiny_batch):
    from paddlenlp.transformers import BertForSequenceClassification

    ids, types = tiny_batch
    shallow = BertForSequenceClassification(tiny_bert_config(num_hidden_layers=2))
    state = tiny_bert.state_dict()
    for new, old in enumerate([0, 2]):  # an independent 2-layer model holding layers 0 and 2
        for key in list(state):
            prefix = f"bert.encoder.layers.{old}."
            if key.startswith(prefix):
                state[f"bert.encoder.layers.{new}." + key[len(prefix):]] = state[key]
    shallow.set_state_dict({k: v for k, v in state.items() if not k.startswith("bert.encoder.layers.2.")})
    shallow.eval()
    expected = shallow.bert(ids, token_type_ids=types)[0].numpy()
    patches.apply(only=("bert_list_mask_forward",))
    got = tiny_bert.bert(ids, token_type_ids=types, layer_indices=[0, 2])[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_stock_classifier_cannot_skip_layers_and_the_patched_one_equals_the_bert_path(tiny_bert, tiny_batch):
    ids, types = tiny_batch
    with pytest.raises(TypeError):
        tiny_bert(ids, token_type_ids=types, layer_indices=[0, 2])
    patches.apply(only=("bert_classifier_layer_indices",))
    pooled = tiny_bert.bert(ids, token_type_ids=types, layer_indices=[0, 2])[1]
    expected = tiny_bert.classifier(pooled).numpy()  # eval mode: dropout is the identity
    logits, hidden = tiny_bert(ids, token_type_ids=types, layer_indices=[0, 2], output_hidden_states=True)
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-6)
    assert len(hidden) == 3
    full = tiny_bert(ids, token_type_ids=types).numpy()  # no layer_indices: the stock forward
    np.testing.assert_allclose(tiny_bert(ids, token_type_ids=types, layer_indices=[0, 1, 2]).numpy(), full, atol=1e-6)
    assert not np.allclose(logits.numpy(), full, atol=1e-4)


def test_head_mask_zeroes_heads_and_gives_head_gradients(tiny_bert, tiny_batch):
    ids, types = tiny_batch
    patches.apply(only=("bert_list_mask_forward",))
    ones = paddle.ones([3, 4])
    full = tiny_bert(ids, token_type_ids=types, attention_mask=[None, ones]).numpy()
    np.testing.assert_allclose(full, tiny_bert(ids, token_type_ids=types).numpy(), atol=1e-6)
    # Masking head 1 of layer 0 equals zeroing its rows of the attention output projection.
    mask = np.ones([3, 4], "float32")
    mask[0, 1] = 0
    masked = tiny_bert(ids, token_type_ids=types, attention_mask=[None, paddle.to_tensor(mask)]).numpy()
    edited = copy.deepcopy(tiny_bert)
    weight = edited.bert.encoder.layers[0].self_attn.out_proj.weight
    w = weight.numpy()
    w[8:16, :] = 0  # head_dim 8: head 1 is rows 8..15 of the [in, out] weight
    weight.set_value(w)
    np.testing.assert_allclose(masked, edited(ids, token_type_ids=types).numpy(), atol=1e-6)
    # The head mask is differentiable: that gradient is head importance.
    head_mask = paddle.ones([3, 4])
    head_mask.stop_gradient = False
    tiny_bert(ids, token_type_ids=types, attention_mask=[None, head_mask]).sum().backward()
    assert head_mask.grad is not None and float(paddle.abs(head_mask.grad).sum()) > 0


def test_stock_encoder_layer_rejects_a_list_mask_and_the_patched_one_equals_stock(tiny_bert, tiny_batch):
    ids, types = tiny_batch
    layer = tiny_bert.bert.encoder.layers[0]
    x = tiny_bert.bert.embeddings(input_ids=ids, token_type_ids=types)
    mask = paddle.unsqueeze((ids == 0).astype("float32") * -1e4, axis=[1, 2])
    stock = layer(x, mask).numpy()
    with pytest.raises(AttributeError, match="'list' object has no attribute 'dtype'"):  # stock reads mask.dtype
        layer(x, [mask, None])
    patches.apply(only=("encoder_layer_list_mask_forward",))
    np.testing.assert_allclose(layer(x, [mask, None]).numpy(), stock, atol=1e-6)
    np.testing.assert_allclose(layer(x, mask).numpy(), stock, atol=1e-6)  # tensor masks: the stock path


def test_forward_hooks_on_encoder_layers_fire(tiny_bert, tiny_batch):
    """PaddleSlim's DistillConfig captures hidden states with forward hooks on each layer."""
    ids, types = tiny_batch
    patches.apply(only=("bert_list_mask_forward",))
    captured = {}
    handle = tiny_bert.bert.encoder.layers[1].register_forward_post_hook(
        lambda layer, inputs, output: captured.setdefault("out", output))
    _, hidden = tiny_bert(ids, token_type_ids=types, output_hidden_states=True)
    handle.remove()
    np.testing.assert_allclose(captured["out"].numpy(), hidden[2].numpy(), atol=0)


def test_patched_forward_does_not_write_into_the_callers_mask_list(tiny_bert, tiny_batch):
    ids, types = tiny_batch
    patches.apply(only=("bert_list_mask_forward",))
    shared = [None, None]
    tiny_bert(ids, token_type_ids=types, attention_mask=shared)
    assert shared == [None, None]


def test_patches_never_import_nlp_utils_nor_touch_paddle_attention():
    stock_mha = paddle.nn.MultiHeadAttention.forward
    stock_encoder = paddle.nn.TransformerEncoder.forward
    patches.apply()
    assert "paddleslim.nas.ofa.utils.nlp_utils" not in sys.modules
    assert paddle.nn.MultiHeadAttention.forward is stock_mha
    assert paddle.nn.TransformerEncoder.forward is stock_encoder  # only the layer forward is extended


def test_apply_is_idempotent_and_restore_brings_back_the_originals():
    from paddlenlp.transformers import BertModel
    from paddleslim.nas.ofa.layers import SuperLayerNorm

    stock_bert, stock_sln = BertModel.forward, SuperLayerNorm.forward
    first = patches.apply()
    patched_bert = BertModel.forward
    assert patches.apply() == first and BertModel.forward is patched_bert
    assert patched_bert is not stock_bert and SuperLayerNorm.forward is not stock_sln
    patches.restore()
    assert patches.applied() == []
    assert BertModel.forward is stock_bert and SuperLayerNorm.forward is stock_sln


# --- no_strided_views (a flag) --------------------------------------------------------------

def test_no_strided_views_makes_transposes_real_copies_and_restore_brings_views_back():
    """Stock paddle >= 2.6 returns a strided view from transpose, which every CPU op reading it must
    first copy through a slow generic kernel; patched, transpose runs its own kernel and returns a
    contiguous tensor with the same values."""
    x = paddle.to_tensor(np.arange(24, dtype="float32").reshape(2, 3, 4))
    stock = paddle.transpose(x, [0, 2, 1])
    assert not stock.is_contiguous()
    patches.apply(only=("no_strided_views",))
    assert paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"] is False
    patched = paddle.transpose(x, [0, 2, 1])
    assert patched.is_contiguous()
    np.testing.assert_array_equal(patched.numpy(), stock.numpy())
    patches.restore()
    assert not paddle.transpose(x, [0, 2, 1]).is_contiguous()


# --- the BERT forward's expanded attention mask ------------------------------------------------

def test_expanded_mask_is_made_once_per_score_shape_and_equals_broadcasting():
    from ofa_flexbert.engine.encoder import ExpandedMask

    mask = paddle.to_tensor(np.random.RandomState(0).randn(2, 1, 1, 5).astype("float32"))
    scores = paddle.to_tensor(np.random.RandomState(1).randn(2, 3, 5, 5).astype("float32"))
    expanded = ExpandedMask(mask)
    first = expanded.like(scores)
    assert expanded.like(scores) is first  # every layer with 3 heads shares it
    assert expanded.like(scores[:, :2]).shape == [2, 2, 5, 5]  # a narrower layer gets its own
    np.testing.assert_array_equal((scores + first).numpy(), scores.numpy() + mask.numpy())


def test_eval_forward_does_not_call_dropout(tiny_batch):
    """Paddle's dropout op copies its input even in eval mode; the patched forward skips it there."""
    from paddlenlp.transformers import BertForSequenceClassification

    patches.apply()
    model = BertForSequenceClassification(tiny_bert_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
    ids, types = tiny_batch
    calls = {True: 0, False: 0}

    def count(layer, inputs, output):
        calls[layer.training] += 1

    hooks = [m.register_forward_post_hook(count) for m in model.sublayers() if isinstance(m, paddle.nn.Dropout)]
    for training in (False, True):
        model.train() if training else model.eval()
        model(ids, token_type_ids=types)
    for hook in hooks:
        hook.remove()
    layer = model.bert.encoder.layers[0]
    per_layer = sum(1 for m in (layer.dropout1, layer.dropout, layer.dropout2) if m.p)  # BERT's FFN one has p 0
    assert per_layer == 2
    assert calls[False] == 2  # only BertEmbeddings' and the classifier's (paddlenlp's forwards, not ours)
    assert calls[True] == 1 + per_layer * len(model.bert.encoder.layers) + 1  # embeddings, encoder, classifier


# --- gumbel_softmax_straight_through ------------------------------------------------------------

def gumbel_gradient(seed: int):
    """(one-hot sample, gradient of Σ_k k·y_k w.r.t. the logits) of gumbel_softmax(hard=True)."""
    paddle.seed(seed)
    x = paddle.to_tensor(np.random.RandomState(0).randn(5, 4).astype("float32"), stop_gradient=False)
    y = paddle.nn.functional.gumbel_softmax(x, temperature=0.7, hard=True)
    (y * paddle.arange(4).astype("float32")).sum().backward()
    return y.numpy(), x.grad.numpy()


def test_stock_hard_gumbel_softmax_has_no_gradient_and_the_patched_one_has_the_soft_samples():
    patches.restore()
    stock_y, stock_grad = gumbel_gradient(11)
    assert np.all(stock_grad == 0)  # the defect: nothing trained through hard choices can learn
    patches.apply(only=("gumbel_softmax_straight_through",))
    y, grad = gumbel_gradient(11)
    np.testing.assert_array_equal(y, stock_y)  # the same noise, the same one-hot forward
    paddle.seed(11)  # the soft sample with that noise, and its gradient: what the patched backward must be
    x = paddle.to_tensor(np.random.RandomState(0).randn(5, 4).astype("float32"), stop_gradient=False)
    soft = paddle.nn.functional.gumbel_softmax(x, temperature=0.7, hard=False)
    (soft * paddle.arange(4).astype("float32")).sum().backward()
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert np.abs(grad).max() > 1e-3
    patches.restore()
