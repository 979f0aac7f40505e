//! What the audit task adds to a finished record before it leaves the audit
//! path: the configured name of its upstream provider slot, the application
//! id, and the cost from the price table. Then the record is printed as a
//! JSON line (when asked) and handed to the record bus.

use std::{
    io::Write,
    sync::{Arc, atomic::Ordering},
};

use super::{cost::PriceTable, pipeline::RequestRecord};
use crate::agent_stats::AgentStats;

pub struct Enrichment {
    /// Label of each provider slot.
    pub provider_names: Vec<(u32, String)>,
    /// Put on records whose request named no application.
    pub application_id: Option<String>,
    pub prices: PriceTable,
    /// Print every record on standard output.
    pub print_requests: bool,
    /// Where finished records go: the record bus (`crate::records`), to
    /// storage, exporters and the live stream. Named by its type, not the
    /// bus module's alias: that module sits above the audit parsers.
    pub records_out: tokio::sync::broadcast::Sender<Arc<RequestRecord>>,
    /// Counts the records with usage but no price.
    pub stats: Arc<AgentStats>,
    /// The last model priced and its price: a proxy's records name the
    /// same few models, and the table's lookup lower-cases and hashes the
    /// name, tries its variants (measured: 2% of the audit thread).
    pub last_price: Option<(String, super::cost::Price)>,
}

impl Enrichment {
    /// The configured name of a provider slot (`--provider NAME=...`).
    pub fn provider_name(&self, slot: u8) -> Option<String> {
        self.provider_names.iter().find(|(s, _)| *s == u32::from(slot)).map(|(_, n)| n.clone())
    }

    /// Fills in the application id and the cost of finished records, prints
    /// them when asked, and sends them on the record bus.
    pub fn emit(&mut self, records: Vec<RequestRecord>) {
        if records.is_empty() {
            return;
        }
        let mut out = self.print_requests.then(|| std::io::stdout().lock());
        for mut record in records {
            if record.application_id.is_none() {
                record.application_id.clone_from(&self.application_id);
            }
            let model = record.model_returned.as_deref().or(record.model_requested.as_deref());
            record.cost_usd = model.and_then(|m| self.cost(m, &record.tokens)).map(|c| c.normalize());
            if record.cost_usd.is_none() && (record.tokens.input.is_some() || record.tokens.output.is_some()) {
                self.stats.audit_unpriced_records.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(out) = out.as_mut()
                && let Ok(line) = serde_json::to_string(&record)
            {
                let _ = writeln!(out, "{line}");
            }
            // No receiver is not an error: nothing consumes records yet.
            let _ = self.records_out.send(Arc::new(record));
        }
        if let Some(mut out) = out {
            let _ = out.flush();
        }
    }

    /// `PriceTable::cost`, the last model's price remembered (an unpriced
    /// model is looked up each time, so that it is logged as before).
    fn cost(&mut self, model: &str, usage: &super::llm::Usage) -> Option<rust_decimal::Decimal> {
        if let Some((last, price)) = &self.last_price
            && last == model
        {
            return price.cost(usage);
        }
        match self.prices.price(model) {
            Some(price) => {
                let cost = price.cost(usage);
                self.last_price = Some((model.to_string(), price.clone()));
                cost
            }
            None => self.prices.cost(model, usage),
        }
    }
}
