//! `LlamaForCausalLM` on tch, with Hugging Face's parameter names.
//!
//! Every variable lives in the caller's `nn::VarStore` under the name transformers gives it
//! (`model.layers.0.self_attn.q_proj.weight`...), so a [`VarStorePruner`](crate::VarStorePruner)
//! prunes the model by those names and a checkpoint written from the store is a Hugging Face
//! checkpoint. The forward pass is transformers' (RMSNorm in f32, rotary embeddings computed in
//! f32 and cast, attention through libtorch's `scaled_dot_product_attention` with a causal mask,
//! SwiGLU), so that the logits equal transformers' for the same weights; the differential test
//! checks that within 1e-4 in f32.
//!
//! A decoder block can run alone ([`Llama::block`]): the one-shot driver feeds each block the
//! outputs of the blocks before it, and a [`Calibration`] passed to [`DecoderBlock::forward`]
//! records the inputs of the block's Linear layers.

use super::config::{LlamaConfig, RopeScaling, LINEARS};
use crate::calibration::Calibration;
use crate::error::Result;
use tch::{nn, Device, Kind, Tensor};

/// A Linear layer's parameters and the dotted path of its weight.
#[derive(Debug)]
pub struct Linear {
    /// `model.layers.0.self_attn.q_proj.weight`.
    pub weight_path: String,
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`, when the layer has one.
    pub bias: Option<Tensor>,
}

impl Linear {
    fn new(path: &nn::Path, in_dim: i64, out_dim: i64, bias: bool, std: f64) -> Self {
        let weight = path.var("weight", &[out_dim, in_dim], init(std));
        let bias = bias.then(|| path.var("bias", &[out_dim], nn::Init::Const(0.0)));
        Self {
            weight_path: format!("{}.weight", path.components().collect::<Vec<_>>().join(".")),
            weight,
            bias,
        }
    }

    /// `x @ weight^T + bias`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// RMSNorm as transformers computes it: the mean square in f32, the weight applied after the
/// cast back.
#[derive(Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(path: &nn::Path, dim: i64, eps: f64) -> Self {
        Self {
            weight: path.var("weight", &[dim], nn::Init::Const(1.0)),
            eps,
        }
    }

    /// Normalizes the last dimension.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x32 = x.to_kind(Kind::Float);
        let variance = x32.square().mean_dim(-1, true, Kind::Float);
        let normed = (x32 * (variance + self.eps).rsqrt()).to_kind(kind);
        &self.weight * normed
    }
}

/// The rotary embedding's `cos` and `sin` for a sequence length, `[seq, head_dim]` in the
/// model's dtype.
#[derive(Debug)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Rotates `x` (`[batch, heads, seq, head_dim]`).
    fn apply(&self, x: &Tensor) -> Tensor {
        let half = x.size()[3] / 2;
        let (x1, x2) = (x.narrow(3, 0, half), x.narrow(3, half, half));
        let rotated = Tensor::cat(&[x2.neg(), x1], 3);
        x * &self.cos + rotated * &self.sin
    }
}

/// Multi-head attention with grouped-query heads.
#[derive(Debug)]
pub struct Attention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub o_proj: Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn forward(&self, x: &Tensor, rope: &Rope, calibration: Option<&Calibration>) -> Tensor {
        let (batch, seq, _) = x.size3().expect("hidden states are [batch, seq, hidden]");
        if let Some(c) = calibration {
            c.observe(
                &[
                    &self.q_proj.weight_path,
                    &self.k_proj.weight_path,
                    &self.v_proj.weight_path,
                ],
                x,
            );
        }
        let shape =
            |t: Tensor, heads: i64| t.view([batch, seq, heads, self.head_dim]).transpose(1, 2);
        let q = rope.apply(&shape(self.q_proj.forward(x), self.heads));
        let k = rope.apply(&shape(self.k_proj.forward(x), self.kv_heads));
        let v = shape(self.v_proj.forward(x), self.kv_heads);
        let groups = self.heads / self.kv_heads;
        let repeat = |t: Tensor| match groups {
            1 => t,
            _ => t
                .unsqueeze(2)
                .expand([batch, self.kv_heads, groups, seq, self.head_dim], false)
                .reshape([batch, self.heads, seq, self.head_dim]),
        };
        let scale = (self.head_dim as f64).powf(-0.5);
        let out = Tensor::scaled_dot_product_attention::<Tensor>(
            &q,
            &repeat(k),
            &repeat(v),
            None,
            0.0,
            true,
            scale,
            false,
        );
        let out = out
            .transpose(1, 2)
            .reshape([batch, seq, self.heads * self.head_dim]);
        if let Some(c) = calibration {
            c.observe(&[&self.o_proj.weight_path], &out);
        }
        self.o_proj.forward(&out)
    }
}

/// The gated MLP: `down(act(gate(x)) * up(x))`.
#[derive(Debug)]
pub struct Mlp {
    /// Gate projection.
    pub gate_proj: Linear,
    /// Up projection.
    pub up_proj: Linear,
    /// Down projection.
    pub down_proj: Linear,
    act: String,
}

impl Mlp {
    /// Records the inputs of the three projections without computing the down projection
    /// (what a calibration pass needs of the MLP: its output is thrown away).
    fn observe(&self, x: &Tensor, calibration: &Calibration) {
        calibration.observe(&[&self.gate_proj.weight_path, &self.up_proj.weight_path], x);
        let hidden = self.activation(self.gate_proj.forward(x)) * self.up_proj.forward(x);
        calibration.observe(&[&self.down_proj.weight_path], &hidden);
    }

    fn activation(&self, gate: Tensor) -> Tensor {
        match self.act.as_str() {
            "gelu" => gate.gelu("none"),
            "gelu_pytorch_tanh" => gate.gelu("tanh"),
            "relu" => gate.relu(),
            _ => gate.silu(),
        }
    }

    fn forward(&self, x: &Tensor, calibration: Option<&Calibration>) -> Tensor {
        if let Some(c) = calibration {
            c.observe(&[&self.gate_proj.weight_path, &self.up_proj.weight_path], x);
        }
        let hidden = self.activation(self.gate_proj.forward(x)) * self.up_proj.forward(x);
        if let Some(c) = calibration {
            c.observe(&[&self.down_proj.weight_path], &hidden);
        }
        self.down_proj.forward(&hidden)
    }
}

/// One decoder block: attention and MLP, each behind an RMSNorm and a residual connection.
#[derive(Debug)]
pub struct DecoderBlock {
    input_layernorm: RmsNorm,
    /// The attention.
    pub self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    /// The MLP.
    pub mlp: Mlp,
}

impl DecoderBlock {
    /// The block's output for hidden states `x` (`[batch, seq, hidden]`); with `calibration`, the
    /// inputs of its Linear layers are recorded.
    pub fn forward(&self, x: &Tensor, rope: &Rope, calibration: Option<&Calibration>) -> Tensor {
        let h = x + self
            .self_attn
            .forward(&self.input_layernorm.forward(x), rope, calibration);
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h), calibration);
        h + mlp
    }

    /// Records the inputs of the block's seven Linear layers for hidden states `x`, without the
    /// block's output (the MLP's down projection is not computed): a calibration pass.
    pub fn observe(&self, x: &Tensor, rope: &Rope, calibration: &Calibration) {
        let h =
            x + self
                .self_attn
                .forward(&self.input_layernorm.forward(x), rope, Some(calibration));
        self.mlp
            .observe(&self.post_attention_layernorm.forward(&h), calibration);
    }

    /// The block's Linear layers: q, k, v, o, gate, up, down (the order of [`block_linear_names`]).
    pub fn linears(&self) -> [&Linear; 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        [
            &a.q_proj,
            &a.k_proj,
            &a.v_proj,
            &a.o_proj,
            &m.gate_proj,
            &m.up_proj,
            &m.down_proj,
        ]
    }
}

/// A `LlamaForCausalLM` whose variables live in an `nn::VarStore` under Hugging Face's names.
///
/// ```
/// use tch::{nn, Device, Kind, Tensor};
/// use tchprune::llm::{Llama, LlamaConfig};
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = Llama::new(&vs.root(), &LlamaConfig::byte_level(32, 2, 4, 64, 16))?;
/// let ids = Tensor::randint(256, [2, 16], (Kind::Int64, Device::Cpu));
/// assert_eq!(model.forward(&ids).size(), [2, 16, 256]);
/// assert!(vs.variables().contains_key("model.layers.1.mlp.down_proj.weight"));
/// # Ok::<(), tchprune::PruneError>(())
/// ```
#[derive(Debug)]
pub struct Llama {
    config: LlamaConfig,
    embed_tokens: Tensor,
    blocks: Vec<DecoderBlock>,
    norm: RmsNorm,
    lm_head: Tensor,
    inv_freq: Vec<f64>,
}

impl Llama {
    /// Creates the model's variables under `root` (weights drawn as transformers initializes
    /// them: normal with std 0.02, norms at 1, biases at 0), in f32.
    pub fn new(root: &nn::Path, config: &LlamaConfig) -> Result<Self> {
        Self::with_std(root, config, 0.02)
    }

    /// Like [`Llama::new`], the weights drawn with standard deviation `std` (0: zeros, for
    /// weights about to be loaded).
    pub(crate) fn with_std(root: &nn::Path, config: &LlamaConfig, std: f64) -> Result<Self> {
        let model = root / "model";
        let (hidden, c) = (config.hidden_size, config);
        let embed_tokens =
            (&model / "embed_tokens").var("weight", &[c.vocab_size, hidden], init(std));
        let blocks = (0..c.num_hidden_layers)
            .map(|i| {
                let layer = &model / "layers" / i;
                let attn = &layer / "self_attn";
                let mlp = &layer / "mlp";
                let (q, kv) = (
                    c.num_attention_heads * c.head_dim,
                    c.num_key_value_heads * c.head_dim,
                );
                let ab = c.attention_bias;
                DecoderBlock {
                    input_layernorm: RmsNorm::new(
                        &(&layer / "input_layernorm"),
                        hidden,
                        c.rms_norm_eps,
                    ),
                    self_attn: Attention {
                        q_proj: Linear::new(&(&attn / "q_proj"), hidden, q, ab, std),
                        k_proj: Linear::new(&(&attn / "k_proj"), hidden, kv, ab, std),
                        v_proj: Linear::new(&(&attn / "v_proj"), hidden, kv, ab, std),
                        o_proj: Linear::new(&(&attn / "o_proj"), q, hidden, ab, std),
                        heads: c.num_attention_heads,
                        kv_heads: c.num_key_value_heads,
                        head_dim: c.head_dim,
                    },
                    post_attention_layernorm: RmsNorm::new(
                        &(&layer / "post_attention_layernorm"),
                        hidden,
                        c.rms_norm_eps,
                    ),
                    mlp: Mlp {
                        gate_proj: Linear::new(
                            &(&mlp / "gate_proj"),
                            hidden,
                            c.intermediate_size,
                            c.mlp_bias,
                            std,
                        ),
                        up_proj: Linear::new(
                            &(&mlp / "up_proj"),
                            hidden,
                            c.intermediate_size,
                            c.mlp_bias,
                            std,
                        ),
                        down_proj: Linear::new(
                            &(&mlp / "down_proj"),
                            c.intermediate_size,
                            hidden,
                            c.mlp_bias,
                            std,
                        ),
                        act: c.hidden_act.clone(),
                    },
                }
            })
            .collect();
        let norm = RmsNorm::new(&(&model / "norm"), hidden, c.rms_norm_eps);
        let lm_head = match c.tie_word_embeddings {
            true => embed_tokens.shallow_clone(),
            false => (root / "lm_head").var("weight", &[c.vocab_size, hidden], init(std)),
        };
        Ok(Self {
            config: config.clone(),
            embed_tokens,
            blocks,
            norm,
            lm_head,
            inv_freq: inverse_frequencies(config),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The device of the weights.
    pub fn device(&self) -> Device {
        self.embed_tokens.device()
    }

    /// The decoder blocks.
    pub fn blocks(&self) -> &[DecoderBlock] {
        &self.blocks
    }

    /// Decoder block `i`.
    pub fn block(&self, i: usize) -> &DecoderBlock {
        &self.blocks[i]
    }

    /// The hidden states a block sees first: the token embeddings of `input_ids` (`[batch, seq]`).
    pub fn embed(&self, input_ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false)
    }

    /// The rotary embedding for sequences of `seq` tokens from position 0, in `kind` on `device`.
    pub fn rope(&self, seq: i64, kind: Kind, device: Device) -> Rope {
        let inv_freq: Vec<f32> = self.inv_freq.iter().map(|&f| f as f32).collect();
        let inv_freq = Tensor::from_slice(&inv_freq).to_device(device);
        let positions = Tensor::arange(seq, (Kind::Float, device));
        let freqs = positions.unsqueeze(1) * inv_freq.unsqueeze(0);
        let emb = Tensor::cat(&[&freqs, &freqs], 1);
        Rope {
            cos: emb.cos().to_kind(kind),
            sin: emb.sin().to_kind(kind),
        }
    }

    /// The logits for hidden states that went through every block: the final norm and `lm_head`.
    pub fn head(&self, hidden: &Tensor) -> Tensor {
        self.norm
            .forward(hidden)
            .linear::<Tensor>(&self.lm_head, None)
    }

    /// The logits `[batch, seq, vocab]` for `input_ids` (`[batch, seq]`).
    pub fn forward(&self, input_ids: &Tensor) -> Tensor {
        let mut hidden = self.embed(input_ids);
        let seq = input_ids.size()[1];
        let rope = self.rope(seq, hidden.kind(), hidden.device());
        for block in &self.blocks {
            hidden = block.forward(&hidden, &rope, None);
        }
        self.head(&hidden)
    }

    /// The mean next-token cross-entropy over `input_ids` (`[batch, seq]`), each position
    /// predicting the next, in f32.
    pub fn loss(&self, input_ids: &Tensor) -> Tensor {
        let seq = input_ids.size()[1];
        let logits = self.forward(&input_ids.narrow(1, 0, seq - 1));
        let targets = input_ids.narrow(1, 1, seq - 1);
        logits
            .to_kind(Kind::Float)
            .reshape([-1, self.config.vocab_size])
            .cross_entropy_for_logits(&targets.reshape([-1]))
    }

    /// The dotted paths of every Linear weight in the decoder blocks, block after block.
    pub fn linear_weight_paths(&self) -> Vec<String> {
        (0..self.config.num_hidden_layers)
            .flat_map(|i| self.config.block_linear_weights(i))
            .collect()
    }
}

/// Normal weights of standard deviation `std`, or zeros (cheap) for weights about to be loaded.
fn init(std: f64) -> nn::Init {
    match std {
        0.0 => nn::Init::Const(0.0),
        std => nn::Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    }
}

/// The names of a block's Linear layers relative to it.
pub fn block_linear_names() -> &'static [&'static str] {
    &LINEARS
}

/// `1 / theta^(2i/d)` for each pair of a head's dimensions, scaled as the config says (computed
/// in f64, rounded to f32 when used: transformers computes them in f32 from the same values).
fn inverse_frequencies(config: &LlamaConfig) -> Vec<f64> {
    let dim = config.head_dim;
    let base: Vec<f64> = (0..dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / dim as f32;
            1.0 / (config.rope_theta as f32).powf(exponent) as f64
        })
        .collect();
    match config.rope_scaling {
        RopeScaling::Default => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}
