//! Dependency groups: which tensors share a channel space and so lose the same channels.

use crate::error::{PruneError, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Tensors that index one channel space: removing channel `c` removes it from all of them.
///
/// For a plain chain (`conv1 -> bn1 -> relu -> conv2`) the group of `conv1`'s channels is the
/// writer `conv1.weight`, the per-channel tensors `conv1.bias`, `bn1.weight`, `bn1.bias`,
/// `bn1.running_mean`, `bn1.running_var`, and the reader `conv2.weight`. In a residual network
/// every layer whose output is added into the same sum is a writer of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Weights whose dimension 0 (output channels or features) is the channel space.
    pub writers: Vec<String>,
    /// One-dimensional tensors with an entry per channel: biases, BatchNorm's weight, bias and
    /// running statistics.
    #[serde(default)]
    pub channelwise: Vec<String>,
    /// Weights whose dimension 1 (input channels or features) reads the channel space.
    #[serde(default)]
    pub readers: Vec<Reader>,
    /// Why the group's channels cannot be removed (they are the model's output, say); `None`
    /// when they can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
}

/// A weight reading a group's channels along its dimension 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reader {
    /// The weight's key.
    pub key: String,
    /// How many input entries each channel spans: 1 for a convolution, `h * w` for a linear
    /// layer after flattening a `[c, h, w]` feature map (channel `c` is entries
    /// `c * factor .. (c + 1) * factor`).
    #[serde(default = "one")]
    pub factor: i64,
}

fn one() -> i64 {
    1
}

impl Reader {
    /// A reader with `factor` input entries per channel.
    pub fn new(key: impl Into<String>, factor: i64) -> Self {
        Self {
            key: key.into(),
            factor,
        }
    }
}

/// The dependency groups of a model: what [`shrink`](super::shrink) removes channels from,
/// found by [`trace`](super::trace) or declared (JSON: `{"groups": [{"writers": [...],
/// "channelwise": [...], "readers": [{"key": ..., "factor": 25}]}]}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependencyGraph {
    /// The groups, one per channel space.
    pub groups: Vec<Group>,
}

/// How a tensor takes part in the groups: its dimension 0 and dimension 1 may each belong to a
/// group (a convolution in the middle of a network is a writer of one and a reader of another).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Role {
    pub(crate) out_group: Option<usize>,
    pub(crate) in_group: Option<(usize, i64)>,
}

impl Group {
    /// Every key of the group, writers first.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        (self.writers.iter().chain(&self.channelwise))
            .map(String::as_str)
            .chain(self.readers.iter().map(|r| r.key.as_str()))
    }
}

impl DependencyGraph {
    /// Reads declared groups from JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|err| PruneError::InvalidGroups(format!("{err}")))
    }

    /// The groups as pretty JSON, the form [`DependencyGraph::from_json`] reads.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("groups serialize")
    }

    /// Checks the groups against the shapes of a state_dict's tensors (`shape_of(key)`, `None`
    /// for a key it lacks) and returns each key's role: every key exists, a group's writers and
    /// per-channel tensors have the same number of channels, each reader's dimension 1 is that
    /// number times its factor, and no dimension belongs to two groups. Errors name the group
    /// and the key.
    pub(crate) fn roles(
        &self,
        shape_of: &dyn Fn(&str) -> Option<Vec<i64>>,
    ) -> Result<HashMap<String, Role>> {
        let mut roles: HashMap<String, Role> = HashMap::new();
        for (index, group) in self.groups.iter().enumerate() {
            let invalid = |reason: String| {
                let first = group.writers.first().map_or("", String::as_str);
                PruneError::InvalidGroups(format!("group {} ('{first}'): {reason}", index + 1))
            };
            let shape =
                |key: &str| shape_of(key).ok_or_else(|| invalid(format!("no tensor '{key}'")));
            let Some(first) = group.writers.first() else {
                return Err(invalid("it has no writers".to_owned()));
            };
            let channels = *shape(first)?.first().unwrap_or(&0);
            if channels == 0 {
                return Err(invalid(format!(
                    "writer '{first}' has no channels (shape {:?}): nothing to remove",
                    shape(first)?
                )));
            }
            for key in &group.writers {
                let dims = shape(key)?;
                if dims.len() < 2 || dims[0] != channels {
                    return Err(invalid(format!(
                        "writer '{key}' has shape {dims:?}; writers need 2+ dimensions and \
                         {channels} channels in dimension 0"
                    )));
                }
                claim_channels(&mut roles, key, index)
                    .map_err(|other| invalid(format!("'{key}' is also in group {other}")))?;
            }
            for key in &group.channelwise {
                let dims = shape(key)?;
                if dims != [channels] {
                    return Err(invalid(format!(
                        "per-channel tensor '{key}' has shape {dims:?}, not [{channels}]"
                    )));
                }
                claim_channels(&mut roles, key, index)
                    .map_err(|other| invalid(format!("'{key}' is also in group {other}")))?;
            }
            for reader in &group.readers {
                let dims = shape(&reader.key)?;
                let needed = channels
                    .checked_mul(reader.factor)
                    .filter(|_| reader.factor > 0);
                if dims.len() < 2 || Some(dims[1]) != needed {
                    return Err(invalid(format!(
                        "reader '{}' has shape {dims:?}; dimension 1 must be {channels} channels \
                         x factor {}",
                        reader.key, reader.factor
                    )));
                }
                let role = roles.entry(reader.key.clone()).or_default();
                if let Some((other, _)) = role.in_group {
                    return Err(invalid(format!(
                        "'{}' is also a reader of group {}",
                        reader.key,
                        other + 1
                    )));
                }
                role.in_group = Some((index, reader.factor));
            }
        }
        Ok(roles)
    }
}

/// Records that `key`'s dimension 0 belongs to group `index`, or gives the group (from 1) that
/// has it already.
fn claim_channels(
    roles: &mut HashMap<String, Role>,
    key: &str,
    index: usize,
) -> std::result::Result<(), usize> {
    let role = roles.entry(key.to_owned()).or_default();
    match role.out_group {
        Some(other) => Err(other + 1),
        None => {
            role.out_group = Some(index);
            Ok(())
        }
    }
}
