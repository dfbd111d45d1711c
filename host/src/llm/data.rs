//! Calibration and evaluation windows drawn from a token stream.
//!
//! The windows are chosen by a small generator of our own (SplitMix64), not libtorch's, so that
//! the same seed gives the same windows on every machine and in every version; the command can
//! save them (`--save-calibration`) to feed exactly the same tokens to another tool.

use crate::error::{PruneError, Result};
use tch::Tensor;

/// The bytes of `text` as token ids (a byte-level vocabulary of 256).
pub fn byte_tokens(text: &[u8]) -> Vec<i64> {
    text.iter().map(|&b| b as i64).collect()
}

/// SplitMix64: the next value of the state.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `samples` windows of `seqlen` consecutive tokens of `tokens`, starting at positions drawn
/// uniformly with `seed`: a `[samples, seqlen]` int64 tensor on the CPU.
pub fn random_windows(tokens: &[i64], samples: i64, seqlen: i64, seed: u64) -> Result<Tensor> {
    if samples <= 0 || seqlen <= 0 || (tokens.len() as i64) < seqlen {
        return Err(PruneError::InvalidArgument {
            method: "calibration".to_owned(),
            argument: "samples".to_owned(),
            reason: format!(
                "{samples} windows of {seqlen} tokens cannot be drawn from {} tokens",
                tokens.len()
            ),
        });
    }
    let starts = tokens.len() as u64 - seqlen as u64 + 1;
    let mut state = seed;
    let mut ids = Vec::with_capacity((samples * seqlen) as usize);
    for _ in 0..samples {
        let start = (next(&mut state) % starts) as usize;
        ids.extend_from_slice(&tokens[start..start + seqlen as usize]);
    }
    Ok(Tensor::from_slice(&ids).view([samples, seqlen]))
}
