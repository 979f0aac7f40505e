//! Cost of an exchange in USD, from a price table in decimal (no binary
//! floating point, no per-request rounding): the built-in table
//! (`prices/prices.toml`) with an operator's file layered over it — in this
//! project's TOML format, or in the community-maintained LiteLLM price-map
//! JSON format, so prices can be updated without a new release. A model
//! that is not in the table is *unpriced* (null), never free, and is logged
//! once by name.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

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

/// Unpriced model names logged so far, at most this many (then one line
/// says that further ones are not logged).
const UNPRICED_LOGGED_MAX: usize = 1000;

#[derive(Debug, Clone)]
pub struct PriceTable {
    models: HashMap<String, Price>,
    /// Unpriced models already logged (shared by clones).
    unpriced_logged: Arc<Mutex<HashSet<String>>>,
}

impl PriceTable {
    /// The built-in table, with `override_file`'s entries replacing or adding
    /// models. A file whose first non-blank character is `{` is read as a
    /// LiteLLM price map, anything else as this project's TOML.
    pub fn load(override_file: Option<&std::path::Path>) -> Result<Self> {
        let mut models = toml::from_str::<PriceFile>(BUILT_IN).context("built-in price table")?.models;
        if let Some(path) = override_file {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read price file {}", path.display()))?;
            let extra = if text.trim_start().starts_with('{') {
                litellm::parse(&text)
                    .map_err(|e| anyhow::anyhow!("price file {} (LiteLLM JSON): {e}", path.display()))?
            } else {
                toml::from_str::<PriceFile>(&text)
                    .map_err(|e| anyhow::anyhow!("price file {}: {}", path.display(), e.message().replace('\n', " ")))?
                    .models
            };
            models.extend(extra);
        }
        Ok(Self { models, unpriced_logged: Arc::default() })
    }

    /// The price of a model: exact name, else its provider-neutral name
    /// (`price_name`, `dashed_claude`), else that without a trailing date
    /// or version (`gpt-4o-2024-08-06`, `claude-sonnet-4-20250514`).
    pub fn price(&self, model: &str) -> Option<&Price> {
        let model = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
        if let Some(p) = self.models.get(&model) {
            return Some(p);
        }
        let model = dashed_claude(price_name(&model));
        if let Some(p) = self.models.get(model.as_ref()) {
            return Some(p);
        }
        let mut name = model.as_ref();
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
        let Some(price) = self.price(model) else {
            if usage.input.is_some() || usage.output.is_some() {
                self.log_unpriced(model);
            }
            return None;
        };
        price.cost(usage)
    }
}

impl Price {
    /// The cost of `usage` at this price, `None` when the provider reported
    /// no usage (`PriceTable::cost` once the model's price is found).
    pub fn cost(&self, usage: &Usage) -> Option<Decimal> {
        let price = self;
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

/// A provider-specific model id without what only says where it runs:
/// Vertex AI's `@version` (`claude-sonnet-4@20250514`), Bedrock's region
/// and vendor prefixes and version suffix (`us.anthropic.claude-sonnet-4-20250514-v1:0`,
/// `amazon.nova-pro-v1:0`). Prefixes are letters (and `-`) before a dot, so
/// `gpt-4.1` and `gemini-1.5-pro` are left alone.
fn price_name(model: &str) -> &str {
    let mut m = model.split('@').next().unwrap_or(model);
    for _ in 0..2 {
        if let Some((prefix, rest)) = m.split_once('.')
            && !prefix.is_empty()
            && !rest.is_empty()
            && prefix.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        {
            m = rest;
        }
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((head, tail)) = m.rsplit_once(':')
        && digits(tail)
    {
        m = head;
    }
    if let Some((head, tail)) = m.rsplit_once("-v")
        && digits(tail)
    {
        m = head;
    }
    m
}

/// A Claude id with its version dotted, as OpenRouter writes them
/// (`claude-3.5-sonnet`, `claude-sonnet-4.5`), spelled with Anthropic's
/// dashes (`claude-3-5-sonnet`, `claude-sonnet-4-5`). Only a dot between
/// two digits changes; other names are returned as they are.
fn dashed_claude(model: &str) -> Cow<'_, str> {
    if !model.starts_with("claude-") || !model.contains('.') {
        return Cow::Borrowed(model);
    }
    // The bytes next to a dot: an ASCII digit byte is a whole character
    // in UTF-8 (other characters' bytes are all 0x80 and above).
    let bytes = model.as_bytes();
    let digit = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_digit);
    let dashed = model
        .char_indices()
        .map(|(i, c)| if c == '.' && i > 0 && digit(i - 1) && digit(i + 1) { '-' } else { c })
        .collect();
    Cow::Owned(dashed)
}

impl PriceTable {
    /// Logs an unpriced model the first time it is seen (bounded); true
    /// when this call wrote the line naming it.
    fn log_unpriced(&self, model: &str) -> bool {
        let Ok(mut logged) = self.unpriced_logged.lock() else { return false };
        if logged.len() > UNPRICED_LOGGED_MAX || logged.contains(model) {
            return false;
        }
        if logged.len() == UNPRICED_LOGGED_MAX {
            log::warn!("more than {UNPRICED_LOGGED_MAX} unpriced models: further ones are not logged");
            logged.insert(String::new());
            return false;
        }
        let shown: String = model.chars().filter(|c| !c.is_control()).take(128).collect();
        log::warn!("model `{shown}` has no price: its exchanges have cost_usd null (add it with --prices FILE)");
        logged.insert(model.to_string());
        true
    }
}

/// The LiteLLM price map (`model_prices_and_context_window.json`): an
/// object of model name -> entry, with prices in USD per single token
/// (`input_cost_per_token`, `output_cost_per_token`,
/// `cache_read_input_token_cost`, `cache_creation_input_token_cost`).
/// Entries without input and output prices (images, audio, the
/// `sample_spec` example) are skipped; other fields are ignored. A price is
/// taken from the number's shortest decimal form (`3e-06` is exactly 3 per
/// million), then kept in decimal.
mod litellm {
    use std::collections::HashMap;

    use rust_decimal::Decimal;
    use serde_json::Value;

    use super::Price;

    pub fn parse(text: &str) -> Result<HashMap<String, Price>, String> {
        let map: serde_json::Map<String, Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut models = HashMap::new();
        let mut short_names = Vec::new();
        for (name, entry) in &map {
            let per_million = |field: &str| -> Result<Option<Decimal>, String> {
                match entry.get(field) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::Number(n)) => decimal(&n.to_string())
                        .map(|d| Some(d * Decimal::from(1_000_000)))
                        .ok_or_else(|| format!("{name}: {field} {n} is not a price")),
                    Some(other) => Err(format!("{name}: {field} must be a number, not {other}")),
                }
            };
            let (Some(input), Some(output)) =
                (per_million("input_cost_per_token")?, per_million("output_cost_per_token")?)
            else {
                continue;
            };
            let price = Price {
                input: input.normalize(),
                output: output.normalize(),
                cache_read: per_million("cache_read_input_token_cost")?.map(|d| d.normalize()),
                cache_write: per_million("cache_creation_input_token_cost")?.map(|d| d.normalize()),
            };
            let name = name.to_ascii_lowercase();
            // `openai/gpt-4o` also prices `gpt-4o`, unless that has its own entry.
            if let Some((_, short)) = name.rsplit_once('/') {
                short_names.push((short.to_string(), price.clone()));
            }
            models.insert(name, price);
        }
        for (short, price) in short_names {
            models.entry(short).or_insert(price);
        }
        Ok(models)
    }

    /// A JSON number (`2.5e-06`, `0.000003`, `1`) as an exact decimal.
    fn decimal(text: &str) -> Option<Decimal> {
        if text.contains(['e', 'E']) { Decimal::from_scientific(text).ok() } else { text.parse().ok() }
            .filter(|d: &Decimal| !d.is_sign_negative())
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

    #[test]
    fn a_litellm_price_map_overrides_built_in_prices_exactly() {
        let dir = std::env::temp_dir().join(format!("ma-litellm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("model_prices_and_context_window.json");
        std::fs::write(
            &f,
            r#"{
              "sample_spec": {"max_tokens": "LEGACY", "input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "mode": "chat"},
              "gpt-4o": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.2e-05,
                         "cache_read_input_token_cost": 1.5e-06, "litellm_provider": "openai", "mode": "chat"},
              "mistral/mistral-large-latest": {"input_cost_per_token": 0.000002, "output_cost_per_token": 0.000006},
              "openrouter/anthropic/claude-3.5-sonnet": {"input_cost_per_token": 6e-06, "output_cost_per_token": 3e-05},
              "dall-e-3": {"output_cost_per_image": 0.04},
              "claude-x": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                           "cache_read_input_token_cost": 3e-07, "cache_creation_input_token_cost": 3.75e-06}
            }"#,
        )
        .unwrap();
        let t = PriceTable::load(Some(&f)).unwrap();
        let gpt = t.price("gpt-4o-2024-08-06").unwrap();
        assert_eq!((gpt.input, gpt.output), (Decimal::from(3), Decimal::from(12)), "the map replaces the built-in");
        assert_eq!(gpt.cache_read, Some(Decimal::from_str("1.5").unwrap()));
        // 1,000 input of which 600 cached, 200 output: 400 × 3 + 600 × 1.5 + 200 × 12, per million.
        let u = Usage { input: Some(1000), output: Some(200), cache_read: Some(600), ..Usage::default() };
        assert_eq!(t.cost("gpt-4o", &u), Some(Decimal::from_str("0.0045").unwrap()));
        assert_eq!(t.price("mistral-large-latest").unwrap().output, Decimal::from(6), "provider prefix dropped");
        assert!(t.price("dall-e-3").is_none(), "entries without token prices are skipped");
        let dotted = t.price("anthropic/claude-3.5-sonnet").unwrap();
        assert_eq!(dotted.input, Decimal::from(6), "the map's dotted OpenRouter name is matched as it is");
        assert_eq!(
            t.price("claude-3-5-sonnet-20241022").unwrap().input,
            Decimal::from(3),
            "the dashed id keeps its own"
        );
        assert_eq!(t.price("claude-x").unwrap().cache_write, Some(Decimal::from_str("3.75").unwrap()));
        assert!(t.price("gemini-2.0-flash").is_some(), "built-in models not in the map stay");
        std::fs::write(&f, r#"{"m": {"input_cost_per_token": "cheap", "output_cost_per_token": 1}}"#).unwrap();
        let e = PriceTable::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("LiteLLM") && e.contains("must be a number") && !e.contains('\n'), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn provider_specific_ids_are_priced_under_the_model_name() {
        let t = PriceTable::load(None).unwrap();
        let same = |id: &str, name: &str| assert_eq!(t.price(id), t.price(name), "{id}");
        same("anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku");
        same("us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4");
        same("claude-sonnet-4@20250514", "claude-sonnet-4");
        same("amazon.nova-pro-v1:0", "nova-pro");
        same("projects/p/locations/l/publishers/google/models/gemini-2.5-flash", "gemini-2.5-flash");
        assert_eq!(price_name("gpt-4.1-mini"), "gpt-4.1-mini");
        assert_eq!(price_name("llama3.2:3b"), "llama3.2:3b", "an Ollama tag is not a version");
        // Every provider's current lineup has prices.
        for model in [
            "gpt-5",
            "gpt-5-mini",
            "claude-sonnet-4-5-20250929",
            "claude-haiku-4-5",
            "claude-opus-4-1",
            "gemini-2.5-pro",
            "mistral-large-latest",
            "mistral-small-latest",
            "command-a-03-2025",
            "command-r-plus-08-2024",
            "deepseek-chat",
            "deepseek-reasoner",
            "amazon.nova-lite-v1:0",
            "grok-4",
            "llama-3.3-70b-versatile",
            "gpt-5.4-mini",
            "gpt-5.5-2026-04-23",
            "gpt-5.2-pro-2025-12-11",
            "claude-sonnet-4-6",
            "claude-sonnet-5",
            "gemini-3.1-pro-preview",
            "gemini-3-flash-preview",
            "us.amazon.nova-2-lite-v1:0",
        ] {
            assert!(t.price(model).is_some(), "{model}");
        }
    }

    /// Opus 4.5 and later cost a third of Opus 4: their dated ids must not
    /// fall back to `claude-opus-4` by dropping the trailing version.
    #[test]
    fn later_opus_models_are_not_priced_as_opus_4() {
        let t = PriceTable::load(None).unwrap();
        let usage = Usage { input: Some(1_000_000), output: Some(1_000_000), ..Usage::default() };
        let cost = |model: &str| t.cost(model, &usage).map(|c| c.normalize().to_string());
        assert_eq!(cost("claude-opus-4-5-20251101").as_deref(), Some("30"), "$5 + $25");
        assert_eq!(cost("claude-opus-4-6").as_deref(), Some("30"));
        assert_eq!(cost("claude-opus-4-20250514").as_deref(), Some("90"), "$15 + $75");
        assert_eq!(cost("claude-opus-4-1-20250805").as_deref(), Some("90"));
    }

    /// The late-2026 lineups have prices of their own: a point release
    /// (`gpt-5.4`) is not `gpt-5`, and Sonnet 5 is not unpriced.
    #[test]
    fn late_2026_models_have_their_own_prices() {
        let t = PriceTable::load(None).unwrap();
        let usage = Usage { input: Some(1_000_000), output: Some(1_000_000), ..Usage::default() };
        let cost = |model: &str| t.cost(model, &usage).map(|c| c.normalize().to_string());
        assert_eq!(cost("gpt-5.4-2026-03-05").as_deref(), Some("17.5"), "$2.50 + $15");
        assert_eq!(cost("gpt-5.4-nano").as_deref(), Some("1.45"), "$0.20 + $1.25");
        assert_eq!(cost("claude-sonnet-5").as_deref(), Some("12"), "$2 + $10");
        assert_eq!(cost("gemini-3.5-flash").as_deref(), Some("10.5"), "$1.50 + $9");
        assert_eq!(cost("gpt-5").as_deref(), Some("11.25"), "$1.25 + $10, unchanged");
    }

    /// Mistral's `-latest` aliases name newer, cheaper (Large 3, Small 3.2)
    /// or dearer (Medium 3.5) models than the dated ids still served: each
    /// id is priced as the model it names (LiteLLM map, 2026-12).
    #[test]
    fn mistral_ids_are_priced_as_the_model_they_name() {
        let t = PriceTable::load(None).unwrap();
        let usage = Usage { input: Some(1_000_000), output: Some(1_000_000), ..Usage::default() };
        let cost = |model: &str| t.cost(model, &usage).map(|c| c.normalize().to_string());
        for (model, expected) in [
            ("mistral-large-latest", "2"),
            ("mistral-large-2512", "2"),
            ("mistral-large-2411", "8"),
            ("mistral.mistral-large-2402-v1:0", "16"),
            ("mistral.mistral-small-2402-v1:0", "4"),
            ("mistral-medium-latest", "9"),
            ("mistral-medium-3-5", "9"),
            ("mistral-medium-2508", "2.4"),
            ("mistral-medium-3-1-2508", "2.4"),
            ("mistral-small-latest", "0.24"),
            ("magistral-medium-1-2-2509", "7"),
            ("devstral-2512", "2.4"),
            ("ministral-3-8b-2512", "0.3"),
            ("ministral-8b-2410", "0.2"),
            ("open-mistral-nemo-2407", "0.3"),
            ("codestral-2508", "1.2"),
        ] {
            assert_eq!(cost(model).as_deref(), Some(expected), "{model}");
        }
    }

    /// Meta Llama and Amazon Titan Text served by Bedrock are priced at
    /// Bedrock's us-east-1 on-demand list prices, under their full ids
    /// (region and vendor prefixes, `-vN:M`); the e2e tests' Bedrock models
    /// among them. Perplexity's Sonar is priced by its tokens.
    #[test]
    fn bedrock_llama_titan_and_perplexity_sonar_ids_are_priced() {
        let t = PriceTable::load(None).unwrap();
        let usage = Usage { input: Some(1_000_000), output: Some(1_000_000), ..Usage::default() };
        let cost = |model: &str| t.cost(model, &usage).map(|c| c.normalize().to_string());
        for (model, expected) in [
            ("meta.llama3-8b-instruct-v1:0", "0.9"),
            ("meta.llama3-1-70b-instruct-v1:0", "1.44"),
            ("meta.llama3-3-70b-instruct-v1:0", "1.44"),
            ("us.meta.llama3-2-3b-instruct-v1:0", "0.3"),
            ("amazon.titan-text-express-v1", "0.8"),
            ("amazon.titan-text-lite-v1", "0.35"),
            ("amazon.titan-text-premier-v1:0", "2"),
            ("sonar", "2"),
            ("sonar-pro", "18"),
        ] {
            assert_eq!(cost(model).as_deref(), Some(expected), "{model}");
        }
    }

    /// Older OpenAI models still in use, GroqCloud's lineup, Together AI's
    /// Llama 3.3 Turbo and OpenRouter's dotted Claude ids are priced at
    /// their own list prices: `gpt-4o-2024-05-13` is not `gpt-4o`, and
    /// `anthropic/claude-sonnet-4.5` costs what `claude-sonnet-4-5` costs.
    #[test]
    fn older_openai_groq_together_and_openrouter_ids_are_priced() {
        let t = PriceTable::load(None).unwrap();
        let usage = Usage { input: Some(1_000_000), output: Some(1_000_000), ..Usage::default() };
        let cost = |model: &str, usage: &Usage| t.cost(model, usage).map(|c| c.normalize().to_string());
        for (model, expected) in [
            ("gpt-4o-2024-05-13", "20"),
            ("gpt-4o-2024-08-06", "12.5"),
            ("gpt-4-turbo", "40"),
            ("gpt-4-turbo-2024-04-09", "40"),
            ("gpt-4-turbo-preview", "40"),
            ("gpt-4-0125-preview", "40"),
            ("gpt-4-1106-preview", "40"),
            ("gpt-4", "90"),
            ("gpt-4-0613", "90"),
            ("gpt-4-32k", "180"),
            ("gpt-4-32k-0613", "180"),
            ("gpt-3.5-turbo", "2"),
            ("gpt-3.5-turbo-0125", "2"),
            ("gpt-3.5-turbo-1106", "3"),
            ("gpt-3.5-turbo-instruct", "3.5"),
            ("o1", "75"),
            ("o1-2024-12-17", "75"),
            ("o1-preview-2024-09-12", "75"),
            ("o1-mini-2024-09-12", "5.5"),
            ("o1-pro-2025-03-19", "750"),
            ("o3-pro-2025-06-10", "100"),
            ("llama-3.1-8b-instant", "0.13"),
            ("llama-3.3-70b-versatile", "1.38"),
            ("openai/gpt-oss-120b", "0.75"),
            ("openai/gpt-oss-20b", "0.375"),
            ("qwen/qwen3-32b", "0.88"),
            ("meta-llama/llama-4-scout-17b-16e-instruct", "0.45"),
            ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "2.08"),
            ("anthropic/claude-3.5-sonnet", "18"),
            ("anthropic/claude-3.5-haiku", "4.8"),
            ("anthropic/claude-3.7-sonnet", "18"),
            ("anthropic/claude-sonnet-4.5", "18"),
            ("anthropic/claude-haiku-4.5", "6"),
            ("anthropic/claude-opus-4.1", "90"),
            ("anthropic/claude-opus-4.5", "30"),
        ] {
            assert_eq!(cost(model, &usage).as_deref(), Some(expected), "{model}");
        }
        // o1's cached input: 600k uncached × $15 + 400k cached × $7.50 + 100k output × $60.
        let cached =
            Usage { input: Some(1_000_000), output: Some(100_000), cache_read: Some(400_000), ..Usage::default() };
        assert_eq!(cost("o1-2024-12-17", &cached).as_deref(), Some("18"));
        // Groq's GPT-OSS cached input at half the input price: 600k × $0.15 + 400k × $0.075 + 100k × $0.60.
        assert_eq!(cost("openai/gpt-oss-120b", &cached).as_deref(), Some("0.18"));
        // A dotted OpenRouter id costs exactly what Anthropic's dashed id costs, cache included.
        let claude = Usage {
            input: Some(115),
            output: Some(7),
            cache_read: Some(100),
            cache_creation: Some(5),
            reasoning: None,
        };
        for (dotted, dashed) in [
            ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5-20250929"),
            ("anthropic/claude-3.5-sonnet", "claude-3-5-sonnet-20241022"),
            ("anthropic/claude-opus-4.1", "claude-opus-4-1-20250805"),
        ] {
            assert!(t.cost(dashed, &claude).is_some(), "{dashed}");
            assert_eq!(t.cost(dotted, &claude), t.cost(dashed, &claude), "{dotted}");
        }
        assert_eq!(dashed_claude("claude-3.5-sonnet"), "claude-3-5-sonnet");
        assert_eq!(dashed_claude("gpt-4.1"), "gpt-4.1", "only Claude ids change");
        assert_eq!(dashed_claude("claude-x.y"), "claude-x.y", "only a dot between digits");
        for (model, dashed) in [
            ("claude-3.5.1", "claude-3-5-1"),
            ("claude-.5", "claude-.5"),
            ("claude-4.", "claude-4."),
            ("claude-4..5", "claude-4..5"),
            ("claude-é.5", "claude-é.5"),
            ("claude-3.é", "claude-3.é"),
            ("claude-é3.5é", "claude-é3-5é"),
            ("claude-٣.٥", "claude-٣.٥"),
        ] {
            assert_eq!(dashed_claude(model), dashed, "{model}");
        }
    }

    proptest::proptest! {
        /// Any text after `claude-` (non-ASCII, dots at either end): no
        /// panic, and exactly the dots between two ASCII digits become dashes.
        #[test]
        fn dashed_claude_turns_only_dots_between_digits(tail in "[0-9.a-zé٣-]{0,16}|\\PC{0,16}") {
            let model = format!("claude-{tail}");
            let chars: Vec<char> = model.chars().collect();
            let digit = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
            let expected: String = chars
                .iter()
                .enumerate()
                .map(|(i, &c)| if c == '.' && i > 0 && digit(i - 1) && digit(i + 1) { '-' } else { c })
                .collect();
            proptest::prop_assert_eq!(dashed_claude(&model), expected);
        }
    }

    #[test]
    fn an_unpriced_model_is_logged_once_and_only_when_it_had_usage() {
        let t = PriceTable::load(None).unwrap();
        let usage = Usage { input: Some(10), output: Some(2), ..Usage::default() };
        assert_eq!(t.cost("my-private-model", &usage), None);
        assert!(!t.log_unpriced("my-private-model"), "cost() logged it already");
        assert_eq!(t.cost("my-private-model", &usage), None);
        assert!(!t.clone().log_unpriced("my-private-model"), "clones share what was logged");
        assert_eq!(t.cost("no-usage-model", &Usage::default()), None);
        assert!(t.log_unpriced("no-usage-model"), "no usage, no line: not logged before");
        assert!(t.log_unpriced("another-model"), "each name once");
    }

    #[test]
    fn gemini_1_5_models_are_priced() {
        let t = PriceTable::load(None).unwrap();
        for model in ["gemini-1.5-flash", "gemini-1.5-flash-002", "gemini-1.5-flash-8b", "gemini-1.5-pro-002"] {
            assert!(t.price(model).is_some(), "{model}");
        }
    }
}
