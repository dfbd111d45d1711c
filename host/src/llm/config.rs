//! A Llama model's `config.json`, as transformers writes it.
//!
//! Read field by field instead of through one `#[derive(Deserialize)]`, so that a config of
//! another architecture, or one that asks for a feature the decoder does not have (a RoPE scaling
//! of another kind, sliding windows), is refused with a line naming the field instead of being
//! run wrong. transformers 5 keeps the RoPE settings in `rope_parameters`; 4.x used
//! `rope_theta` and `rope_scaling`: both are read.

use crate::error::{PruneError, Result};
use serde_json::{json, Map, Value};
use tch::Kind;

/// How the rotary embedding's frequencies are scaled (`rope_type`).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// The plain frequencies `theta^(-2i/d)`.
    Default,
    /// Every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3's: low frequencies divided by `factor`, high ones kept, a smooth blend between.
    Llama3 {
        /// The divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was first trained at.
        original_max_position_embeddings: f64,
    },
}

/// The architecture of a `LlamaForCausalLM`.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: i64,
    /// Width of the residual stream.
    pub hidden_size: i64,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: i64,
    /// Decoder blocks.
    pub num_hidden_layers: i64,
    /// Query heads.
    pub num_attention_heads: i64,
    /// Key and value heads (grouped-query attention when fewer than the query heads).
    pub num_key_value_heads: i64,
    /// Width of one head.
    pub head_dim: i64,
    /// The MLP's activation: `silu` (the default), `gelu`, `gelu_pytorch_tanh` or `relu`.
    pub hidden_act: String,
    /// The longest context the model was trained for.
    pub max_position_embeddings: i64,
    /// RMSNorm's epsilon.
    pub rms_norm_eps: f64,
    /// The rotary embedding's base wavelength.
    pub rope_theta: f64,
    /// How the rotary frequencies are scaled.
    pub rope_scaling: RopeScaling,
    /// Whether q, k, v and o have biases.
    pub attention_bias: bool,
    /// Whether the MLP's three projections have biases.
    pub mlp_bias: bool,
    /// Whether `lm_head` reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// The dtype the weights were saved in (`dtype`, or transformers 4's `torch_dtype`), if given.
    pub dtype: Option<Kind>,
    /// Beginning- and end-of-sequence token ids, kept for the written config.
    pub bos_token_id: Option<i64>,
    /// See `bos_token_id`.
    pub eos_token_id: Option<Value>,
}

fn invalid(reason: String) -> PruneError {
    PruneError::InvalidCheckpoint(format!("config.json: {reason}"))
}

fn int(map: &Map<String, Value>, key: &str, default: Option<i64>) -> Result<i64> {
    match map.get(key) {
        None | Some(Value::Null) => default.ok_or_else(|| invalid(format!("no '{key}'"))),
        Some(value) => match value.as_i64() {
            Some(n) if n > 0 => Ok(n),
            _ => Err(invalid(format!(
                "'{key}' is {value}, not a positive integer"
            ))),
        },
    }
}

fn float(map: &Map<String, Value>, key: &str, default: Option<f64>) -> Result<f64> {
    match map.get(key) {
        None | Some(Value::Null) => default.ok_or_else(|| invalid(format!("no '{key}'"))),
        Some(value) => match value.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            _ => Err(invalid(format!(
                "'{key}' is {value}, not a positive number"
            ))),
        },
    }
}

fn boolean(map: &Map<String, Value>, key: &str) -> Result<bool> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(value) => Err(invalid(format!("'{key}' is {value}, not true or false"))),
    }
}

/// The tch kind of a transformers dtype name (`"bfloat16"`, `"torch.float16"`...).
pub fn kind_from_name(name: &str) -> Option<Kind> {
    match name.trim_start_matches("torch.") {
        "float32" | "float" | "f32" => Some(Kind::Float),
        "bfloat16" | "bf16" => Some(Kind::BFloat16),
        "float16" | "half" | "f16" => Some(Kind::Half),
        _ => None,
    }
}

/// transformers' name of a floating kind.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        Kind::Double => "float64",
        _ => "float32",
    }
}

impl LlamaConfig {
    /// Reads a parsed `config.json`; refuses other architectures and features this decoder
    /// lacks, naming the field.
    pub fn from_json(value: &Value) -> Result<Self> {
        let map = value
            .as_object()
            .ok_or_else(|| invalid("not a JSON object".to_owned()))?;
        match map.get("model_type").and_then(Value::as_str) {
            Some("llama") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "model_type '{other}': only 'llama' (LlamaForCausalLM) is supported"
                )))
            }
            None => return Err(invalid("no 'model_type' (expected \"llama\")".to_owned())),
        }
        if map
            .get("pretraining_tp")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            != 1
        {
            return Err(invalid(
                "'pretraining_tp' other than 1 is not supported".to_owned(),
            ));
        }
        let hidden_size = int(map, "hidden_size", None)?;
        let num_attention_heads = int(map, "num_attention_heads", None)?;
        let num_key_value_heads = int(map, "num_key_value_heads", Some(num_attention_heads))?;
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(invalid(format!(
                "num_attention_heads ({num_attention_heads}) is not a multiple of \
                 num_key_value_heads ({num_key_value_heads})"
            )));
        }
        let head_dim = match map.get("head_dim") {
            None | Some(Value::Null) => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(invalid(format!(
                        "hidden_size ({hidden_size}) is not a multiple of num_attention_heads \
                         ({num_attention_heads}) and there is no 'head_dim'"
                    )));
                }
                hidden_size / num_attention_heads
            }
            Some(_) => int(map, "head_dim", None)?,
        };
        if head_dim % 2 != 0 {
            return Err(invalid(format!(
                "head_dim {head_dim} is odd: rotary embeddings need pairs"
            )));
        }
        let hidden_act = match map.get("hidden_act") {
            None | Some(Value::Null) => "silu".to_owned(),
            Some(Value::String(act)) => act.clone(),
            Some(other) => return Err(invalid(format!("'hidden_act' is {other}, not a name"))),
        };
        if !["silu", "gelu", "gelu_pytorch_tanh", "relu"].contains(&hidden_act.as_str()) {
            return Err(invalid(format!(
                "hidden_act '{hidden_act}' is not supported (silu, gelu, gelu_pytorch_tanh, relu)"
            )));
        }
        let (rope_theta, rope_scaling) = rope(map)?;
        let dtype = match map.get("dtype").or_else(|| map.get("torch_dtype")) {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(
                kind_from_name(name)
                    .ok_or_else(|| invalid(format!("dtype '{name}' is not a floating dtype")))?,
            ),
            Some(other) => return Err(invalid(format!("'dtype' is {other}, not a name"))),
        };
        Ok(Self {
            vocab_size: int(map, "vocab_size", None)?,
            hidden_size,
            intermediate_size: int(map, "intermediate_size", None)?,
            num_hidden_layers: int(map, "num_hidden_layers", None)?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            hidden_act,
            max_position_embeddings: int(map, "max_position_embeddings", Some(2048))?,
            rms_norm_eps: float(map, "rms_norm_eps", Some(1e-6))?,
            rope_theta,
            rope_scaling,
            attention_bias: boolean(map, "attention_bias")?,
            mlp_bias: boolean(map, "mlp_bias")?,
            tie_word_embeddings: boolean(map, "tie_word_embeddings")?,
            dtype,
            bos_token_id: map.get("bos_token_id").and_then(Value::as_i64),
            eos_token_id: map.get("eos_token_id").cloned().filter(|v| !v.is_null()),
        })
    }

    /// The `config.json` transformers reads back as this architecture (transformers 5's
    /// `rope_parameters`, and 4.x's `rope_theta` beside it).
    pub fn to_json(&self) -> Value {
        let mut rope = json!({"rope_theta": self.rope_theta});
        match &self.rope_scaling {
            RopeScaling::Default => rope["rope_type"] = json!("default"),
            RopeScaling::Linear { factor } => {
                rope["rope_type"] = json!("linear");
                rope["factor"] = json!(factor);
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                rope["rope_type"] = json!("llama3");
                rope["factor"] = json!(factor);
                rope["low_freq_factor"] = json!(low_freq_factor);
                rope["high_freq_factor"] = json!(high_freq_factor);
                rope["original_max_position_embeddings"] = json!(original_max_position_embeddings);
            }
        }
        let mut config = json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": self.hidden_act,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope,
            "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias,
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_cache": false,
        });
        if let Some(kind) = self.dtype {
            config["dtype"] = json!(kind_name(kind));
        }
        if let Some(bos) = self.bos_token_id {
            config["bos_token_id"] = json!(bos);
        }
        if let Some(eos) = &self.eos_token_id {
            config["eos_token_id"] = eos.clone();
        }
        config
    }

    /// A small byte-level model: vocabulary of the 256 byte values, untied, default RoPE.
    pub fn byte_level(
        hidden: i64,
        layers: i64,
        heads: i64,
        intermediate: i64,
        context: i64,
    ) -> Self {
        Self {
            vocab_size: 256,
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: heads,
            head_dim: hidden / heads,
            hidden_act: "silu".to_owned(),
            max_position_embeddings: context,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::Default,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
            dtype: Some(Kind::Float),
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    /// The dotted paths of every Linear weight in the decoder blocks, block by block, in the
    /// order a block's forward pass uses them.
    pub fn block_linear_weights(&self, block: i64) -> Vec<String> {
        LINEARS
            .iter()
            .map(|name| format!("model.layers.{block}.{name}.weight"))
            .collect()
    }
}

/// The Linear layers of a decoder block, relative to it.
pub(crate) const LINEARS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// `rope_theta` and the scaling, from transformers 5's `rope_parameters` or 4.x's
/// `rope_theta` + `rope_scaling`.
fn rope(map: &Map<String, Value>) -> Result<(f64, RopeScaling)> {
    let parameters = match map.get("rope_parameters") {
        Some(Value::Object(p)) => Some(p),
        None | Some(Value::Null) => None,
        Some(other) => {
            return Err(invalid(format!(
                "'rope_parameters' is {other}, not an object"
            )))
        }
    };
    let scaling = match map.get("rope_scaling") {
        Some(Value::Object(s)) => Some(s),
        None | Some(Value::Null) => None,
        Some(other) => return Err(invalid(format!("'rope_scaling' is {other}, not an object"))),
    };
    let theta = match parameters.and_then(|p| p.get("rope_theta")) {
        Some(_) => float(parameters.expect("checked"), "rope_theta", None)?,
        None => float(map, "rope_theta", Some(10_000.0))?,
    };
    let Some(params) = parameters.or(scaling) else {
        return Ok((theta, RopeScaling::Default));
    };
    let kind = params
        .get("rope_type")
        .or_else(|| params.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if params
        .get("partial_rotary_factor")
        .and_then(Value::as_f64)
        .is_some_and(|f| f != 1.0)
    {
        return Err(invalid(
            "'partial_rotary_factor' other than 1 is not supported".to_owned(),
        ));
    }
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: float(params, "factor", None)?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: float(params, "factor", None)?,
            low_freq_factor: float(params, "low_freq_factor", None)?,
            high_freq_factor: float(params, "high_freq_factor", None)?,
            original_max_position_embeddings: float(
                params,
                "original_max_position_embeddings",
                None,
            )?,
        },
        other => {
            return Err(invalid(format!(
                "rope_type '{other}' is not supported (default, linear, llama3)"
            )))
        }
    };
    Ok((theta, scaling))
}
