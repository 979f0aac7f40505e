//! Cost of an exchange in USD, from a price table in decimal (no binary
//! floating point, no per-request rounding): the built-in table
//! (`prices/prices.toml`) with an operator's file layered over it. A model
//! that is not in the table is *unpriced* (null), never free.

use std::collections::HashMap;

use anyhow::{Context, Result};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::llm::Usage;

const BUILT_IN: &str = include_str!("../../prices/prices.toml");

/// USD per million tokens.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: Decimal,
    pub output: Decimal,
    pub cache_read: Option<Decimal>,
    pub cache_write: Option<Decimal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    models: HashMap<String, Price>,
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    models: HashMap<String, Price>,
}

impl PriceTable {
    /// The built-in table, with `override_file`'s entries replacing or adding models.
    pub fn load(override_file: Option<&std::path::Path>) -> Result<Self> {
        let mut models = toml::from_str::<PriceFile>(BUILT_IN).context("built-in price table")?.models;
        if let Some(path) = override_file {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read price file {}", path.display()))?;
            let extra: PriceFile = toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("price file {}: {}", path.display(), e.message().replace('\n', " ")))?;
            models.extend(extra.models);
        }
        Ok(Self { models })
    }

    /// The price of a model: exact name, else the name without a trailing
    /// date or version (`gpt-4o-2024-08-06`, `claude-sonnet-4-20250514`).
    pub fn price(&self, model: &str) -> Option<&Price> {
        let model = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
        if let Some(p) = self.models.get(&model) {
            return Some(p);
        }
        let mut name = model.as_str();
        while let Some((head, tail)) = name.rsplit_once('-') {
            if !tail.chars().all(|c| c.is_ascii_digit()) && tail != "latest" {
                break;
            }
            name = head;
            if let Some(p) = self.models.get(name) {
                return Some(p);
            }
        }
        None
    }

    /// The cost of `usage` for `model`, `None` when unpriced or when the
    /// provider reported no usage.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<Decimal> {
        let price = self.price(model)?;
        let input = usage.input?;
        // Unknown output is no cost at all, except where output is free (embeddings).
        let output = match usage.output {
            Some(o) => o,
            None if price.output.is_zero() => 0,
            None => return None,
        };
        let read = usage.cache_read.unwrap_or(0);
        let write = usage.cache_creation.unwrap_or(0);
        let uncached = input.saturating_sub(read).saturating_sub(write);
        let per_token =
            |per_million: Decimal, tokens: u64| per_million * Decimal::from(tokens) / Decimal::from(1_000_000);
        Some(
            per_token(price.input, uncached)
                + per_token(price.output, output)
                + per_token(price.cache_read.unwrap_or(price.input), read)
                + per_token(price.cache_write.unwrap_or(price.input), write),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn cache_aware_decimal_cost() {
        let t = PriceTable::load(None).unwrap();
        // 1,000 input of which 600 cached, 200 output on gpt-4o:
        // 400 × 2.50 + 600 × 1.25 + 200 × 10.00, per million.
        let u = Usage { input: Some(1000), output: Some(200), cache_read: Some(600), ..Usage::default() };
        assert_eq!(t.cost("gpt-4o-2024-08-06", &u), Some(Decimal::from_str("0.00375").unwrap()));
        // Anthropic: 10 uncached + 100 read + 5 written (input 115), 7 output.
        let u = Usage {
            input: Some(115),
            output: Some(7),
            cache_read: Some(100),
            cache_creation: Some(5),
            reasoning: None,
        };
        let expected = Decimal::from_str("0.000030").unwrap()
            + Decimal::from_str("0.000030").unwrap()
            + Decimal::from_str("0.00001875").unwrap()
            + Decimal::from_str("0.000105").unwrap();
        assert_eq!(t.cost("claude-sonnet-4-20250514", &u), Some(expected));
        assert_eq!(t.cost("my-private-model", &u), None, "unknown models are unpriced, not free");
        assert_eq!(t.cost("gpt-4o", &Usage::default()), None, "unknown usage has no cost");
    }

    #[test]
    fn an_override_file_replaces_entries_and_bad_files_fail_in_one_line() {
        let dir = std::env::temp_dir().join(format!("ma-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.toml");
        std::fs::write(
            &f,
            "[models.\"gpt-4o\"]\ninput = \"1\"\noutput = \"1\"\n[models.\"mine\"]\ninput = \"2\"\noutput = \"2\"\n",
        )
        .unwrap();
        let t = PriceTable::load(Some(&f)).unwrap();
        assert_eq!(t.price("gpt-4o").unwrap().input, Decimal::ONE);
        assert!(t.price("mine").is_some());
        std::fs::write(&f, "[models.x]\ninput = 1\n").unwrap();
        let e = PriceTable::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("price file") && !e.contains('\n'), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
