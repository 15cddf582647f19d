//! `p2ps node`'s dictionary limits: how many keys and bytes the node keeps in all and of one
//! writer (its quotas), and the largest value, as flags and as the `[dict]` table of the
//! `--config` file (keys named as the flags without their `dict-` prefix, in snake_case:
//! `max_keys_per_writer = 100`). Unset values keep the dictionary's defaults
//! ([`p2ps::dict::Quotas`], [`p2ps::dict::DictConfig`]). A write that would overrun a quota of
//! one of the key's replicas is refused by that replica, naming the quota.

use anyhow::{bail, Result};
use p2ps::dict::{DictConfig, Quotas};
use serde::Deserialize;

/// The largest value `--dict-max-value-bytes` allows: a message's limit (1 MiB, the frame
/// every dictionary message travels in) less 64 KiB for the key's name, the signatures and
/// the headers around the value.
pub(super) const MAX_VALUE_CEILING: usize = crate::payload::MAX_PAYLOAD_BYTES - (64 << 10);

/// The dictionary's limits on this node; flags override the file's `[dict]` table.
#[derive(Debug, Default, Clone, PartialEq, Eq, clap::Args, Deserialize)]
#[command(next_help_heading = "Dictionary quotas")]
#[serde(deny_unknown_fields)]
pub(super) struct DictLimitArgs {
    /// Most keys the node keeps, of all writers together [default: 1000000].
    #[arg(long, value_name = "N")]
    #[serde(rename = "max_keys")]
    pub dict_max_keys: Option<usize>,
    /// Most bytes of records the node keeps, of all writers together [default: 1 GiB].
    #[arg(long, value_name = "BYTES")]
    #[serde(rename = "max_bytes")]
    pub dict_max_bytes: Option<usize>,
    /// Most keys the node keeps of one writer (a node id) [default: 10000].
    #[arg(long, value_name = "N")]
    #[serde(rename = "max_keys_per_writer")]
    pub dict_max_keys_per_writer: Option<usize>,
    /// Most bytes of records the node keeps of one writer [default: 64 MiB].
    #[arg(long, value_name = "BYTES")]
    #[serde(rename = "max_bytes_per_writer")]
    pub dict_max_bytes_per_writer: Option<usize>,
    /// Largest value the node takes, as a key's replica or from its own clients, up to
    /// 983040 (960 KiB); every node of a network should have the same [default: 65536].
    #[arg(long, value_name = "BYTES")]
    #[serde(rename = "max_value_bytes")]
    pub dict_max_value_bytes: Option<usize>,
}

impl DictLimitArgs {
    /// `self`'s values, falling back to `other`'s.
    pub(super) fn or(self, other: DictLimitArgs) -> DictLimitArgs {
        DictLimitArgs {
            dict_max_keys: self.dict_max_keys.or(other.dict_max_keys),
            dict_max_bytes: self.dict_max_bytes.or(other.dict_max_bytes),
            dict_max_keys_per_writer: self
                .dict_max_keys_per_writer
                .or(other.dict_max_keys_per_writer),
            dict_max_bytes_per_writer: self
                .dict_max_bytes_per_writer
                .or(other.dict_max_bytes_per_writer),
            dict_max_value_bytes: self.dict_max_value_bytes.or(other.dict_max_value_bytes),
        }
    }

    /// The dictionary's settings: the defaults with these limits set.
    pub(super) fn config(&self) -> Result<DictConfig> {
        let mut cfg = DictConfig::default();
        cfg.quotas = self.quotas()?;
        match self.dict_max_value_bytes {
            Some(0) => bail!("--dict-max-value-bytes must be at least 1"),
            Some(v) if v > MAX_VALUE_CEILING => bail!(
                "--dict-max-value-bytes {v} is over {MAX_VALUE_CEILING} (960 KiB): a value must \
                 fit, with its key and signatures, in one message of at most {} bytes",
                crate::payload::MAX_PAYLOAD_BYTES
            ),
            Some(v) => cfg.max_value = v,
            None => {}
        }
        Ok(cfg)
    }

    /// The quotas: the defaults with what is given set; a quota of 0 is refused (the node
    /// could keep nothing).
    pub(super) fn quotas(&self) -> Result<Quotas> {
        let mut q = Quotas::default();
        for (value, to, name) in [
            (self.dict_max_keys, &mut q.keys, "dict-max-keys"),
            (self.dict_max_bytes, &mut q.bytes, "dict-max-bytes"),
            (
                self.dict_max_keys_per_writer,
                &mut q.keys_per_writer,
                "dict-max-keys-per-writer",
            ),
            (
                self.dict_max_bytes_per_writer,
                &mut q.bytes_per_writer,
                "dict-max-bytes-per-writer",
            ),
        ] {
            match value {
                Some(0) => bail!("--{name} must be at least 1 (0 would let the node keep nothing)"),
                Some(v) => *to = v,
                None => {}
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_unset_values_keep_the_defaults() {
        // Unknown keys, and the flags' own names, are refused in the table.
        assert!(toml::from_str::<DictLimitArgs>("keys = 1\n").is_err());
        assert!(toml::from_str::<DictLimitArgs>("dict_max_keys = 1\n").is_err());
        let file: DictLimitArgs =
            toml::from_str("max_keys = 100\nmax_keys_per_writer = 5\n").unwrap();
        let flags = DictLimitArgs {
            dict_max_keys_per_writer: Some(7),
            dict_max_bytes_per_writer: Some(4096),
            ..DictLimitArgs::default()
        };
        let q = flags.or(file).quotas().unwrap();
        let d = Quotas::default();
        assert_eq!(q.keys, 100);
        assert_eq!(q.bytes, d.bytes);
        assert_eq!(q.keys_per_writer, 7);
        assert_eq!(q.bytes_per_writer, 4096);
        assert_eq!(DictLimitArgs::default().quotas().unwrap(), d);
        let zero = DictLimitArgs {
            dict_max_bytes: Some(0),
            ..DictLimitArgs::default()
        };
        let e = zero.quotas().unwrap_err().to_string();
        assert!(e.contains("--dict-max-bytes must be at least 1"), "{e}");
    }

    #[test]
    fn the_largest_value_fits_in_a_message() {
        let file: DictLimitArgs = toml::from_str("max_value_bytes = 1000\n").unwrap();
        assert_eq!(file.config().unwrap().max_value, 1000);
        assert_eq!(
            DictLimitArgs::default().config().unwrap(),
            DictConfig::default()
        );
        let at = |v| DictLimitArgs {
            dict_max_value_bytes: Some(v),
            ..DictLimitArgs::default()
        };
        assert_eq!(
            at(MAX_VALUE_CEILING).config().unwrap().max_value,
            MAX_VALUE_CEILING
        );
        let e = at(MAX_VALUE_CEILING + 1).config().unwrap_err().to_string();
        assert!(e.contains("over 983040"), "{e}");
        assert!(at(0).config().is_err());
    }
}
